"""The results folder's lock (gradatlas/lock.py, workflow/rules/lock.smk): the library, and two
working folders sharing one `results:` folder through the real snakemake CLI."""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import SNAKEMAKE, make_workspace, run_snakemake, write_config
from gradatlas import config as gaconfig, lock

FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_lock(folder: Path, **holder) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / lock.LOCK_NAME
    path.write_text(
        json.dumps({"host": socket.gethostname(), "workdir": "/somewhere/else", "since": "earlier"} | holder)
    )
    return path


# --- the library ------------------------------------------------------------------------------------
def test_acquire_and_release(tmp_path):
    path = lock.acquire(tmp_path / "results", workdir=tmp_path)
    holder = json.loads(path.read_text())
    assert holder["pid"] == os.getpid() and holder["workdir"] == str(tmp_path.resolve())
    assert lock.acquire(tmp_path / "results") == path  # the same process again: still ours
    assert lock.release(tmp_path / "results") and not path.exists()
    assert not lock.release(tmp_path / "results")
    assert sorted(os.listdir(tmp_path / "results")) == []  # no temporary files left


def test_a_live_holder_is_named_and_kept(tmp_path):
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        path = write_lock(tmp_path, pid=sleeper.pid, start_time=lock._start_time(sleeper.pid), workdir="/w/other")
        before = path.read_text()
        with pytest.raises(lock.ResultsLocked) as error:
            lock.acquire(tmp_path)
        message = str(error.value)
        assert f"pid {sleeper.pid}" in message and "/w/other" in message and str(path) in message
        assert not lock.release(tmp_path)  # not ours: release leaves it
        assert path.read_text() == before and os.listdir(tmp_path) == [lock.LOCK_NAME]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_dead_holder_on_this_host_is_taken_over(tmp_path):
    write_lock(tmp_path, pid=dead_pid())
    path = lock.acquire(tmp_path)
    assert json.loads(path.read_text())["pid"] == os.getpid()
    assert os.listdir(tmp_path) == [lock.LOCK_NAME]


def test_a_reused_pid_is_not_the_holder(tmp_path):
    """The holder's pid now belongs to another process (its start time differs): stale."""
    write_lock(tmp_path, pid=os.getppid(), start_time="1")
    assert json.loads(lock.acquire(tmp_path).read_text())["pid"] == os.getpid()


def test_a_holder_on_another_host_is_never_taken_over(tmp_path):
    path = write_lock(tmp_path, host="node-7.cluster", pid=dead_pid())
    with pytest.raises(lock.ResultsLocked, match="on host node-7.cluster") as error:
        lock.acquire(tmp_path)
    assert f"delete {path}" in str(error.value)


# --- two working folders, one results folder, the real snakemake ----------------------------------------
@pytest.fixture
def slow_mnist_server(tmp_path, mnist_dir):
    """MNIST over local HTTP that holds every response until `release` is set, so a run's
    prepare_data (and the run's lock) lasts as long as the test wants."""
    served = tmp_path / "served"
    served.mkdir()
    for name in FILES:
        shutil.copy(mnist_dir / f"{name}.gz", served / f"{name}.gz")
    release = threading.Event()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            release.wait(50)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/", release
    release.set()
    server.shutdown()
    server.server_close()


def tiny(results: Path, url: str) -> dict:
    return {
        "study": "lock",
        "results": str(results),
        "data": {"source": "download", "url": url, "validation_size": 500, "train_subset": 3000},
        "model": {"depth": 2, "width": 32},
        "train": {"epochs": 1},
        "grid": {"initializer": ["he_normal"], "activation": ["relu"], "optimizer": ["sgd"], "regularizer": ["none"]},
        "seeds": [0],
    }


