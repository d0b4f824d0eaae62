"""The diagnostics probe (the engine's, on a pack of one) against hand-computed backpropagation,
its measures per activation family, and its promise not to disturb training."""

import keras
import numpy as np
import pytest

from gradatlas import catalog, config as gaconfig, diagnostics, grid, model as gamodel


def make_spec(depth=2, width=3, **overrides):
    cfg = {
        "data": {"source": "idx", "path": "unused"},
        "model": {"depth": depth, "width": width},
        "grid": {
            "initializer": ["glorot_uniform"],
            "activation": ["sigmoid"],
            "optimizer": ["sgd"],
            "regularizer": ["none"],
        },
        "seeds": [0],
    }
    for key, value in overrides.items():
        cfg["grid"][key] = [value]
    gaconfig.validate_schema(cfg)
    gaconfig.check(cfg)
    cell = grid.typed_cell(cfg, grid.frame(cfg).iloc[0].to_dict())
    return grid.run_spec(cfg, cell)


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
    spec = make_spec()
    model = gamodel.build(spec)
    for layer in gamodel.dense_layers(model):  # non-zero biases, so bias paths are exercised
        layer.bias.assign(rng.normal(size=layer.bias.shape).astype("float32"))
    weights = [
        (
            keras.ops.convert_to_numpy(layer.kernel).astype("float64"),
            keras.ops.convert_to_numpy(layer.bias).astype("float64"),
        )
        for layer in gamodel.dense_layers(model)
    ]
    dz_hand, dw_hand, z_hand, a_hand = hand_backprop(weights, x.astype("float64"), y)

    rows = diagnostics.probe(model, spec, x, y).to_dict("records")
    assert [r["layer_kind"] for r in rows] == ["hidden", "hidden", "output"]
    for k, row in enumerate(rows):
        signal = np.abs(dz_hand[k] * 16)  # the per-sample error signal dL_i/dz
        assert row["delta_norm"] == pytest.approx(np.linalg.norm(dz_hand[k].sum(axis=0)), rel=1e-3)
        assert row["grad_w_norm"] == pytest.approx(np.linalg.norm(dw_hand[k]), rel=1e-3)
        assert row["delta_rms"] == pytest.approx(np.sqrt(np.mean(signal**2)), rel=1e-3)
        assert row["delta_p50"] == pytest.approx(np.percentile(signal, 50), rel=1e-3)
        assert row["act_mean"] == pytest.approx(a_hand[k].mean(), rel=1e-4)
        assert row["act_p95"] == pytest.approx(np.percentile(a_hand[k], 95), rel=1e-4)
        assert row["weight_norm"] == pytest.approx(np.linalg.norm(weights[k][0]), rel=1e-5)
    for k in range(2):
        slope = a_hand[k] * (1 - a_hand[k])
        assert rows[k]["saturated_frac"] == pytest.approx((slope < 0.05 * 0.25).mean())
        assert np.isnan(rows[k]["inactive_frac"])  # sigmoid: no inactive measure
    assert np.isnan(rows[2]["saturated_frac"]) and np.isnan(rows[0]["update_ratio"])


def _kill_unit(model, unit=0):
    """Make hidden unit `unit` of layer 1 inactive for every input in [0, 1]."""
    first = gamodel.dense_layers(model)[0]
    kernel = keras.ops.convert_to_numpy(first.kernel).copy()
    kernel[:, unit] = -np.abs(kernel[:, unit])
    first.kernel.assign(kernel)
    first.bias.assign(np.full(first.bias.shape, -0.1, dtype="float32") * (np.arange(first.bias.shape[0]) == unit))


def _probe_with_a_dead_unit(activation: str):
    """(model, probe inputs, the first hidden layer's probe row) for a 4-unit net whose unit 0 is off."""
    spec = make_spec(width=4, activation=activation)
    model = gamodel.build(spec)
    _kill_unit(model)
    x = np.random.default_rng(1).random((50, 784)).astype("float32")
    return model, x, diagnostics.probe(model, spec, x, np.zeros(50, "int32")).iloc[0]


