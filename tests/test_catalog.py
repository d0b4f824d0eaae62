"""The technique catalog: every name builds, and the initializers have the variances their papers give."""

import math

import keras
import numpy as np
import pytest

from gradatlas import catalog, grid

FAN_IN, FAN_OUT = 784, 300


@pytest.mark.parametrize("name", sorted(catalog.INITIALIZERS))
def test_every_initializer_builds_seeded_and_reproducible(name):
    p = catalog.params("initializer", name)
    a = keras.ops.convert_to_numpy(catalog.initializer(name, p, seed=3)((FAN_IN, FAN_OUT)))
    b = keras.ops.convert_to_numpy(catalog.initializer(name, p, seed=3)((FAN_IN, FAN_OUT)))
    assert a.shape == (FAN_IN, FAN_OUT) and np.array_equal(a, b)


@pytest.mark.parametrize(
    "name, expected_variance",
    [
        ("random_normal", 1.0),
        ("glorot_uniform", 2 / (FAN_IN + FAN_OUT)),
        ("glorot_normal", 2 / (FAN_IN + FAN_OUT)),
        ("he_normal", 2 / FAN_IN),
        ("he_uniform", 2 / FAN_IN),
        ("lecun_normal", 1 / FAN_IN),
        ("orthogonal", 1 / FAN_IN),  # orthonormal columns of a 784-row matrix: entries of variance 1/784
    ],
)
def test_initializer_variance_matches_its_formula(name, expected_variance):
    w = keras.ops.convert_to_numpy(catalog.initializer(name, catalog.params("initializer", name), 0)((FAN_IN, FAN_OUT)))
    assert w.var() == pytest.approx(expected_variance, rel=0.05)
    assert abs(w.mean()) < 0.05 * math.sqrt(expected_variance)


def test_random_normal_stddev_is_configurable():
    w = catalog.initializer("random_normal", catalog.params("initializer", "random_normal", {"stddev": 0.1}), 0)(
        (500, 500)
    )
    assert keras.ops.convert_to_numpy(w).std() == pytest.approx(0.1, rel=0.02)


@pytest.mark.parametrize("name", sorted(catalog.ACTIVATIONS))
def test_activation_derivative_matches_finite_differences(name):
    act = catalog.ACTIVATIONS[name]
    p = catalog.params("activation", name)
    layer = catalog.activation_layer(name, p, f"act_{name}")
    u = np.linspace(-6, 6, 241).astype("float64")
    h = 1e-4

    def f(v):
        return keras.ops.convert_to_numpy(layer(keras.ops.convert_to_tensor(v.astype("float32")))).astype("float64")

    numeric = (f(u + h) - f(u - h)) / (2 * h)
    analytic = keras.ops.convert_to_numpy(act.derivative(keras.ops.convert_to_tensor(u.astype("float32")), p))
    keep = np.abs(u) > 1e-2  # the ReLU family's kink
    np.testing.assert_allclose(analytic[keep], numeric[keep], atol=2e-2)
    assert analytic.max() <= act.max_derivative(p) + 1e-4


@pytest.mark.parametrize("name", sorted(catalog.OPTIMIZERS))
def test_every_optimizer_builds_with_clipping(name):
    opt = catalog.optimizer(name, catalog.params("optimizer", name), 0.01, clipnorm=1.0)
    assert isinstance(opt, keras.optimizers.Optimizer)
    assert opt.clipnorm == 1.0


def test_momentum_and_nesterov_are_sgd_variants():
    m = catalog.optimizer("momentum", catalog.params("optimizer", "momentum"), 0.01)
    n = catalog.optimizer("nesterov", catalog.params("optimizer", "nesterov"), 0.01)
    assert m.momentum == 0.9 and not m.nesterov and n.nesterov


@pytest.mark.parametrize("name", sorted(catalog.REGULARIZERS))
def test_every_regularizer_builds(name):
    reg = catalog.regularization(name, catalog.params("regularizer", name))
    assert isinstance(reg, catalog.Regularization)


def test_regularizer_parameters_come_from_config():
    reg = catalog.regularization("dropout", catalog.params("regularizer", "dropout", {"rate": 0.5}))
    assert reg.dropout_rate == 0.5
    bn = catalog.regularization("batch_norm", catalog.params("regularizer", "batch_norm", {"momentum": 0.9}))
    assert bn.batch_norm_momentum == 0.9
    mn = catalog.regularization("max_norm", catalog.params("regularizer", "max_norm"))
    assert isinstance(mn.kernel_constraint, keras.constraints.MaxNorm)


def test_inverse_time_schedule_is_alpha0_over_one_plus_k_epoch():
    steps_per_epoch, k, lr = 50, 0.5, 0.1
    schedule = catalog.lr_schedule("inverse_time", {"k": k}, lr, steps_per_epoch, epochs=10)
    for epoch in range(5):
        got = float(keras.ops.convert_to_numpy(schedule(epoch * steps_per_epoch)))
        assert got == pytest.approx(lr / (1 + k * epoch), rel=1e-5)


