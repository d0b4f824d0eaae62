"""Per-layer gradient and activation diagnostics, probed by the training engine.

On a fixed probe batch (the first `probe_size` training images), at step 0 (before any update), at
a few early steps and at the end of every epoch, for every Dense layer l (1 = nearest the input,
the output layer last), L the mean cross-entropy over the batch (data loss only, so techniques
compare on the same quantity):

- grad_w_norm   ||dL/dW_l||_F
- delta_norm    ||mean over the batch of dL_i/dz_l|| (the bias gradient's norm; ~0 before BN,
                which removes the mean)
- delta_rms     root mean square of the per-sample error signal dL_i/dz_l
- delta_p05/p50/p95   percentiles of |dL_i/dz_l| over samples x units
- weight_norm   ||W_l||_F
- update_ratio  ||W_l(t) - W_l(previous probe)|| / ||W_l(previous probe)||
- act_mean, act_std, act_p05/p50/p95   of the block's output (the logits for the output layer)
- saturated_frac  saturating activations (sigmoid, tanh, ELU, SELU, GELU): share of (sample, unit)
                  pairs whose derivative is below 5% of its maximum
- inactive_frac   ReLU family: share of (sample, unit) pairs with u < 0
- dead_frac       share of units whose derivative is ~0 for every probe sample

Keras is imported inside the functions that run the probe: the tables' column lists here are read
by aggregation and the report, which need no deep-learning runtime.

The probe runs the network as training does (batch normalization on the probe batch's own
statistics, moving averages untouched) but with dropout off; it draws no random numbers and
changes no variable. A probe of a non-finite (diverged) network records NaN everywhere.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from gradatlas import backend, catalog, outcomes

SATURATION_LEVEL = 0.05  # of the derivative's maximum
DEAD_LEVEL = 1e-3  # "~0": below this fraction of the derivative's maximum
QUANTILES = (0.05, 0.5, 0.95)
PERCENTILE_STATS = [f"{kind}_p{round(q * 100):02d}" for kind in ("act", "delta") for q in QUANTILES]
STATS = [
    "grad_w_norm",
    "delta_norm",
    "delta_rms",
    "delta_p05",
    "delta_p50",
    "delta_p95",
    "weight_norm",
    "update_ratio",
    "act_mean",
    "act_std",
    "act_p05",
    "act_p50",
    "act_p95",
    "saturated_frac",
    "inactive_frac",
    "dead_frac",
]
COLUMNS = ["step", "epoch", "phase", "layer", "layer_kind", "units", *STATS]


def probe_program(model, kernels: list[int], spec):
    """The probe of a whole pack: f(trainable, non_trainable, prev_kernels, x, y) -> (stats, spreads) for
    `backend.jit`, where stats = {stat: (K, layers), "finite": (K,)} and spreads = {"act" |
    "delta": per layer (K, samples x units)}, the values `percentiles` summarizes. `kernels` index
    the Dense kernels in the trainable variables; `spec` gives the activation (one per pack)."""
    import keras

    from gradatlas.model import dense_layers, probe_forward

    ops = keras.ops
    act = catalog.ACTIVATIONS[spec.activation]
    params = spec.activation_params
    peak = act.max_derivative(params)
    units = [layer.units for layer in dense_layers(model)]
    n_trainable = len(model.trainable_variables)

    def member(trainable, non_trainable, prev, x, y):
        n = ops.shape(x)[0]

        def loss_fn(values):
            mapping = list(zip(model.trainable_variables, values[:n_trainable])) + list(
                zip(model.non_trainable_variables, non_trainable)
            )
            with keras.StatelessScope(state_mapping=mapping):
                logits, records = probe_forward(model, x, values[n_trainable:])
            loss = ops.mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
            return loss, records

        zeros = [ops.zeros((n, u)) for u in units]
        (_, records), grads = backend.value_and_grad(loss_fn)(list(trainable) + zeros)
        dz = grads[n_trainable:]
        out = {name: [] for name in STATS if name not in PERCENTILE_STATS}
        spreads = {"act": [], "delta": []}
        nan = ops.convert_to_tensor(math.nan)
        for j, (rec, delta, i) in enumerate(zip(records, dz, kernels)):
            w, signal = trainable[i], delta * ops.cast(n, delta.dtype)  # the per-sample signal dL_i/dz
            out["grad_w_norm"].append(ops.norm(ops.reshape(grads[i], (-1,))))
            out["delta_norm"].append(ops.norm(ops.sum(delta, axis=0)))
            out["delta_rms"].append(ops.sqrt(ops.mean(ops.square(signal))))
            spreads["delta"].append(ops.reshape(ops.abs(signal), (-1,)))
            before = ops.norm(ops.reshape(prev[j], (-1,)))
            out["weight_norm"].append(ops.norm(ops.reshape(w, (-1,))))
            out["update_ratio"].append(ops.norm(ops.reshape(w - prev[j], (-1,))) / ops.maximum(before, 1e-30))
            a = rec["a"]
            out["act_mean"].append(ops.mean(a))
            out["act_std"].append(ops.std(a))
            spreads["act"].append(ops.reshape(a, (-1,)))
            if j < len(records) - 1:
                slope = act.derivative(rec["u"], params)
                out["saturated_frac"].append(ops.mean(ops.cast(slope < SATURATION_LEVEL * peak, "float32")))
                out["inactive_frac"].append(ops.mean(ops.cast(rec["u"] < 0, "float32")))
                flat = ops.all(ops.abs(slope) < DEAD_LEVEL * peak, axis=0)
                out["dead_frac"].append(ops.mean(ops.cast(flat, "float32")))
            else:  # the output layer has no activation
                for name in ("saturated_frac", "inactive_frac", "dead_frac"):
                    out[name].append(nan)
        stats = {name: ops.stack([ops.cast(v, "float32") for v in values]) for name, values in out.items()}
        stats["finite"] = ops.all(ops.stack([ops.all(ops.isfinite(v)) for v in trainable]))
        return stats, spreads

    return backend.vmap(member, in_axes=(0, 0, 0, None, None))


def percentiles(out) -> dict:
    """The probe's numpy stats with act_pXX / delta_pXX added: exact percentiles, computed on the
    host (XLA's sort made them 95% of the probe's cost). numpy sorts the rows first: its vectorized
    sort and a selection on sorted rows take a third of the time of the selection alone, and select
    the same values."""
    import keras

    stats, spreads = keras.tree.map_structure(keras.ops.convert_to_numpy, out)
    for kind, layers in spreads.items():
        at = np.stack(
            [np.percentile(np.sort(values, axis=1), [q * 100 for q in QUANTILES], axis=1) for values in layers],
            axis=-1,
        )
        for i, q in enumerate(QUANTILES):  # at: (quantile, K, layer)
            stats[f"{kind}_p{round(q * 100):02d}"] = at[i]
    return stats


def rows(
    stats: dict, k: int, step: int, epoch: float, phase: str, spec, units: list[int], first: bool, finite: bool = True
) -> list[dict]:
    """The per-layer rows of member `k` of one probe (numpy `stats` from `probe_program`);
    `units`: the Dense layers' widths; `first`: no earlier probe (no update ratio)."""
    relu_family = catalog.ACTIVATIONS[spec.activation].inactive_is_saturated
    finite = finite and bool(stats["finite"][k])
    n_layers = len(units)
    out = []
    for j in range(n_layers):
        hidden = j < n_layers - 1
        row = {
            "step": int(step),
            "epoch": float(epoch),
            "phase": phase,
            "layer": j + 1,
            "layer_kind": "hidden" if hidden else "output",
            "units": int(units[j]),
        }
        for name in STATS:
            row[name] = float(stats[name][k, j]) if finite else math.nan
        if first:
            row["update_ratio"] = math.nan
        # each activation family has its own measure of flat units: never mixed in one column
        row["saturated_frac" if relu_family else "inactive_frac"] = math.nan
        out.append(row)
    return out


