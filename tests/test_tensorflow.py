"""The TensorFlow backend: the same engine trains one run per job. Against JAX from the same initial
weights it gives the same results; a killed training resumes bit-identical; the real snakemake CLI
runs a study on it, one job per run.

Keras' seeded initializers draw different numbers under each backend, so the equality test builds
every network with weights drawn by NumPy (an injected `build`); dropout is left out for the same
reason (its masks come from the backend's RNG). TensorFlow runs in its own processes.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pandas as pd
import pytest

from conftest import make_workspace, run_snakemake, worker, worker_env, write_config
from gradatlas import config as gaconfig, engine, grid, packs, rundir

# (activation, optimizer, regularizer, lr_schedule, spec changes): every kind of optimizer step and
# technique, the divergence guard and early stopping
RUNS = [
    ("relu", "adam", "l2", "constant", {"seed": 1}),
    ("relu", "adam", "max_norm", "constant", {}),
    ("relu", "adam", "l1_l2", "constant", {"clipnorm": 0.5, "clipvalue": None}),
    ("relu", "adam", "none", "constant", {"learning_rate": 50.0}),  # diverges
    ("relu", "adam", "none", "constant", {"learning_rate": 0.0, "patience": 1}),  # never improves: stops early
    ("tanh", "momentum", "batch_norm", "constant", {}),
    ("relu", "rmsprop", "none", "exponential", {}),
    ("elu", "nadam", "l2", "constant", {}),
    ("relu", "adamw", "none", "cosine", {}),
    ("sigmoid", "nesterov", "max_norm", "inverse_time", {}),
    ("relu", "adagrad", "none", "constant", {"clipvalue": 0.01}),
]
MEMBERS = list(range(len(RUNS)))


@pytest.fixture(scope="module")
def both(mnist_dir, tmp_path_factory) -> dict:
    """{backend: (records by member, root)} for the same members trained on JAX and on TensorFlow."""
    env = worker_env(GRADATLAS_XLA_CACHE="off")
    procs = {}
    for name in ("jax", "tensorflow"):
        root = tmp_path_factory.mktemp(name)
        cmd = worker("train-same-weights", name, root, mnist_dir, json.dumps(RUNS))
        procs[name] = (subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), root)
    out = {}
    for name, (proc, root) in procs.items():
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-3000:]
        out[name] = ({int(k): v for k, v in json.loads(stdout.strip().splitlines()[-1]).items()}, root)
    return out


@pytest.mark.integration
def test_the_runs_trained_on_tensorflow(both):
    records, root = both["tensorflow"]
    assert {r["backend"] for r in records.values()} == {"tensorflow"}
    for i in MEMBERS:
        assert sorted(p.name for p in (root / "runs" / f"member-{i}").iterdir()) == sorted(rundir.RUN_FILES)


@pytest.mark.integration
def test_step0_diagnostics_equal_across_backends(both):
    stats = ["grad_w_norm", "delta_norm", "delta_rms", "weight_norm", "act_mean", "act_std", "saturated_frac"]
    for i in MEMBERS:
        jax_, tf = (
            pd.read_parquet(both[b][1] / "runs" / f"member-{i}" / "diagnostics.parquet").query("step == 0")
            for b in both
        )
        # atol: under batch normalization the batch-mean gradient (delta_norm) is 0 up to rounding (~1e-8)
        np.testing.assert_allclose(
            tf[stats].to_numpy(), jax_[stats].to_numpy(), rtol=1e-5, atol=1e-6, err_msg=f"member {i}"
        )


@pytest.mark.integration
def test_results_equal_across_backends(both):
    for i in MEMBERS:
        jax_, tf = (both[b][0][i]["summary"] for b in ("jax", "tensorflow"))
        assert tf["status"] == jax_["status"], i
        assert tf["epochs_run"] == jax_["epochs_run"], i
        assert abs(tf["test_accuracy"] - jax_["test_accuracy"]) <= 0.003, i
    statuses = {both["tensorflow"][0][i]["summary"]["status"] for i in MEMBERS}
    assert "diverged" in statuses and "stalled" in statuses  # the guard and early stopping ran on TensorFlow too


def test_tensorflow_refuses_a_pack_of_several(tmp_path):
    """In this (JAX) process the engine checks the spec's backend before it builds anything."""
    from test_engine import make_members

    members = [
        grid.Run(m.spec.replace(backend="tensorflow"), m.cell, m.run_dir) for m in make_members(tmp_path, [0, 1])
    ]
    assert not any(p.exists() for p in tmp_path.iterdir())
    with pytest.raises((ValueError, RuntimeError), match="tensorflow"):
        engine.Trainer(members, tmp_path / "nowhere", tmp_path / "pack")


