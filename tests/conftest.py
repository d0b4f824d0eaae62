"""Shared fixtures: the real MNIST, throwaway workspaces, and the real snakemake CLI.

Real MNIST comes from $GRADATLAS_MNIST, else ../shared/data/mnist beside the repository when
present, else the copy the project ships in resources/mnist. A test that needs MNIST never skips.

With GRADATLAS_FAIL_ON_SKIP=1 (.ci/run) a skip other than EXPECTED_SKIPS fails the run.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

# The training engine packs runs on JAX; tests that need TensorFlow start their own process.
os.environ.setdefault("KERAS_BACKEND", "jax")

REPO = Path(__file__).resolve().parent.parent
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist"
MNIST = Path(
    os.environ.get("GRADATLAS_MNIST") or (SHARED_MNIST if SHARED_MNIST.is_dir() else REPO / "resources" / "mnist")
)
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
# what a workspace needs of the repository (never results/, resources/ or .snakemake/)
WORKER = Path(__file__).resolve().parent / "worker.py"
WORKFLOW_FILES = [
    "Snakefile",
    "config.yaml",
    "workflow",
    "scripts",
    "envs",
    "studies",
    "profiles",
]  # gradatlas: installed


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    if not (MNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.fail(
            f"real MNIST not found at {MNIST}: restore the shipped copy (git checkout -- resources/mnist)"
            " or set GRADATLAS_MNIST"
        )
    return MNIST


# The skips CI accepts, by reason: each depends on the machine, not on anything the project could ship.
EXPECTED_SKIPS = {
    "root reads files whatever their mode",  # tests/test_data.py: CI runs as root
}
SKIPS: list[tuple[str, str]] = []


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        SKIPS.append((report.nodeid, report.longrepr[2].removeprefix("Skipped: ")))


def unexpected_skips() -> list[tuple[str, str]]:
    return [(test, reason) for test, reason in SKIPS if reason not in EXPECTED_SKIPS]


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("GRADATLAS_FAIL_ON_SKIP") == "1" and unexpected_skips() and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    unexpected = unexpected_skips()
    if unexpected and os.environ.get("GRADATLAS_FAIL_ON_SKIP") == "1":
        terminalreporter.section("unexpected skips (GRADATLAS_FAIL_ON_SKIP=1)", red=True)
        for test, reason in unexpected:
            terminalreporter.write_line(f"{test}: {reason}")


def make_workspace(where: Path) -> Path:
    """A copy of the workflow in `where`, so a test's results never touch the repository's."""
    where.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, where / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, where / name)
    return where


def write_config(ws: Path, overlay: dict, name: str = "test.yaml") -> Path:
    path = ws / name
    path.write_text(yaml.safe_dump(overlay, sort_keys=False))
    return path


def run_snakemake(ws: Path, *args: str, timeout: int = 900, check: bool = True) -> subprocess.CompletedProcess:
    """The real snakemake CLI in workspace `ws`; output captured, failure shown in the assertion."""
    env = os.environ | {"TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([str(SNAKEMAKE), *args], cwd=ws, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


def pending(ws: Path, *args: str) -> dict[str, str]:
    """{output file: rule} of what snakemake would make in workspace `ws` with `args` (config files,
    targets): the rows of `snakemake --summary` (tab-separated) whose plan is "update pending"."""
    summary = run_snakemake(ws, "--summary", *args).stdout
    header, *rows = [line.split("\t") for line in summary.splitlines() if line.count("\t") >= 5]
    assert header[:3] == ["output_file", "date", "rule"] and header[-1] == "plan", summary[:2000]
    return {row[0]: row[2] for row in rows if row[-1] == "update pending"}


def train_runs(plan: dict[str, str]) -> list[str]:
    """The run folders a `pending` plan trains: the run.json outputs of its train_* rules."""
    return [
        out.removesuffix("/run.json")
        for out, rule in plan.items()
        if rule.startswith("train_") and out.endswith("/run.json")
    ]


def planned_runs(ws: Path, *args: str) -> list[str]:
    """The run folders snakemake would train in `ws` with `args`."""
    return train_runs(pending(ws, *args))


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array: magic (0, 0, 0x08, ndim), big-endian sizes, the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def worker(command: str, *args) -> list[str]:
    """The command line of one of tests/worker.py's programs, for subprocess."""
    return [sys.executable, str(WORKER), command, *map(str, args)]