@pytest.mark.parametrize("name", sorted(catalog.LR_SCHEDULES))
def test_every_schedule_starts_at_alpha0(name):
    schedule = catalog.lr_schedule(name, catalog.params("lr_schedule", name), 0.01, 10, 5)
    value = schedule if isinstance(schedule, float) else float(keras.ops.convert_to_numpy(schedule(0)))
    assert value == pytest.approx(0.01)


def test_issue_seed_techniques_are_all_in_the_catalog():
    wanted = {
        "initializer": "random_normal glorot_uniform glorot_normal he_normal he_uniform lecun_normal orthogonal",
        "activation": "sigmoid tanh relu leaky_relu elu selu gelu",
        "optimizer": "sgd momentum nesterov adagrad rmsprop adam nadam adamw",
        "regularizer": "none l1 l2 l1_l2 dropout max_norm batch_norm",
        "lr_schedule": "constant inverse_time exponential cosine",
    }
    for kind, names in wanted.items():
        assert set(names.split()) <= set(catalog.CATALOG[kind]), kind


ENTRIES = [(kind, name, entry) for kind, section in catalog.CATALOG.items() for name, entry in section.items()]


@pytest.mark.parametrize("kind, name, entry", ENTRIES, ids=[f"{k}.{n}" for k, n, _ in ENTRIES])
def test_every_parameter_has_a_range_that_holds_its_default(kind, name, entry):
    """The entry is the one place a parameter is declared: gradatlas.config checks against these ranges."""
    assert set(entry.ranges) == set(entry.defaults), f"{kind} {name}: ranges for {sorted(entry.ranges)}"
    for param, allowed in entry.ranges.items():
        assert isinstance(allowed, catalog.Range) and entry.defaults[param] in allowed, (param, str(allowed))


def test_ranges_include_and_exclude_their_bounds_as_declared():
    assert 0 in catalog.FRACTION and 1 not in catalog.FRACTION and 0 not in catalog.POSITIVE and 1e9 in catalog.POSITIVE
    assert -1e-9 not in catalog.NON_NEGATIVE and 1 in catalog.Range(0, False, 1, False)
    assert [str(r) for r in (catalog.POSITIVE, catalog.FRACTION)] == ["> 0", "in [0, 1)"]


@pytest.mark.parametrize("name", sorted(catalog.REGULARIZERS))
def test_member_scalars_are_what_the_regularizer_builds(name):
    """What a packed member gets per member (gradatlas.engine) equals what Keras applies in a lone run."""
    p = {k: v * 3 for k, v in catalog.params("regularizer", name).items()}  # not the defaults
    reg = catalog.regularization(name, p)
    scalars = catalog.member_scalars(name, p)
    assert set(scalars) == set(catalog.MEMBER_SCALARS_OFF)
    penalty, constraint = reg.kernel_regularizer, reg.kernel_constraint
    assert scalars["l1"] == pytest.approx(float(getattr(penalty, "l1", 0.0) or 0.0))
    assert scalars["l2"] == pytest.approx(float(getattr(penalty, "l2", 0.0) or 0.0))
    assert scalars["max_norm"] == (constraint.max_value if constraint is not None else math.inf)
    # a regularizer that is no per-member scalar must change the network (graph), else packs split for nothing
    per_member = catalog.REGULARIZERS[name].member_scalars is not None
    assert per_member == (reg.batch_norm_momentum is None)


def test_packs_and_the_engine_read_per_member_regularizers_from_the_catalog():
    from gradatlas import config as gaconfig, engine, packs

    assert packs.SCALAR_REGULARIZERS == tuple(
        n for n, e in catalog.REGULARIZERS.items() if e.member_scalars is not None
    )
    assert "batch_norm" not in packs.SCALAR_REGULARIZERS and "l1_l2" in packs.SCALAR_REGULARIZERS
    config = gaconfig.check(
        gaconfig.validate_schema(
            {
                "data": {"source": "bundled"},
                "seeds": [0],
                "techniques": {"l1_l2": {"l1": 0.25, "l2": 0.5}},
                "grid": {
                    "initializer": ["he_normal"],
                    "activation": ["relu"],
                    "optimizer": ["sgd"],
                    "regularizer": ["l1_l2"],
                },
            }
        )
    )
    cell = {"initializer": "he_normal", "activation": "relu", "optimizer": "sgd", "regularizer": "l1_l2", "seed": 0}
    scalars = engine.member_scalars(grid.run_spec(config, cell))
    assert scalars == {"l1": 0.25, "l2": 0.5, "max_norm": math.inf, "clipnorm": math.inf, "clipvalue": math.inf}
