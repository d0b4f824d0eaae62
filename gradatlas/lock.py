"""The results folder's lock: one GradAtlas run at a time per `results:` folder.

Snakemake locks its working folder (`.snakemake/locks`), not the outputs: two working folders (two
checkouts, or `--directory`) whose configs name the same `results:` folder would run the same
trainings at once and overwrite each other's files. `workflow/rules/lock.smk` takes this lock in
`onstart` (so only a real run takes it: not `-n`, `--summary`, `--unlock`, nor the job steps
snakemake spawns, which run with `--no-hooks`) and releases it in `onsuccess`/`onerror`.

The lock is the file `<results>/.gradatlas.lock`: JSON with the holder's host, pid, process start
time, working folder and when it was taken. It is created with a hard link from a complete
temporary file, so it appears atomically and whole, also on NFS. A lock whose holder is a dead
process on this host (or a live pid that is another process: its start time differs) is stale and
taken over; a lock held from another host cannot be checked from here and is never taken over.

A pack's lease (`Lease`): one training process at a time per pack, also across SLURM jobs. A main
`snakemake` that is lost (its login node rebooted, or it was killed) leaves its submitted jobs
running; its rerun submits the unfinished packs again, and two jobs would train one pack into the
same folder. The training process holds `<packs>/<pack>.lease` (beside the pack's folder, which the
engine removes when it finishes), created like the lock: JSON with host, pid, process start time,
SLURM job id and a token. A thread refreshes its mtime (the heartbeat) every `HEARTBEAT_S`. Another
process waits for it up to `GRADATLAS_LEASE_WAIT_S` seconds (default `WAIT_S`), then fails naming
the holder. A lease is stale, and taken over, when its holder is a dead process on this host, or
when its heartbeat has not moved for `STALE_S` seconds while this process watched it (the holder's
node is gone; watching, not comparing clocks, since the mtime comes from the file server's clock).
A holder that finds its lease taken over exits at once, so that one process writes the pack.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path

LOCK_NAME = ".gradatlas.lock"
HEARTBEAT_S = 15  # the lease's refresh interval
STALE_S = 90  # a heartbeat that has not moved for this long is a lost holder's (6 missed beats)
WAIT_S = 150  # how long a second process waits for a lease: long enough to see it go stale

log = logging.getLogger("gradatlas.lock")


class ResultsLocked(RuntimeError):
    """Another run holds the results folder; the message names it and says what to do."""


def _start_time(pid: int) -> str | None:
    """The process' start time in clock ticks since boot (Linux), to tell a pid reused by another
    process from the holder; None where /proc is not available."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def me(workdir=None) -> dict:
    pid = os.getpid()
    return {
        "host": socket.gethostname(),
        "pid": pid,
        "start_time": _start_time(pid),
        "workdir": str(Path(workdir or os.getcwd()).resolve()),
        "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def _same_process(a: dict, b: dict) -> bool:
    return (a.get("host"), a.get("pid"), a.get("start_time")) == (b.get("host"), b.get("pid"), b.get("start_time"))


def stale(holder: dict) -> bool:
    """True when the holder is certainly gone: same host, and its pid is dead or now another process."""
    if holder.get("host") != socket.gethostname():
        return False
    pid = holder.get("pid")
    if not isinstance(pid, int) or not _alive(pid):
        return True
    recorded, now = holder.get("start_time"), _start_time(pid)
    return recorded is not None and now is not None and recorded != now


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # unreadable or not ours: treated as held by an unknown holder


def _remove_stale(path: Path, holder: dict) -> None:
    """Remove the stale lock file `path` of `holder`, unless someone took it over meanwhile: moved
    aside under a unique name first (only one taker succeeds), then given back if it changed."""
    aside = path.with_name(f".{path.name}.{uuid.uuid4().hex}.stale")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    if _read(aside) != holder:
        try:
            os.link(aside, path)
        except FileExistsError:
            pass
    aside.unlink(missing_ok=True)


def describe(holder: dict) -> str:
    return (
        f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, working folder "
        f"{holder.get('workdir', '?')}, since {holder.get('since', '?')}"
    )


def acquire(results, workdir=None) -> Path:
    """Take `<results>/.gradatlas.lock` for this process or raise ResultsLocked naming the holder."""
    folder = Path(results)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    mine = me(workdir)
    staging = folder / f".{LOCK_NAME}.{uuid.uuid4().hex}.tmp"
    staging.write_text(json.dumps(mine, indent=1) + "\n")
    try:
        for _ in range(5):
            try:
                os.link(staging, path)  # atomic, fails if the lock exists
                return path
            except FileExistsError:
                pass
            holder = _read(path)
            if holder is None:
                continue  # released meanwhile: try again
            if _same_process(holder, mine):
                return path  # ours already (onstart ran twice in this process)
            if not stale(holder):
                raise ResultsLocked(
                    f"results folder {folder.resolve()} is in use by another GradAtlas run: "
                    f"{describe(holder) if holder else 'an unreadable lock'} (lock file {path.resolve()}). "
                    f"Nothing was run or changed. Wait for that run to end, or give this study another "
                    f"`results:` folder. If that run is gone (it crashed, or its machine did), delete {path.resolve()}."
                )
            _remove_stale(path, holder)
        raise ResultsLocked(f"could not take the lock {path.resolve()}: it keeps changing hands")
    finally:
        staging.unlink(missing_ok=True)


def release(results) -> bool:
    """Remove the lock if this process holds it; returns whether it did. Another holder's lock stays."""
    path = Path(results) / LOCK_NAME
    holder = _read(path)
    if holder and _same_process(holder, me()):
        path.unlink(missing_ok=True)
        return True
    return False


class PackLeased(RuntimeError):
    """Another training process holds the pack; the message names it."""


class Lease:
    """The lease of the pack whose folder is `pack_dir`, held while training it: `with Lease(pack_dir):`."""

    def __init__(self, pack_dir, wait_s: float | None = None):
        pack_dir = Path(pack_dir)
        self.path = pack_dir.parent / f"{pack_dir.name}.lease"
        self.wait_s = float(os.environ.get("GRADATLAS_LEASE_WAIT_S", WAIT_S)) if wait_s is None else wait_s
        self.mine = me() | {"slurm_job_id": os.environ.get("SLURM_JOB_ID"), "token": uuid.uuid4().hex}
        self._stop = threading.Event()

    def __enter__(self) -> "Lease":
        self._acquire()
        self._beat = threading.Thread(target=self._heartbeat, name="pack-lease", daemon=True)
        self._beat.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._beat.join()
        if (_read(self.path) or {}).get("token") == self.mine["token"]:
            self.path.unlink(missing_ok=True)

    def _acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staging = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.tmp")
        staging.write_text(json.dumps(self.mine, indent=1) + "\n")
        deadline = time.monotonic() + self.wait_s
        beat, beat_seen = None, time.monotonic()  # the holder's heartbeat, and since when it stands still
        waiting = False
        try:
            while True:
                try:
                    os.link(staging, self.path)  # atomic, fails if the lease exists
                    return
                except FileExistsError:
                    pass
                holder = _read(self.path)
                try:
                    mtime = self.path.stat().st_mtime_ns
                except FileNotFoundError:
                    holder = None
                if holder is None:
                    continue  # released meanwhile: try again
                now = time.monotonic()
                if mtime != beat:
                    beat, beat_seen = mtime, now
                if stale(holder) or now - beat_seen > STALE_S:
                    log.warning("taking over the stale lease %s of %s", self.path, lease_holder(holder))
                    _remove_stale(self.path, holder)
                    continue
                if now >= deadline:
                    raise PackLeased(
                        f"pack {self.path.name.removesuffix('.lease')} is being trained by {lease_holder(holder)} "
                        f"(lease {self.path.resolve()}, last heartbeat {time.time() - mtime / 1e9:.0f} s ago); "
                        f"waited {self.wait_s:.0f} s. This job changed nothing. That process goes on training "
                        f"the pack; if it should not, cancel it (scancel <job id>) and run again."
                    )
                if not waiting:
                    log.warning(
                        "the pack is held by %s (lease %s): waiting up to %.0f s",
                        lease_holder(holder),
                        self.path,
                        self.wait_s,
                    )
                    waiting = True
                time.sleep(min(1.0, deadline - now))
        finally:
            staging.unlink(missing_ok=True)

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                holder = json.loads(self.path.read_text())
                if holder.get("token") == self.mine["token"]:
                    os.utime(self.path)
                    continue
            except FileNotFoundError:
                holder = {}
            except (OSError, ValueError):
                continue  # unreadable right now (a network filesystem's hiccup): try at the next beat
            # taken over as stale (this process stood still past STALE_S): another process trains
            # the pack now, so this one stops at once, before it writes anything more
            log.error("lost the pack lease %s to %s; stopping", self.path, lease_holder(holder))
            logging.shutdown()
            os._exit(75)


def lease_holder(holder: dict) -> str:
    job = holder.get("slurm_job_id")
    return f"{'SLURM job ' + job + ', ' if job else ''}{describe(holder)}"
