"""The backend: a training on JAX in its own process (it must never import TensorFlow), backend
selection, and the per-epoch sample order. No timings are asserted: that is bench/run.py's business.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import worker, worker_env


@pytest.fixture(scope="module")
def prepared(mnist_dir, tmp_path_factory) -> Path:
    from gradatlas import data

    out = tmp_path_factory.mktemp("prepared") / "mnist"
    data.prepare(data.load("idx", mnist_dir), out, {"source": "idx"})
    return out


@pytest.fixture(scope="module")
def jax_run(mnist_dir, prepared, tmp_path_factory) -> dict:
    """One cell, one seed, trained on JAX in a fresh process."""
    cfg = {
        "data": {"source": "idx", "path": str(mnist_dir), "validation_size": 500, "train_subset": 3000},
        "model": {"depth": 3, "width": 48},
        "train": {"epochs": 2, "patience": 5},
        "grid": {"initializer": ["he_normal"], "activation": ["elu"], "optimizer": ["adam"], "regularizer": ["none"]},
        "diagnostics": {"probe_size": 256, "early_steps": [1, 10]},
        "seeds": [3],
    }
    env = worker_env(TF_CPP_MIN_LOG_LEVEL="3", GRADATLAS_XLA_CACHE="off")
    runs, procs = {}, {}
    for name in ("jax",):
        runs[name] = tmp_path_factory.mktemp(name) / "run"
        cfg["train"]["backend"] = name
        procs[name] = subprocess.Popen(
            worker("train-one", name, json.dumps(cfg), prepared, runs[name]),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    out = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]
        record = json.loads(stdout.strip().splitlines()[-1])
        out[name] = {**record, "diag": pd.read_parquet(runs[name] / "diagnostics.parquet"), "run": runs[name]}
    return out


def test_a_second_job_compiles_nothing(mnist_dir, prepared, tmp_path):
    """Every program a job compiles goes into the compilation cache, Keras' small op-by-op ones
    included, so the next job with the same programs (the next pack of a study, a rerun) loads them
    all and compiles none."""
    cfg = {
        "data": {"source": "idx", "path": str(mnist_dir), "validation_size": 500, "train_subset": 1500},
        "model": {"depth": 2, "width": 32},
        "train": {"epochs": 1},
        "grid": {"initializer": ["he_normal"], "activation": ["relu"], "optimizer": ["adam"], "regularizer": ["none"]},
        "diagnostics": {"probe_size": 128, "early_steps": [1]},
        "seeds": [0],
    }
    env = worker_env(TF_CPP_MIN_LOG_LEVEL="3", GRADATLAS_XLA_CACHE=str(tmp_path / "xla"))
    jobs = []
    for i in range(2):
        proc = subprocess.run(
            worker("train-one", "jax", json.dumps(cfg), prepared, tmp_path / f"job-{i}" / "run"),
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        jobs.append(json.loads(proc.stdout.strip().splitlines()[-1])["programs"])
    first, second = jobs
    assert first["compiled"] > 20  # the training's programs and Keras' initializers, op by op
    assert second == {"compiled": 0, "loaded": first["compiled"] + first["loaded"]}


def test_the_training_ran_on_jax(jax_run):
    run = jax_run["jax"]
    assert run["backend"] == "jax"
    assert (run["run"] / "run.json").exists() and (run["run"] / "model.keras").exists()
    assert run["summary"]["test_accuracy"] > 0.8  # 2 epochs on 2,500 images: ~0.88-0.92


def test_probes_land_on_the_requested_steps(jax_run):
    diag = jax_run["jax"]["diag"]
    # step 0, the early steps 1 and 10 exactly, and both epoch ends (2,500 / 128 -> 20 steps per epoch)
    assert sorted(diag["step"].unique()) == [0, 1, 10, 20, 40]
    # ELU: a saturating measure, no inactive one
    assert diag.drop(columns=["update_ratio", "saturated_frac", "inactive_frac", "dead_frac"]).notna().all().all()
    assert diag["inactive_frac"].isna().all()


def test_the_jax_path_never_imports_tensorflow(jax_run):
    assert jax_run["jax"]["tensorflow_imported"] is False


# --- in this process (its backend: whatever keras was imported with) --------------------------
def test_epoch_order_depends_on_seed_and_epoch_only():
    from gradatlas.engine import epoch_order

    a = epoch_order(1000, 7, 2)
    assert np.array_equal(a, epoch_order(1000, 7, 2))
    assert np.array_equal(np.sort(a), np.arange(1000))
    assert not np.array_equal(a, epoch_order(1000, 7, 3))
    assert not np.array_equal(a, epoch_order(1000, 8, 2))


def test_select_refuses_another_backend():
    import keras  # noqa: F401  (the session's backend is fixed from here on)

    from gradatlas import backend

    other = "jax" if backend.name() == "tensorflow" else "tensorflow"
    backend.select(backend.name())  # the running one: fine
    with pytest.raises(RuntimeError, match="already imported"):
        backend.select(other)
    with pytest.raises(ValueError, match="train.backend = 'torch'"):
        backend.select("torch")


@pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="pinning needs Linux and 2 or more CPUs",
)
def test_one_thread_jobs_each_hold_a_core_of_their_own(tmp_path):
    """XLA:CPU runs a thread per CPU the process may use: a 1-thread job is pinned to one free core
    (backend.pin), two jobs get two different cores, and a job finding none free shares them all."""
    cpus = sorted(os.sched_getaffinity(0))
    env = worker_env(TMPDIR=str(tmp_path), TF_CPP_MIN_LOG_LEVEL="3", GRADATLAS_XLA_CACHE="off")
    jobs = []

    def start():
        proc = subprocess.Popen(worker("pinned", 1), env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        jobs.append(proc)
        return json.loads(proc.stdout.readline())

    try:
        held = [start() for _ in cpus]
        assert sorted(c for job in held for c in job["cpus"]) == cpus  # one core each, none shared
        for job in held:
            assert job["cpu_per_wall"] < 1.3, job  # XLA keeps to its one core
        assert start()["cpus"] == cpus  # none free: unpinned
        jobs[0].stdin.close()  # the first job ends: its core is free again
        jobs[0].wait(timeout=60)
        assert start()["cpus"] == held[0]["cpus"]
    finally:
        for proc in jobs:
            proc.kill()
            proc.wait()