@pytest.mark.integration
def test_second_working_folder_on_the_same_results_stops_at_once(tmp_path, slow_mnist_server):
    url, release = slow_mnist_server
    shared = tmp_path / "shared-results"
    a, b = make_workspace(tmp_path / "a"), make_workspace(tmp_path / "b")
    target = f"resources/prepared/{gaconfig.data_key({'source': 'download', 'path': 'unused'})}"
    stale = write_lock(shared, pid=dead_pid(), workdir="/crashed/run")  # a run that died: taken over

    config_a = write_config(a, tiny(shared, url))
    env = os.environ | {"TF_CPP_MIN_LOG_LEVEL": "2", "no_proxy": "127.0.0.1"}
    first = subprocess.Popen(
        [str(SNAKEMAKE), target, "--cores", "1", "--configfile", str(config_a)],
        cwd=a,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            holder = lock._read(stale)
            if holder and holder.get("workdir") == str(a.resolve()):
                break
            assert first.poll() is None, first.stdout.read()
            time.sleep(0.5)
        else:
            pytest.fail("the first run never took the lock")
        assert holder["pid"] == first.pid

        # the second working folder: refused before any job, naming the holder; nothing touched
        config_b = write_config(b, tiny(shared, url))
        before = sorted(p.relative_to(shared) for p in shared.rglob("*"))
        started = time.time()
        proc = run_snakemake(b, target, "--cores", "1", "--configfile", str(config_b), check=False, timeout=300)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0, out[-3000:]
        assert "is in use by another GradAtlas run" in out and f"pid {first.pid}" in out and str(a.resolve()) in out, (
            out[-3000:]
        )
        assert time.time() - started < 120
        assert not (b / "resources").exists(), "the refused run prepared data"
        assert sorted(p.relative_to(shared) for p in shared.rglob("*")) == before
        assert lock._read(stale)["pid"] == first.pid

        # a dry run and --summary neither need nor take the lock
        assert "This was a dry-run" in run_snakemake(b, target, "-n", "--configfile", str(config_b)).stdout
        run_snakemake(b, target, "--summary", "--configfile", str(config_b))
    finally:
        release.set()
        out, _ = first.communicate(timeout=300)
    assert first.returncode == 0, out[-3000:]
    assert not stale.exists(), "the lock outlived the run"
    assert (a / target / "x_train.npy").exists()

    # with nobody holding it, the second folder runs; a dry run leaves no lock behind
    run_snakemake(b, target, "-n", "--configfile", str(config_b))
    assert not stale.exists()
    run_snakemake(b, target, "--cores", "1", "--configfile", str(config_b))
    assert (b / target / "x_train.npy").exists() and not stale.exists()


# --- a pack's lease: one training process per pack ------------------------------------------------------
def write_lease(pack_dir: Path, **holder) -> Path:
    path = pack_dir.parent / f"{pack_dir.name}.lease"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {"host": socket.gethostname(), "workdir": "/w/other", "since": "earlier", "token": "theirs"} | holder
        )
    )
    return path


def test_a_lease_is_held_while_training_and_released(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "123")
    pack = tmp_path / "packs" / "p0"
    with lock.Lease(pack) as lease:
        holder = json.loads(lease.path.read_text())
        assert lease.path == tmp_path / "packs" / "p0.lease"  # beside the pack's folder, which the engine removes
        assert holder["pid"] == os.getpid() and holder["slurm_job_id"] == "123"
    assert os.listdir(tmp_path / "packs") == []  # released, no temporary files


def test_a_live_holder_makes_the_second_wait_then_fail_naming_it(tmp_path):
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        path = write_lease(
            tmp_path / "p0", pid=sleeper.pid, start_time=lock._start_time(sleeper.pid), slurm_job_id="4242"
        )
        started = time.monotonic()
        with pytest.raises(lock.PackLeased) as error:
            lock.Lease(tmp_path / "p0", wait_s=2).__enter__()
        assert time.monotonic() - started >= 2
        message = str(error.value)
        assert f"SLURM job 4242, pid {sleeper.pid} on host {socket.gethostname()}" in message and str(path) in message
        assert json.loads(path.read_text())["token"] == "theirs"
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_dead_holder_on_this_host_is_taken_over_at_once(tmp_path):
    write_lease(tmp_path / "p0", pid=dead_pid())
    started = time.monotonic()
    with lock.Lease(tmp_path / "p0", wait_s=60) as lease:
        assert json.loads(lease.path.read_text())["pid"] == os.getpid()
    assert time.monotonic() - started < 5


def test_another_hosts_holder_is_taken_over_only_once_its_heartbeat_stops(tmp_path, monkeypatch):
    """A holder on another host cannot be checked from here: its heartbeat (mtime) says whether it lives."""
    monkeypatch.setattr(lock, "STALE_S", 2)
    path = write_lease(tmp_path / "p0", host="node-7.cluster", pid=1, slurm_job_id="77")
    beating = threading.Event()

    def beat():
        while not beating.wait(0.3):
            os.utime(path)

    threading.Thread(target=beat, daemon=True).start()
    try:
        with pytest.raises(lock.PackLeased, match="SLURM job 77, pid 1 on host node-7.cluster"):
            lock.Lease(tmp_path / "p0", wait_s=4).__enter__()  # a live heartbeat: never stale
    finally:
        beating.set()
    started = time.monotonic()
    with lock.Lease(tmp_path / "p0", wait_s=30) as lease:  # its heartbeat stands still: stale after STALE_S
        assert json.loads(lease.path.read_text())["pid"] == os.getpid()
    assert 2 <= time.monotonic() - started < 10


