"""The TensorFlow and JAX backends: the same training, callbacks and diagnostics under both.

Keras fixes its backend at import, so each backend trains in its own process (in parallel, on a
tiny real-MNIST subset); the in-process tests use the backend this test session imported.
No timings are asserted here: speed is the benchmark's business (bench/run.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import REPO

TRAIN = """
import json, sys
from pathlib import Path
from gradatlas import backend
backend.select(sys.argv[1])
from gradatlas import config as C, training
cfg = json.loads(sys.argv[2])
C.validate_schema(cfg); C.check(cfg)
cell = C.typed_cell(cfg, C.grid_frame(cfg).iloc[0].to_dict())
record = training.train(C.run_spec(cfg, cell), Path(sys.argv[3]), Path(sys.argv[4]), cell, threads=1)
print(json.dumps({"backend": record["provenance"]["backend"], "summary": record["summary"]}))
"""


@pytest.fixture(scope="module")
def prepared(mnist_dir, tmp_path_factory) -> Path:
    from gradatlas import data

    out = tmp_path_factory.mktemp("prepared") / "mnist"
    data.prepare(data.load("idx", mnist_dir), out, {"source": "idx"})
    return out


@pytest.fixture(scope="module")
def both(mnist_dir, prepared, tmp_path_factory) -> dict:
    """One cell, one seed, trained under each backend (two processes at once)."""
    cfg = {
        "data": {"source": "idx", "path": str(mnist_dir), "validation_size": 500, "train_subset": 3000},
        "model": {"depth": 3, "width": 48},
        "train": {"epochs": 2, "steps_per_execution": 4, "patience": 5},
        "grid": {"initializer": ["he_normal"], "activation": ["elu"], "optimizer": ["adam"], "regularizer": ["none"]},
        "diagnostics": {"probe_size": 256, "early_steps": [1, 10]},
        "seeds": [3],
    }
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO), GRADATLAS_XLA_CACHE="off")
    env.pop("KERAS_BACKEND", None)
    runs, procs = {}, {}
    for name in ("tensorflow", "jax"):
        runs[name] = tmp_path_factory.mktemp(name) / "run"
        cfg["train"]["backend"] = name
        procs[name] = subprocess.Popen(
            [sys.executable, "-c", TRAIN, name, json.dumps(cfg), str(prepared), str(runs[name])],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
    out = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]
        record = json.loads(stdout.strip().splitlines()[-1])
        out[name] = {**record, "diag": pd.read_parquet(runs[name] / "diagnostics.parquet"), "run": runs[name]}
    return out


def test_each_backend_really_ran(both):
    assert both["tensorflow"]["backend"] == "tensorflow"
    assert both["jax"]["backend"] == "jax"
    for name in both:
        assert (both[name]["run"] / "run.json").exists() and (both[name]["run"] / "model.keras").exists()


def test_backends_agree_on_accuracy(both):
    tf_acc = both["tensorflow"]["summary"]["test_accuracy"]
    jax_acc = both["jax"]["summary"]["test_accuracy"]
    # 2 epochs on 2,500 images: ~0.88-0.92 either way; seeds draw different initial weights per backend
    assert tf_acc > 0.8 and jax_acc > 0.8
    assert abs(tf_acc - jax_acc) < 0.04


def test_backends_write_the_same_diagnostics(both):
    tf_diag, jax_diag = both["tensorflow"]["diag"], both["jax"]["diag"]
    assert list(tf_diag.columns) == list(jax_diag.columns)
    keys = ["step", "phase", "layer", "layer_kind", "units"]
    pd.testing.assert_frame_equal(tf_diag[keys], jax_diag[keys])
    # probes at step 0, after the first execution of 4 steps (the early steps 1 and 10 fall in the
    # executions ending at 4 and 12), and at both epoch ends (2,500 / 128 -> 20 steps per epoch)
    assert sorted(tf_diag["step"].unique()) == [0, 4, 12, 20, 40]
    for frame in (tf_diag, jax_diag):
        assert frame.drop(columns=["update_ratio", "saturated_frac", "dead_frac"]).notna().all().all()


def test_backends_agree_statistically_at_init(both):
    # Keras draws the seeded initial weights with each backend's own RNG, so they differ
    # value by value, but not in distribution: the norms of 784x48 / 48x48 He-normal matrices
    # agree to a few percent, and so, loosely, do the error signals they propagate.
    at = {name: run["diag"].query("step == 0").set_index("layer") for name, run in both.items()}
    weight = at["tensorflow"]["weight_norm"] / at["jax"]["weight_norm"]
    assert np.all(np.abs(weight - 1) < 0.1), weight
    delta = at["tensorflow"]["delta_norm"] / at["jax"]["delta_norm"]
    assert np.all((delta > 0.25) & (delta < 4)), delta
    for name in both:
        assert np.all(at[name]["update_ratio"].isna())
        assert np.all(at[name]["saturated_frac"].between(0, 1).iloc[:-1])


# --- in this process (its backend: whatever keras was imported with) --------------------------
def test_epoch_order_depends_on_seed_and_epoch_only():
    from gradatlas.backend import epoch_order

    a = epoch_order(1000, 7, 2)
    assert np.array_equal(a, epoch_order(1000, 7, 2))
    assert np.array_equal(np.sort(a), np.arange(1000))
    assert not np.array_equal(a, epoch_order(1000, 7, 3))
    assert not np.array_equal(a, epoch_order(1000, 8, 2))


def test_epoch_data_yields_the_chosen_epochs_batches():
    import keras

    from gradatlas.backend import EpochData, epoch_order

    x = np.arange(50, dtype=np.float32).reshape(25, 2)
    y = np.arange(25, dtype=np.int32)
    batches = EpochData(x, y, 8, seed=5)
    ds = batches.dataset()
    for epoch in (3, 0, 3):  # any order, as after a resume
        batches.set_epoch(epoch)
        seen = [keras.ops.convert_to_numpy(b[1]) for b in (ds if hasattr(ds, "prefetch") else (ds[i] for i in range(len(ds))))]
        assert [len(b) for b in seen] == [8, 8, 8, 1]
        assert np.array_equal(np.concatenate(seen), epoch_order(25, 5, epoch))
        assert np.array_equal(x[np.concatenate(seen), 0], 2 * np.concatenate(seen))


def test_compiled_probe_matches_eager_gradients():
    import keras

    from gradatlas import backend
    from gradatlas.model import build

    from gradatlas import config as C

    cfg = {"data": {"source": "idx", "path": "unused"}, "model": {"depth": 2, "width": 16},
           "grid": {"initializer": ["glorot_uniform"], "activation": ["tanh"], "optimizer": ["sgd"],
                    "regularizer": ["batch_norm"]}, "seeds": [1]}  # fmt: skip
    C.validate_schema(cfg)
    model = build(C.run_spec(cfg, C.typed_cell(cfg, C.grid_frame(cfg).iloc[0].to_dict())))
    rng = np.random.default_rng(0)
    x = rng.random((64, 784), dtype=np.float32)
    y = rng.integers(0, 10, 64).astype(np.int32)
    records, dz, dW, kernels, slopes = backend.probe(model, x, y, lambda u: 1 - keras.ops.tanh(u) ** 2)
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert [k.shape for k in kernels] == [tuple(layer.kernel.shape) for layer in dense]
    for k, layer in zip(kernels, dense):
        np.testing.assert_array_equal(k, keras.ops.convert_to_numpy(layer.kernel))
    logits = keras.ops.convert_to_numpy(model(x, training=False))
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dlogits = (p - np.eye(10, dtype=np.float32)[y]) / len(x)
    np.testing.assert_allclose(dz[-1], dlogits, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(dW[-1], records[-2]["a"].T @ dlogits, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(slopes[0], 1 - np.tanh(records[0]["u"]) ** 2, rtol=1e-5, atol=1e-6)
    # a second call reuses the compiled function and sees changed weights
    dense[-1].kernel.assign(dense[-1].kernel * 2)
    again = backend.probe(model, x, y, lambda u: 1 - keras.ops.tanh(u) ** 2)
    np.testing.assert_allclose(again[3][-1], 2 * kernels[-1])


def test_select_refuses_a_second_backend():
    import keras  # noqa: F401  (the session's backend is fixed from here on)

    from gradatlas import backend

    other = "jax" if backend.name() == "tensorflow" else "tensorflow"
    backend.select(backend.name())  # the running one: fine
    with pytest.raises(RuntimeError, match="already imported"):
        backend.select(other)
    with pytest.raises(ValueError, match="train.backend"):
        backend.select("torch")