def test_relu_reports_inactive_and_dead_units_not_saturation():
    model, x, first = _probe_with_a_dead_unit("relu")
    layer = gamodel.dense_layers(model)[0]
    u = x @ keras.ops.convert_to_numpy(layer.kernel) + keras.ops.convert_to_numpy(layer.bias)
    assert first["inactive_frac"] == pytest.approx((u < 0).mean())
    assert first["dead_frac"] >= 0.25  # unit 0 of 4 never active
    assert np.isnan(first["saturated_frac"])  # never compared with sigmoid's saturation


def test_leaky_relu_units_cannot_die():
    _, _, first = _probe_with_a_dead_unit("leaky_relu")
    assert first["inactive_frac"] >= 0.25 and first["dead_frac"] == 0.0


def test_update_ratio_measures_relative_weight_change():
    spec = make_spec()
    model = gamodel.build(spec)
    before = [keras.ops.convert_to_numpy(layer.kernel) / 1.1 for layer in gamodel.dense_layers(model)]
    x = np.random.default_rng(2).random((8, 784)).astype("float32")
    rows = diagnostics.probe(model, spec, x, np.zeros(8, "int32"), previous_kernels=before)
    np.testing.assert_allclose(rows["update_ratio"], 0.1, rtol=1e-4)


def test_probe_changes_neither_weights_nor_random_streams():
    spec = make_spec(depth=3, regularizer="dropout")
    model = gamodel.build(spec, packed=True, dropout=True)
    x = np.random.default_rng(2).random((32, 784)).astype("float32")
    y = np.arange(32, dtype="int32") % 10
    before = [keras.ops.convert_to_numpy(v).copy() for v in model.variables]
    diagnostics.probe(model, spec, x, y)
    after = [keras.ops.convert_to_numpy(v) for v in model.variables]
    assert any(isinstance(layer, gamodel.MemberDropout) for layer in model.layers)
    assert all(np.array_equal(a, b) for a, b in zip(before, after))  # RNG seed states included


def test_batch_norm_is_probed_on_batch_statistics_and_its_averages_stay():
    # Glorot + sigmoid at depth 5: the error signal all but vanishes on its way back to layer 1;
    # batch normalization, probed as it trains (on the batch's statistics), keeps most of it.
    x = np.random.default_rng(3).random((256, 784)).astype("float32")
    y = np.arange(256, dtype="int32") % 10
    ratios = {}
    for regularizer in ("none", "batch_norm"):
        spec = make_spec(depth=5, width=64, regularizer=regularizer)
        model = gamodel.build(spec)
        before = [keras.ops.convert_to_numpy(v).copy() for v in model.non_trainable_variables]
        ratios[regularizer] = diagnostics.run_measures(diagnostics.probe(model, spec, x, y), False)[
            "vanishing_ratio_init"
        ]
        after = [keras.ops.convert_to_numpy(v) for v in model.non_trainable_variables]
        assert all(np.array_equal(a, b) for a, b in zip(before, after))  # moving averages untouched
    assert ratios["batch_norm"] > 30 * ratios["none"], ratios


def test_a_non_finite_network_records_nan_not_dead_units():
    spec = make_spec(activation="relu")
    model = gamodel.build(spec)
    first = gamodel.dense_layers(model)[0]
    first.kernel.assign(np.full(first.kernel.shape, np.nan, dtype="float32"))
    x = np.random.default_rng(4).random((8, 784)).astype("float32")
    rows = diagnostics.probe(model, spec, x, np.zeros(8, "int32"))
    assert rows[diagnostics.STATS].isna().all().all()


def test_what_cannot_act_before_the_first_step_leaves_the_initial_probe_unchanged():
    # catalog.acts_before_first_step: penalties, constraints and dropout leave the probe at step 0 as it is
    x = np.random.default_rng(5).random((64, 784)).astype("float32")
    y = np.arange(64, dtype="int32") % 10
    probes = {
        r: diagnostics.probe(gamodel.build(make_spec(regularizer=r)), make_spec(regularizer=r), x, y)
        for r in ("none", "l2", "l1", "dropout", "max_norm", "batch_norm")
    }
    for regularizer, rows in probes.items():
        same = rows[diagnostics.STATS].equals(probes["none"][diagnostics.STATS])
        assert same == (not catalog.acts_before_first_step("regularizer", regularizer)), regularizer