def test_a_holder_whose_lease_was_taken_over_stops_at_once(tmp_path):
    script = (
        "import sys, time\nfrom gradatlas import lock\nlock.HEARTBEAT_S = 0.2\n"
        "with lock.Lease(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "p0")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline() == "held\n"
    write_lease(tmp_path / "p0", host="elsewhere", pid=1)  # as a process that found it stale would
    assert proc.wait(timeout=30) == 75
    assert "lost the pack lease" in proc.stderr.read()


# --- two real trainings of one pack, as two cluster job steps run them ------------------------------------------
def one_pack(mnist_dir: Path) -> dict:
    return {
        "study": "lease",
        "data": {"source": "idx", "path": str(mnist_dir), "validation_size": 500, "train_subset": 20000},
        "model": {"depth": 3, "width": 256},  # about a second an epoch: the test kills it long before the end
        "train": {"epochs": 1000, "patience": 1000, "threads": 1},
        "diagnostics": {"probe_size": 200, "early_steps": [1]},
        "grid": {"initializer": ["he_normal"], "activation": ["relu"], "optimizer": ["sgd"], "regularizer": ["none"]},
        "seeds": [0],
    }


@pytest.mark.integration
def test_two_trainings_of_one_pack_never_run_at_once(tmp_path, mnist_dir):
    """Job steps (`--nolock --no-hooks`, as SLURM jobs run them) of the same pack: the second waits
    for the first and fails naming it; one that waits while the first is killed takes the pack over
    and resumes from its backup."""
    from conftest import committed_epoch

    ws = make_workspace(tmp_path / "ws")
    config = write_config(ws, one_pack(mnist_dir))
    run_snakemake(ws, "--cores", "1", "--until", "prepare_data", "--configfile", str(config))
    target = "results/runs/initializer~he_normal/activation~relu/optimizer~sgd/regularizer~none/seed~0/run.json"
    env = os.environ | {"TF_CPP_MIN_LOG_LEVEL": "2"}

    def job_step(wait_s: int) -> subprocess.Popen:
        return subprocess.Popen(
            [str(SNAKEMAKE), target, "--cores", "1", "--nolock", "--no-hooks", "--configfile", str(config)],
            cwd=ws,
            env=env | {"GRADATLAS_LEASE_WAIT_S": str(wait_s)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    first = job_step(600)
    waiting = None
    try:
        deadline = time.monotonic() + 300
        while committed_epoch(ws / "results") < 1:
            assert first.poll() is None and time.monotonic() < deadline, first.stdout.read()[-3000:]
            time.sleep(0.2)
        (lease,) = (ws / "results" / "packs").glob("*.lease")
        holder = json.loads(lease.read_text())

        second = job_step(3)
        out, _ = second.communicate(timeout=300)
        assert second.returncode != 0, out[-3000:]
        assert f"is being trained by pid {holder['pid']} on host {socket.gethostname()}" in out, out[-3000:]
        # the first trains on, undisturbed, holding its lease
        assert first.poll() is None and json.loads(lease.read_text())["token"] == holder["token"]

        waiting = job_step(600)
        seen = ""
        while "waiting up to" not in seen:
            line = waiting.stdout.readline()
            assert line, f"the third job step ended without waiting:\n{seen[-3000:]}"
            seen += line
        epoch = committed_epoch(ws / "results")
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        # the lease of a dead process on this host is taken over at once, and the pack resumes
        log = ws / "results" / "logs" / "train" / f"{lease.stem}.log"
        deadline = time.monotonic() + 120
        while not (resumed := re.search(r"resumed from .* after epoch (\d+)", log.read_text() if log.exists() else "")):
            assert waiting.poll() is None and time.monotonic() < deadline, waiting.stdout.read()[-3000:]
            time.sleep(0.2)
        assert int(resumed.group(1)) >= epoch
        assert json.loads(lease.read_text())["token"] != holder["token"]
    finally:
        for proc in (first, waiting):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
