"""Kill a training with SIGKILL at several points and let snakemake rerun it: the result must be
bit-identical to an uninterrupted training of the same seed (deterministic mode, same machine).

The kill points are found with the test hook `gradatlas.training.hang_point`: with
GRADATLAS_TEST_HANG_AT=<point> the training creates $GRADATLAS_TEST_HANG_FLAG there and sleeps, and
the test SIGKILLs snakemake's whole process group (snakemake, the job, TensorFlow's threads).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import SNAKEMAKE, make_workspace, run_snakemake, write_config

CELL = "initializer~he_normal/activation~relu/optimizer~adam/regularizer~dropout/seed~0"
# every kind of moment: mid-epoch, between epochs, while writing the backup, while writing the
# outputs, and after run.json (the run folder complete, but the snakemake job not)
KILL_POINTS = ["batch-1-5", "committed-2", "backup-rotated-3", "outputs-model", "outputs-run.json"]


def tiny_study(mnist_dir: Path, results: str) -> dict:
    return {
        "study": "resume",
        "results": results,
        "data": {"source": "idx", "path": str(mnist_dir), "validation_size": 500, "train_subset": 2000},
        "model": {"depth": 3, "width": 32},
        "train": {"epochs": 5, "patience": 10, "deterministic": True, "threads": 1},
        "diagnostics": {"probe_size": 200, "early_steps": [1, 10]},
        "grid": {"initializer": ["he_normal"], "activation": ["relu"], "optimizer": ["adam"], "regularizer": ["dropout"]},
        "seeds": [0],
    }


def kill_at(ws: Path, config: Path, target: str, point: str, rerun: bool) -> None:
    """Run snakemake until the training reaches `point`, then SIGKILL its process group."""
    flag = ws / "hang.flag"
    flag.unlink(missing_ok=True)
    env = os.environ | {"TF_CPP_MIN_LOG_LEVEL": "2", "GRADATLAS_TEST_HANG_AT": point, "GRADATLAS_TEST_HANG_FLAG": str(flag)}
    args = [str(SNAKEMAKE), target, "--cores", "1", "--configfile", str(config)]
    if rerun:
        args += ["--nolock", "--rerun-incomplete"]
    proc = subprocess.Popen(args, cwd=ws, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not flag.exists():
            assert proc.poll() is None, f"snakemake ended ({proc.returncode}) before reaching {point}"
            assert time.monotonic() < deadline, f"training never reached {point}"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def weights(run: Path) -> list[np.ndarray]:
    import keras

    return keras.saving.load_model(run / "model.keras", safe_mode=True).get_weights()


TIMINGS = ["seconds", "train_seconds", "samples_per_second"]


@pytest.fixture(scope="module")
def resumed(tmp_path_factory, mnist_dir):
    """(uninterrupted run folder, run folder killed at every KILL_POINTS then finished, workspace)."""
    ws = make_workspace(tmp_path_factory.mktemp("resume"))
    base = write_config(ws, tiny_study(mnist_dir, "results/base"), "base.yaml")
    killed = write_config(ws, tiny_study(mnist_dir, "results/killed"), "killed.yaml")
    run_snakemake(ws, f"results/base/runs/{CELL}/run.json", "--cores", "1", "--configfile", str(base))
    target = f"results/killed/runs/{CELL}/run.json"
    seen = {}
    for i, point in enumerate(KILL_POINTS):
        kill_at(ws, killed, target, point, rerun=i > 0)
        run = ws / "results/killed/runs" / CELL
        state = run / "_resume/backup/state.npz"
        with np.load(state if state.exists() else run / "_resume/backup/state.prev.npz") as z:
            seen[point] = json.loads(str(z["meta"]))["epoch"]
    # a killed snakemake leaves its lock behind: a user runs `snakemake --unlock` once, here --nolock
    proc = run_snakemake(ws, target, "--cores", "1", "--nolock", "--rerun-incomplete", "--configfile", str(killed))
    return ws / "results/base/runs" / CELL, ws / "results/killed/runs" / CELL, seen, proc


def test_kills_leave_a_backup_of_the_last_complete_epoch(resumed):
    _, _, seen, _ = resumed
    # epochs committed when killed: mid-epoch 2 -> 1; after committing 2 -> 2; while rotating the
    # backup of epoch 3 -> the previous (2) survives; in the outputs -> all 5
    assert seen == {"batch-1-5": 1, "committed-2": 2, "backup-rotated-3": 2, "outputs-model": 5, "outputs-run.json": 5}


def test_resumed_run_is_bit_identical_to_an_uninterrupted_one(resumed):
    base, killed, _, _ = resumed
    for a, b in zip(weights(base), weights(killed), strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    pd.testing.assert_frame_equal(
        pd.read_csv(base / "history.csv").drop(columns="seconds"), pd.read_csv(killed / "history.csv").drop(columns="seconds")
    )
    pd.testing.assert_frame_equal(pd.read_parquet(base / "diagnostics.parquet"), pd.read_parquet(killed / "diagnostics.parquet"))
    a, b = (json.loads((r / "run.json").read_text()) for r in (base, killed))
    assert {k: v for k, v in a["summary"].items() if k not in TIMINGS} == {
        k: v for k, v in b["summary"].items() if k not in TIMINGS
    }
    assert a["resumed_from_epoch"] == 0 and b["resumed_from_epoch"] == 5


def test_finished_run_folder_is_clean_and_records_determinism(resumed):
    _, killed, _, _ = resumed
    assert sorted(p.name for p in killed.iterdir()) == ["diagnostics.parquet", "history.csv", "model.keras", "run.json", "tensorboard"]
    record = json.loads((killed / "run.json").read_text())
    assert record["spec"]["deterministic"] is True
    settings = record["provenance"]["determinism"]
    assert settings["op_determinism"] is True and settings["intra_op_threads"] == 1
    # ordinary permissions: what the umask gives, no private temp-file modes
    umask = os.umask(0)
    os.umask(umask)
    for path in killed.rglob("*"):
        mode = path.stat().st_mode & 0o777
        assert mode == (0o777 if path.is_dir() else 0o666) & ~umask, f"{path}: mode {oct(mode)}"
