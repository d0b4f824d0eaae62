"""The technique catalog: every name a config may use, mapped to the Keras object it builds.

Adding a technique is one entry here plus a test. Every builder takes the technique's parameters
(from the config's `techniques:` section, merged over the defaults declared here) and returns a
Keras object; nothing is re-implemented that Keras already has. The entry also holds what others
read about it: each parameter's range (gradatlas.config checks the config against it) and, for a
regularizer, the per-member scalars it sets when members of one pack may differ in it
(gradatlas.packs, gradatlas.engine).
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable


class _Deferred:
    """A module imported on first use. The Snakefile reads names and defaults from this catalog on
    every start and in every cluster job step; importing Keras (and TensorFlow behind it) there
    would cost seconds each time for nothing. It also leaves the backend choice to the training."""

    def __init__(self, module: str):
        self._module = module

    def __getattr__(self, attr):
        return getattr(importlib.import_module(self._module), attr)


keras = _Deferred("keras")
ops = _Deferred("keras.ops")


@dataclass(frozen=True)
class Range:
    """The values a numeric parameter may take; a bound of None is no bound."""

    low: float | None = None
    low_open: bool = False
    high: float | None = None
    high_open: bool = False

    def __contains__(self, value) -> bool:
        above = self.low is None or value > self.low or (value == self.low and not self.low_open)
        below = self.high is None or value < self.high or (value == self.high and not self.high_open)
        return above and below

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low}"
        return f"in {'(' if self.low_open else '['}{self.low}, {self.high}{')' if self.high_open else ']'}"


POSITIVE, NON_NEGATIVE, FRACTION = Range(0, True), Range(0), Range(0, False, 1, True)  # (0, inf), [0, inf), [0, 1)


@dataclass(frozen=True)
class Entry:
    """One catalog name: what it builds, its default parameters, a one-line description, and the
    range of each parameter.

    `member_scalars` (regularizers only): the per-member scalars it sets (`MEMBER_SCALARS_OFF` names
    them), from its parameters. None: the regularizer changes the network, so every member of a pack
    must have it alike."""

    build: Callable[..., Any]
    defaults: dict = field(default_factory=dict)
    doc: str = ""
    ranges: dict[str, Range] = field(default_factory=dict)
    member_scalars: Callable[[dict], dict] | None = None


# --- initializers: build(params, seed) -> keras.initializers.Initializer -------------------------
INITIALIZERS: dict[str, Entry] = {
    "random_normal": Entry(
        lambda p, seed: keras.initializers.RandomNormal(stddev=p["stddev"], seed=seed),
        {"stddev": 1.0},
        "N(0, stddev^2) regardless of fan-in: the naive init that shows the problem",
        ranges={"stddev": POSITIVE},
    ),
    "glorot_uniform": Entry(
        lambda p, seed: keras.initializers.GlorotUniform(seed=seed), {}, "Glorot/Xavier, U, var 2/(fan_in+fan_out)"
    ),
    "glorot_normal": Entry(
        lambda p, seed: keras.initializers.GlorotNormal(seed=seed), {}, "Glorot/Xavier, truncated normal"
    ),
    "he_normal": Entry(lambda p, seed: keras.initializers.HeNormal(seed=seed), {}, "He, var 2/fan_in, normal"),
    "he_uniform": Entry(lambda p, seed: keras.initializers.HeUniform(seed=seed), {}, "He, var 2/fan_in, uniform"),
    "lecun_normal": Entry(
        lambda p, seed: keras.initializers.LecunNormal(seed=seed), {}, "LeCun, var 1/fan_in (for SELU)"
    ),
    "fan_in_normal": Entry(
        lambda p, seed: keras.initializers.VarianceScaling(1.0, "fan_in", "untruncated_normal", seed=seed),
        {},
        "N(0, 1/fan_in), untruncated (Nielsen's init; lecun_normal is the truncated variant)",
    ),
    "orthogonal": Entry(
        lambda p, seed: keras.initializers.Orthogonal(gain=p["gain"], seed=seed),
        {"gain": 1.0},
        "orthogonal matrix",
        ranges={"gain": POSITIVE},
    ),
}


# --- activations ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Activation:
    """An activation plus what the diagnostics need to know about it.

    `derivative(u)` is d act/d u at the activation's input u; `max_derivative` its supremum.
    For the ReLU family (`inactive_is_saturated`), a unit counts as saturated where it is
    inactive (u < 0), as the diagnostics contract asks.
    """

    build: Callable[[dict, str], Any]
    derivative: Callable[[Any, dict], Any]
    max_derivative: Callable[[dict], float]
    inactive_is_saturated: bool = False
    defaults: dict = field(default_factory=dict)
    doc: str = ""
    ranges: dict[str, Range] = field(default_factory=dict)


_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772, 1.0507009873554805


def _sigmoid_derivative(u, p):
    s = ops.sigmoid(u)
    return s * (1.0 - s)


def _exact_gelu(x):
    return keras.activations.gelu(x, approximate=False)


def _gelu_derivative(u, p):
    # exact GELU: u * Phi(u)  ->  Phi(u) + u * phi(u)
    cdf = 0.5 * (1.0 + ops.erf(u / math.sqrt(2.0)))
    pdf = ops.exp(-0.5 * u * u) / math.sqrt(2.0 * math.pi)
    return cdf + u * pdf


ACTIVATIONS: dict[str, Activation] = {
    "sigmoid": Activation(
        lambda p, name: keras.layers.Activation("sigmoid", name=name),
        _sigmoid_derivative,
        lambda p: 0.25,
        doc="saturating, max slope 1/4",
    ),
    "tanh": Activation(
        lambda p, name: keras.layers.Activation("tanh", name=name),
        lambda u, p: 1.0 - ops.tanh(u) ** 2,
        lambda p: 1.0,
        doc="saturating",
    ),
    "relu": Activation(
        lambda p, name: keras.layers.ReLU(name=name),
        lambda u, p: ops.cast(u > 0, u.dtype),
        lambda p: 1.0,
        inactive_is_saturated=True,
        doc="non-saturating for u > 0; units can die",
    ),
    "leaky_relu": Activation(
        lambda p, name: keras.layers.LeakyReLU(negative_slope=p["negative_slope"], name=name),
        lambda u, p: ops.where(u > 0, 1.0, p["negative_slope"]),
        lambda p: 1.0,
        inactive_is_saturated=True,
        defaults={"negative_slope": 0.2},
        doc="ReLU with a small slope for u < 0: cannot die",
        ranges={"negative_slope": NON_NEGATIVE},
    ),
    "elu": Activation(
        lambda p, name: keras.layers.ELU(alpha=p["alpha"], name=name),
        lambda u, p: ops.where(u > 0, 1.0, p["alpha"] * ops.exp(ops.minimum(u, 0.0))),
        lambda p: max(1.0, p["alpha"]),
        defaults={"alpha": 1.0},
        doc="smooth, negative outputs push the mean toward 0",
        ranges={"alpha": NON_NEGATIVE},
    ),
    "selu": Activation(
        lambda p, name: keras.layers.Activation("selu", name=name),
        lambda u, p: _SELU_SCALE * ops.where(u > 0, 1.0, _SELU_ALPHA * ops.exp(ops.minimum(u, 0.0))),
        lambda p: _SELU_SCALE * _SELU_ALPHA,
        doc="self-normalizing (with lecun_normal init)",
    ),
    "gelu": Activation(
        lambda p, name: keras.layers.Activation(_exact_gelu, name=name),
        _gelu_derivative,
        lambda p: 1.1289,  # sup of Phi(u) + u*phi(u), reached at u = sqrt(2)
        doc="smooth ReLU-like (Transformers)",
    ),
}


# --- optimizers: build(params, learning_rate, clip: dict) -> keras.optimizers.Optimizer -----------
def _opt(cls_name: str, **fixed):
    def build(p, learning_rate, clip):
        return getattr(keras.optimizers, cls_name)(learning_rate=learning_rate, **fixed, **p, **clip)

    return build


_BETAS = {"beta_1": FRACTION, "beta_2": FRACTION}
OPTIMIZERS: dict[str, Entry] = {
    "sgd": Entry(_opt("SGD"), {}, "plain mini-batch gradient descent"),
    "momentum": Entry(_opt("SGD"), {"momentum": 0.9}, "SGD with momentum", {"momentum": FRACTION}),
    "nesterov": Entry(
        _opt("SGD", nesterov=True), {"momentum": 0.9}, "Nesterov accelerated gradient", {"momentum": FRACTION}
    ),
    "adagrad": Entry(_opt("Adagrad"), {}, "AdaGrad"),
    "rmsprop": Entry(_opt("RMSprop"), {"rho": 0.9}, "RMSProp", {"rho": FRACTION}),
    "adam": Entry(_opt("Adam"), {"beta_1": 0.9, "beta_2": 0.999}, "Adam", _BETAS),
    "nadam": Entry(_opt("Nadam"), {"beta_1": 0.9, "beta_2": 0.999}, "Adam with Nesterov momentum", _BETAS),
    "adamw": Entry(
        _opt("AdamW"), {"weight_decay": 0.004}, "Adam with decoupled weight decay", {"weight_decay": NON_NEGATIVE}
    ),
}


# --- regularizers: what each adds to a hidden Dense block ----------------------------------------
@dataclass(frozen=True)
class Regularization:
    """How one regularizer changes a hidden block Dense -> [BatchNorm] -> activation -> [Dropout]."""

    kernel_regularizer: Any = None
    kernel_constraint: Any = None
    dropout_rate: float = 0.0
    batch_norm_momentum: float | None = None  # None: no batch normalization


# The per-member scalars of a pack (gradatlas.engine) and the value that turns each off exactly (+ 0,
# where(inf)), which a member gets for every scalar its regularizer does not set.
MEMBER_SCALARS_OFF = {"l1": 0.0, "l2": 0.0, "max_norm": math.inf}

REGULARIZERS: dict[str, Entry] = {
    "none": Entry(lambda p: Regularization(), {}, "no regularization", member_scalars=lambda p: {}),
    "l1": Entry(
        lambda p: Regularization(kernel_regularizer=keras.regularizers.L1(p["factor"])),
        {"factor": 1e-5},
        ranges={"factor": NON_NEGATIVE},
        member_scalars=lambda p: {"l1": p["factor"]},
    ),
    "l2": Entry(
        lambda p: Regularization(kernel_regularizer=keras.regularizers.L2(p["factor"])),
        {"factor": 1e-4},
        ranges={"factor": NON_NEGATIVE},
        member_scalars=lambda p: {"l2": p["factor"]},
    ),
    "l1_l2": Entry(
        lambda p: Regularization(kernel_regularizer=keras.regularizers.L1L2(l1=p["l1"], l2=p["l2"])),
        {"l1": 1e-5, "l2": 1e-4},
        ranges={"l1": NON_NEGATIVE, "l2": NON_NEGATIVE},
        member_scalars=lambda p: {"l1": p["l1"], "l2": p["l2"]},
    ),
    # its rate is per member too, held by the packed network's own layers (model.MemberDropout)
    "dropout": Entry(
        lambda p: Regularization(dropout_rate=p["rate"]),
        {"rate": 0.2},
        ranges={"rate": FRACTION},
        member_scalars=lambda p: {},
    ),
    "max_norm": Entry(
        lambda p: Regularization(kernel_constraint=keras.constraints.MaxNorm(max_value=p["max_value"])),
        {"max_value": 3.0},
        ranges={"max_value": POSITIVE},
        member_scalars=lambda p: {"max_norm": p["max_value"]},
    ),
    "batch_norm": Entry(
        lambda p: Regularization(batch_norm_momentum=p["momentum"]),
        {"momentum": 0.99},
        "batch normalization before each activation; moving averages at evaluation",
        {"momentum": FRACTION},
    ),
}


# --- learning-rate schedules: build(params, learning_rate, steps_per_epoch, epochs) ---------------
LR_SCHEDULES: dict[str, Entry] = {
    "constant": Entry(lambda p, lr, spe, epochs: lr, {}, "fixed learning rate"),
    # alpha = alpha0 / (1 + k * epoch): InverseTimeDecay counts steps, so one decay step = one epoch
    "inverse_time": Entry(
        lambda p, lr, spe, epochs: keras.optimizers.schedules.InverseTimeDecay(lr, spe, p["k"]),
        {"k": 0.5},
        "alpha0 / (1 + k * epoch)",
        {"k": NON_NEGATIVE},
    ),
    "exponential": Entry(
        lambda p, lr, spe, epochs: keras.optimizers.schedules.ExponentialDecay(lr, spe, p["rate"]),
        {"rate": 0.8},
        "alpha0 * rate ** epoch",
        {"rate": POSITIVE},
    ),
    "cosine": Entry(
        lambda p, lr, spe, epochs: keras.optimizers.schedules.CosineDecay(lr, spe * epochs, alpha=p["alpha"]),
        {"alpha": 0.0},
        "cosine decay to alpha * alpha0 over the training",
        {"alpha": Range(0, False, 1, False)},
    ),
}


# What can act before the first update. The probe at step 0 sees the initial network on a fixed batch
# with dropout off; penalties, constraints, optimizers, schedules and clipping act only through
# updates. So runs that differ only in these axes, or in a regularizer that leaves the network as it
# is, start from identical networks and identical probes (tests/test_diagnostics.py checks it).
INERT_BEFORE_FIRST_STEP = ("optimizer", "learning_rate", "lr_schedule", "batch_size", "clipnorm", "clipvalue")
REGULARIZERS_CHANGING_THE_NETWORK = ("batch_norm",)


def acts_before_first_step(axis: str, level) -> bool:
    """Whether `level` of grid axis `axis` can change a run's initial network or its first probe."""
    if axis in INERT_BEFORE_FIRST_STEP:
        return False
    if axis == "regularizer":
        return str(level) in REGULARIZERS_CHANGING_THE_NETWORK
    return True


