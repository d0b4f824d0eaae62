"""The diagnostics probe against hand-computed backpropagation, and its promise not to disturb training."""

import keras
import numpy as np
import pytest

from gradatlas import backend, config as gaconfig, diagnostics, model as gamodel


def make_spec(**overrides):
    cfg = {
        "data": {"source": "idx", "path": "unused"},
        "model": {"depth": 2, "width": 3},
        "grid": {"initializer": ["glorot_uniform"], "activation": ["sigmoid"], "optimizer": ["sgd"], "regularizer": ["none"]},
        "seeds": [0],
    }
    for key, value in overrides.items():
        cfg["grid"][key] = [value]
    gaconfig.validate_schema(cfg)
    gaconfig.check(cfg)
    cell = gaconfig.typed_cell(cfg, gaconfig.grid_frame(cfg).iloc[0].to_dict())
    return gaconfig.run_spec(cfg, cell)


def sigmoid(v):
    return 1 / (1 + np.exp(-v))


def hand_backprop(weights, x, y):
    """Plain numpy forward/backward of Dense-sigmoid-Dense-sigmoid-Dense with mean softmax cross-entropy."""
    (w1, b1), (w2, b2), (w3, b3) = weights
    z1 = x @ w1 + b1
    a1 = sigmoid(z1)
    z2 = a1 @ w2 + b2
    a2 = sigmoid(z2)
    z3 = a2 @ w3 + b3
    p = np.exp(z3 - z3.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    n = len(x)
    dz3 = (p - np.eye(10)[y]) / n
    dz2 = (dz3 @ w3.T) * a2 * (1 - a2)
    dz1 = (dz2 @ w2.T) * a1 * (1 - a1)
    return [dz1, dz2, dz3], [x.T @ dz1, a1.T @ dz2, a2.T @ dz3], [z1, z2, z3], [a1, a2, z3]


def test_probe_matches_hand_computed_gradients():
    rng = np.random.default_rng(0)
    x = rng.random((16, 784)).astype("float32")
    y = rng.integers(0, 10, 16).astype("int32")
    model = gamodel.build(make_spec())
    for layer in gamodel.dense_layers(model):  # non-zero biases, so bias paths are exercised
        layer.bias.assign(rng.normal(size=layer.bias.shape).astype("float32"))
    weights = [(keras.ops.convert_to_numpy(l.kernel).astype("float64"), keras.ops.convert_to_numpy(l.bias).astype("float64"))
               for l in gamodel.dense_layers(model)]  # fmt: skip
    dz_hand, dw_hand, z_hand, a_hand = hand_backprop(weights, x.astype("float64"), y)

    records, dz, dW = backend.probe_gradients(model, x, y)
    for k in range(3):
        np.testing.assert_allclose(dz[k], dz_hand[k], rtol=1e-3, atol=1e-7)
        np.testing.assert_allclose(dW[k], dw_hand[k], rtol=1e-3, atol=1e-7)
        np.testing.assert_allclose(records[k]["z"], z_hand[k], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(records[k]["a"], a_hand[k], rtol=1e-4, atol=1e-5)

    rows = diagnostics.layer_statistics(records, dz, dW, [w for w, _ in weights], None, "sigmoid", {})
    for k, row in enumerate(rows):
        bias_gradient = dz_hand[k].sum(axis=0)
        assert row["delta_norm"] == pytest.approx(np.linalg.norm(bias_gradient), rel=1e-3)
        assert row["grad_w_norm"] == pytest.approx(np.linalg.norm(dw_hand[k]), rel=1e-3)
        assert row["delta_rms"] == pytest.approx(np.sqrt(np.mean((dz_hand[k] * 16) ** 2)), rel=1e-3)
        assert row["act_mean"] == pytest.approx(a_hand[k].mean(), rel=1e-4)
    hidden_slope = [a * (1 - a) for a in a_hand[:2]]
    for k in range(2):
        assert rows[k]["saturated_frac"] == pytest.approx((hidden_slope[k] < 0.05 * 0.25).mean())
    assert [r["layer_kind"] for r in rows] == ["hidden", "hidden", "output"]
    assert np.isnan(rows[2]["saturated_frac"]) and np.isnan(rows[0]["update_ratio"])


def test_relu_saturation_counts_inactive_units_and_dead_units():
    rng = np.random.default_rng(1)
    u = rng.normal(size=(50, 4)).astype("float32")
    u[:, 0] = -np.abs(u[:, 0]) - 0.1  # unit 0 never active: dead
    records = [{"z": u, "u": u, "a": np.maximum(u, 0)}, {"z": u, "u": u, "a": u}]
    dz = [np.zeros_like(u), np.zeros_like(u)]
    rows = diagnostics.layer_statistics(records, dz, [np.zeros((4, 4))] * 2, [np.ones((4, 4))] * 2, None, "relu", {})
    assert rows[0]["saturated_frac"] == pytest.approx((u < 0).mean())
    assert rows[0]["dead_frac"] == pytest.approx(0.25)


def test_leaky_relu_units_cannot_die():
    u = -np.ones((10, 3), dtype="float32")
    records = [{"z": u, "u": u, "a": u}, {"z": u, "u": u, "a": u}]
    rows = diagnostics.layer_statistics(records, [u, u], [np.zeros((3, 3))] * 2, [np.ones((3, 3))] * 2, None,
                                        "leaky_relu", {"negative_slope": 0.2})  # fmt: skip
    assert rows[0]["saturated_frac"] == 1.0 and rows[0]["dead_frac"] == 0.0


def test_update_ratio_measures_relative_weight_change():
    w0, w1 = np.ones((3, 3)), np.ones((3, 3)) * 1.1
    u = np.zeros((2, 3), dtype="float32")
    records = [{"z": u, "u": u, "a": u}]
    rows = diagnostics.layer_statistics(records, [u], [w0], [w1], [w0], "sigmoid", {})
    assert rows[0]["update_ratio"] == pytest.approx(0.1)


def test_probe_changes_neither_weights_nor_random_streams():
    spec = make_spec(regularizer="dropout")
    spec["depth"] = 3
    model = gamodel.build(spec)
    x = np.random.default_rng(2).random((32, 784)).astype("float32")
    y = np.arange(32, dtype="int32") % 10
    before = [keras.ops.convert_to_numpy(v).copy() for v in model.variables]
    seeds_before = [keras.ops.convert_to_numpy(layer.seed_generator.state).copy()
                    for layer in model.layers if isinstance(layer, keras.layers.Dropout)]  # fmt: skip
    backend.probe_gradients(model, x, y)
    after = [keras.ops.convert_to_numpy(v) for v in model.variables]
    seeds_after = [keras.ops.convert_to_numpy(layer.seed_generator.state)
                   for layer in model.layers if isinstance(layer, keras.layers.Dropout)]  # fmt: skip
    assert seeds_before and all(np.array_equal(a, b) for a, b in zip(before, after))
    assert all(np.array_equal(a, b) for a, b in zip(seeds_before, seeds_after))


def test_batch_norm_probe_uses_moving_averages_and_does_not_update_them():
    spec = make_spec(regularizer="batch_norm")
    model = gamodel.build(spec)
    bn = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    x = np.random.default_rng(3).random((64, 784)).astype("float32")
    before = [keras.ops.convert_to_numpy(l.moving_mean).copy() for l in bn]
    records, _, _ = backend.probe_gradients(model, x, np.zeros(64, dtype="int32"))
    assert all(np.array_equal(b, keras.ops.convert_to_numpy(l.moving_mean)) for b, l in zip(before, bn))
    assert not np.allclose(records[0]["z"], records[0]["u"])  # u is the batch-normalized z
