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
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from pathlib import Path

LOCK_NAME = ".gradatlas.lock"


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
            # stale: move it aside under a unique name (only one taker succeeds), then take the lock
            aside = folder / f".{LOCK_NAME}.{uuid.uuid4().hex}.stale"
            try:
                os.rename(path, aside)
            except FileNotFoundError:
                continue
            if _read(aside) != holder:  # someone took it over between our read and the rename: give it back
                try:
                    os.link(aside, path)
                except FileExistsError:
                    pass
            aside.unlink(missing_ok=True)
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