def kernel_index(model) -> list[int]:
    """Where each Dense layer's kernel is among the model's trainable variables."""
    from gradatlas.model import dense_layers

    variables = model.trainable_variables
    return [next(i for i, v in enumerate(variables) if v is layer.kernel) for layer in dense_layers(model)]


def probe(model, spec, x, y, previous_kernels=None) -> pd.DataFrame:
    """The rows of one probe of one built network (a pack of one) on the batch (x, y): what the
    engine records, for tests and the study presets. `previous_kernels`: for the update ratio."""
    import keras

    from gradatlas.model import dense_layers

    ops = keras.ops
    kernels = kernel_index(model)
    trainable = [ops.expand_dims(v.value, 0) for v in model.trainable_variables]
    non_trainable = [ops.expand_dims(v.value, 0) for v in model.non_trainable_variables]
    prev = (
        [ops.expand_dims(ops.convert_to_tensor(w), 0) for w in previous_kernels]
        if previous_kernels is not None
        else [trainable[i] for i in kernels]
    )
    program = backend.jit(probe_program(model, kernels, spec))
    stats = percentiles(program(trainable, non_trainable, prev, ops.convert_to_tensor(x), ops.convert_to_tensor(y)))
    units = [layer.units for layer in dense_layers(model)]
    return frame(rows(stats, 0, 0, 0.0, "init", spec, units, first=previous_kernels is None))