def test_tensorflow_plans_one_run_per_pack(tmp_path):
    cfg = gaconfig.check(
        gaconfig.validate_schema(
            {
                "data": {"source": "idx", "path": "unused"},
                "train": {"backend": "tensorflow"},
                "grid": {
                    "initializer": ["glorot_uniform", "he_normal"],
                    "activation": ["relu"],
                    "optimizer": ["adam"],
                    "regularizer": ["none", "l2"],
                },
                "seeds": [0, 1],
            }
        )
    )
    plan = packs.plan(grid.runs(cfg, tmp_path), pack_size=64)
    assert [len(p.runs) for p in plan] == [1] * 8


# --- resume after SIGKILL, on TensorFlow ---------------------------------------------------------
@pytest.fixture(scope="module")
def resumed(mnist_dir, tmp_path_factory):
    from test_engine import run_script

    base = tmp_path_factory.mktemp("tf-uninterrupted")
    run_script(base, "", mnist_dir, wait_for_flag=False, backend="tensorflow", members=[3])
    killed = tmp_path_factory.mktemp("tf-killed")
    for point in ("segment-1-31", "backup-rotated-3"):
        run_script(killed, point, mnist_dir, wait_for_flag=True, backend="tensorflow", members=[3])
    run_script(killed, "", mnist_dir, wait_for_flag=False, backend="tensorflow", members=[3])
    return base, killed


@pytest.mark.integration
def test_a_killed_tensorflow_run_resumes_bit_identical(resumed):
    """Member 3 uses dropout: its RNG state is part of what a backup must restore."""
    from test_engine import assert_same_run

    base, killed = resumed
    assert_same_run(base / "runs" / "member-3", killed / "runs" / "member-3")
    record = json.loads((killed / "runs" / "member-3" / "run.json").read_text())
    # killed between moving epoch 2's backup aside and committing epoch 3's: it resumed from epoch 2's
    assert record["resumed_from_epoch"] == 2 and record["provenance"]["backend"] == "tensorflow"


# --- the real CLI ----------------------------------------------------------------------------------
@pytest.mark.integration
def test_a_study_runs_on_tensorflow_one_job_per_run(mnist_dir, tmp_path):
    ws = make_workspace(tmp_path / "ws")
    config = write_config(
        ws,
        {
            "data": {"source": "idx", "path": str(mnist_dir), "validation_size": 500, "train_subset": 2000},
            "model": {"depth": 3, "width": 32},
            "train": {"epochs": 2, "threads": 1, "backend": "tensorflow"},
            "diagnostics": {"probe_size": 200, "early_steps": [1]},
            "grid": {
                "initializer": ["he_normal"],
                "activation": ["relu"],
                "optimizer": ["adam"],
                "regularizer": ["none", "l2"],
            },
            "seeds": [0],
        },
    )
    proc = run_snakemake(ws, "--cores", "2", "--configfile", str(config))
    assert len(set(__import__("re").findall(r"rule (train_\w+):", proc.stdout + proc.stderr))) == 2  # one job per run
    runs = pd.read_csv(ws / "results" / "tables" / "runs.csv")
    assert len(runs) == 2 and set(runs["status"]) <= {"converged", "stalled"}
    for run_json in (ws / "results" / "runs").rglob("run.json"):
        assert json.loads(run_json.read_text())["provenance"]["backend"] == "tensorflow"
    assert (ws / "results" / "report" / "index.html").exists()


def test_presets_probe_every_network_on_tensorflow(mnist_dir):
    """The Nielsen preset stacks its seeds' networks; TensorFlow probes them one by one, and a stacked
    pack it cannot vectorize is refused, never silently cut to its first member."""
    proc = subprocess.run(
        worker("probe-presets", "tensorflow", mnist_dir), env=worker_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "refused: the tensorflow backend trains packs of one member, not 2" in proc.stdout