def worker_env(**extra: str) -> dict:
    """The environment for a worker: this checkout's gradatlas, the backend left to the worker."""
    env = os.environ | {"PYTHONPATH": str(REPO), **extra}
    env.pop("KERAS_BACKEND", None)
    return env


def kill_when(proc, reached, what: str, timeout: float = 300) -> None:
    """Wait until `reached()` (failing if `proc`, started with start_new_session, ends first or
    `timeout` passes), then SIGKILL its whole process group."""
    import os
    import signal
    import time

    deadline = time.monotonic() + timeout
    try:
        while not reached():
            assert proc.poll() is None, f"the process ended ({proc.returncode}) before {what}"
            assert time.monotonic() < deadline, f"never reached {what}"
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# the members of tests/test_engine.py's MEMBERS a resume test trains: dropout (RNG state), l2,
# another learning rate
RESUMABLE = [3, 2, 6]


def run_script(root: Path, point: str, mnist_dir: Path, wait_for_flag: bool, backend="jax", members=RESUMABLE):
    """test_engine's `members` in one pack under `root`, on `backend`, in worker.py's hang command:
    with `wait_for_flag`, SIGKILLed once it reaches hook point `point`; without, run to the end
    (`point` "")."""
    proc = subprocess.Popen(
        worker("hang", backend, root, point, mnist_dir, json.dumps(list(members))),
        env=worker_env(HANG_FLAG=str(root / "hang.flag")),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    if not wait_for_flag:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]
        return
    kill_when(proc, (root / "hang.flag").exists, point)
    (root / "hang.flag").unlink()


def killed_and_uninterrupted(
    tmp_path_factory, mnist_dir: Path, kill_points: list[str], prefix: str = "", backend="jax", members=RESUMABLE
) -> tuple[Path, Path]:
    """(uninterrupted, killed): the roots of two trainings of the same pack (see run_script), one
    run to the end, the other SIGKILLed at each of `kill_points` in turn, then rerun to the end."""
    base = tmp_path_factory.mktemp(f"{prefix}uninterrupted")
    run_script(base, "", mnist_dir, wait_for_flag=False, backend=backend, members=members)
    killed = tmp_path_factory.mktemp(f"{prefix}killed")
    for point in kill_points:
        run_script(killed, point, mnist_dir, wait_for_flag=True, backend=backend, members=members)
    run_script(killed, "", mnist_dir, wait_for_flag=False, backend=backend, members=members)
    return base, killed


def committed_epoch(results: Path) -> int:
    """Epochs the (one) pack training under `results` has surely committed to its backup so far: one
    less than the last epoch its train log announces (the pack's epoch line of the console, issue
    #20), as an epoch's backup is written after its line and before the next epoch trains. Read
    from the log, not the backup, whose format is the engine's own."""
    import re

    logs = "".join(log.read_text(errors="replace") for log in results.glob("logs/train/*.log"))
    epochs = [int(n) for n in re.findall(r" epoch (\d+)/\d+: best val_accuracy ", logs)]
    return max(epochs, default=1) - 1


SMALL_STUDY = {
    "study": "small",
    "data": {"source": "idx", "validation_size": 500, "train_subset": 3000},
    "model": {"depth": 4, "width": 32},
    "train": {"epochs": 2, "threads": 1},
    "diagnostics": {"probe_size": 500, "early_steps": [1, 10]},
    "grid": {
        "initializer": ["glorot_uniform", "he_normal"],
        "activation": ["sigmoid", "relu"],
        "optimizer": ["sgd", "adam"],
        "regularizer": ["none", "dropout"],
    },
    "seeds": [0],
}


@pytest.fixture(scope="session")
def small_study(tmp_path_factory, mnist_dir) -> Path:
    """A real 2x2x2x2 study over real MNIST, run once per test session; returns its workspace."""
    ws = make_workspace(tmp_path_factory.mktemp("small-study"))
    overlay = dict(SMALL_STUDY, data=dict(SMALL_STUDY["data"], path=str(mnist_dir)))
    config = write_config(ws, overlay)
    run_snakemake(ws, "--cores", "2", "--configfile", str(config))
    return ws