def frame(records: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(records, columns=COLUMNS)
    return df.astype({"step": "int64", "layer": "int64", "units": "int64"})


def run_measures(diag: pd.DataFrame, diverged: bool) -> dict:
    """Every run-level measure derived from a run's diagnostics (`outcomes.RUN_MEASURES`): the one place.

    At the first probe (init, before any update), the end of epoch 1 (epoch1) and the last probe
    (final):
    - vanishing_ratio_<when>: delta_rms of layer 1 over that of the output layer: how much of the
      error signal reaches the input layer (< 1: it shrinks on the way back, > 1: it grows); NaN
      without two layers or at a non-finite probe;
    - <saturated|inactive|dead>_frac_<when>: mean over the hidden layers (NaN where the activation
      family does not define it, and at a non-finite probe);
    - health_<when> (init, final): the verdict, `outcomes.health_class`; a diverged run is
      "diverged" after training, and a probe of a non-finite network is "diverged" at init.
    """
    out = {}
    probes = {"init": diag["step"].min(), "final": diag["step"].max()} if len(diag) else {}
    epochs = diag.loc[diag["phase"] == "epoch", "step"] if len(diag) else pd.Series(dtype=int)
    if len(epochs):
        probes["epoch1"] = epochs.min()
    for when in (*outcomes.HEALTH_WHEN, "epoch1"):
        at = (
            diag[diag["step"] == probes[when]].drop_duplicates("layer", keep="last")
            if when in probes
            else diag.iloc[:0]
        )
        delta = at.set_index("layer")["delta_rms"]
        finite = len(at) > 0 and bool(np.isfinite(delta).all())
        hidden = at[at["layer_kind"] == "hidden"]
        fractions = {
            name: float(hidden[name].mean()) if finite and hidden[name].notna().any() else math.nan
            for name in outcomes.UNIT_FRACTIONS
        }
        out |= {f"{name}_{when}": value for name, value in fractions.items()}
        if when == "epoch1":
            continue
        last = delta.loc[delta.index.max()] if finite and len(delta) >= 2 else math.nan
        ratio = float(delta.loc[1] / last) if last > 0 else math.nan
        out[f"vanishing_ratio_{when}"] = ratio
        broken = (when == "final" and diverged) or (len(at) > 0 and not finite)
        out[f"health_{when}"] = outcomes.health_class(
            ratio, fractions["saturated_frac"], fractions["dead_frac"], broken
        )
    return {name: out[name] for name in outcomes.RUN_MEASURES}