CATALOG: dict[str, dict] = {
    "initializer": INITIALIZERS,
    "activation": ACTIVATIONS,
    "optimizer": OPTIMIZERS,
    "regularizer": REGULARIZERS,
    "lr_schedule": LR_SCHEDULES,
}


def params(kind: str, name: str, overrides: dict | None = None) -> dict:
    """The parameters of one technique: its defaults updated by the config's `techniques.<name>`."""
    entry = CATALOG[kind][name]
    merged = dict(entry.defaults)
    merged.update(overrides or {})
    return merged


def initializer(name: str, p: dict, seed: int):
    return INITIALIZERS[name].build(p, seed)


def activation_layer(name: str, p: dict, layer_name: str):
    return ACTIVATIONS[name].build(p, layer_name)


def optimizer(name: str, p: dict, learning_rate, clipnorm=None, clipvalue=None):
    clip = {k: v for k, v in (("clipnorm", clipnorm), ("clipvalue", clipvalue)) if v is not None}
    return OPTIMIZERS[name].build(p, learning_rate, clip)


def regularization(name: str, p: dict) -> Regularization:
    return REGULARIZERS[name].build(p)


def member_scalars(name: str, p: dict) -> dict:
    """The per-member scalars of regularizer `name` with parameters `p`, every one it does not set off."""
    scalars = REGULARIZERS[name].member_scalars
    return MEMBER_SCALARS_OFF | ({k: float(v) for k, v in scalars(p).items()} if scalars else {})


def lr_schedule(name: str, p: dict, learning_rate: float, steps_per_epoch: int, epochs: int):
    return LR_SCHEDULES[name].build(p, learning_rate, steps_per_epoch, epochs)
