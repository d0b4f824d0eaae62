"""Vanishing gradients at init (Nielsen, *Neural Networks and Deep Learning*, ch. 5).

Sigmoid nets 784-[30]xk-10, weights N(0, 1/n_in), biases N(0, 1); per hidden layer, the norm of
the bias gradient averaged over the first 1,000 training images, at init.

Two output heads are measured on the same networks:
- `gradatlas`: GradAtlas' own convention (linear logits, softmax cross-entropy), measured with the
  project's diagnostics probe (`diagnostics.probe_program`, the program the training engine runs,
  over the seeds' networks stacked as one pack; its `delta_norm` is this norm);
- `nielsen`: his exact setup (sigmoid output units, per-unit cross-entropy C = -sum[y ln a + (1-y) ln(1-a)]),
  by a plain numpy backward pass over the same weights.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd

from gradatlas import backend, catalog

# the norms he prints (hidden layer 1 first), by number of hidden layers
PUBLISHED = {2: [0.07, 0.31], 3: [0.012, 0.060, 0.283], 4: [0.003, 0.017, 0.070, 0.285]}
HEADS = ("gradatlas", "nielsen")


def build(hidden_layers: int, width: int, seed: int):
    """784-[width]x hidden_layers-10 sigmoid net, W ~ N(0, 1/n_in) (catalog `fan_in_normal`), b ~ N(0, 1).

    The output Dense is linear: the head (softmax or sigmoid) is applied by the loss.
    """
    import keras

    from gradatlas.model import LAYER_SLOTS, SEED_LIMIT, layer_seed

    layers = [keras.Input((784,), name="pixels")]
    units = [width] * hidden_layers + [10]
    for i, n in enumerate(units, start=1):
        # the training's per-layer seed (in uint32 range for every seed the schema accepts); the bias
        # draws LAYER_SLOTS on from it: seed * 1000 + 500 + i, as before, for every seed up to 4,294,966
        kernel_seed = layer_seed(seed, i)
        layers.append(
            keras.layers.Dense(
                n,
                kernel_initializer=catalog.initializer("fan_in_normal", {}, kernel_seed),
                bias_initializer=keras.initializers.RandomNormal(
                    stddev=1.0, seed=(kernel_seed + LAYER_SLOTS) % SEED_LIMIT
                ),
                name="output" if i == len(units) else f"dense_{i}",
            )
        )
        if i < len(units):
            layers.append(catalog.activation_layer("sigmoid", {}, f"activation_{i}"))
    return keras.Sequential(layers, name=f"nielsen_{hidden_layers}")


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def mean_bias_gradients(model, x: np.ndarray, y: np.ndarray, head: str) -> list[np.ndarray]:
    """dC/db per Dense layer, averaged over the batch, by a numpy forward and backward pass.

    head `nielsen`: sigmoid outputs with per-unit cross-entropy (output error a - y);
    head `gradatlas`: softmax cross-entropy on linear logits (output error softmax - y).
    """
    import keras

    from gradatlas.model import dense_layers

    params = [
        (keras.ops.convert_to_numpy(d.kernel).astype(np.float64), keras.ops.convert_to_numpy(d.bias).astype(np.float64))
        for d in dense_layers(model)
    ]
    a, zs = x.astype(np.float64), []
    for w, b in params:
        z = a @ w + b
        zs.append(z)
        a = _sigmoid(z)
    onehot = np.eye(params[-1][0].shape[1])[y]
    logits = zs[-1]
    if head == "nielsen":
        delta = _sigmoid(logits) - onehot
    elif head == "gradatlas":
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        delta = e / e.sum(axis=1, keepdims=True) - onehot
    else:
        raise ValueError(f"unknown head {head!r}; allowed: {', '.join(HEADS)}")
    deltas = [delta]
    for (w, _), z in zip(reversed(params[1:]), reversed(zs[:-1])):
        s = _sigmoid(z)
        delta = (delta @ w.T) * s * (1 - s)
        deltas.append(delta)
    return [d.mean(axis=0) for d in reversed(deltas)]


def probe_norms(models: list, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(members, Dense layers): ||mean over the batch of dL/dz|| at init, by the diagnostics probe
    (`delta_norm`) of the members' networks stacked as one pack (one compiled, vectorized program).

    The TensorFlow backend vectorizes packs of one only, so there each network is probed alone."""
    import keras

    from gradatlas import diagnostics

    ops = keras.ops
    template = models[0]
    variables = template.trainable_variables
    kernels = diagnostics.kernel_index(template)
    # the probe reads the activation from the spec: every network here is sigmoid
    spec = SimpleNamespace(activation="sigmoid", activation_params=catalog.params("activation", "sigmoid"))
    probe = backend.jit(diagnostics.probe_program(template, kernels, spec))
    x, y = ops.convert_to_tensor(x), ops.convert_to_tensor(y)
    at_once = len(models) if backend.packs(backend.name()) else 1  # one vectorized probe of every network
    out = []
    for start in range(0, len(models), at_once):
        pack = models[start : start + at_once]
        trainable = [
            ops.convert_to_tensor(np.stack([ops.convert_to_numpy(m.trainable_variables[i]) for m in pack]))
            for i in range(len(variables))
        ]
        stats, _ = probe(trainable, [], [trainable[i] for i in kernels], x, y)  # (stats, spreads for the percentiles)
        out.append(ops.convert_to_numpy(stats["delta_norm"]))
    return np.concatenate(out)


def gradient_norms(x: np.ndarray, y: np.ndarray, depths, width: int, seeds) -> pd.DataFrame:
    """One row per (hidden_layers, seed, head, hidden layer): the norm of the mean bias gradient."""
    rows = []
    for k in depths:
        models = [build(k, width, seed) for seed in seeds]
        probed = probe_norms(models, x, y)
        for seed, model, probe in zip(seeds, models, probed):
            for head in HEADS:
                norms = [float(np.linalg.norm(g)) for g in mean_bias_gradients(model, x, y, head)]
                for layer in range(1, k + 1):
                    rows.append(
                        {
                            "hidden_layers": k,
                            "seed": seed,
                            "head": head,
                            "layer": layer,
                            "norm": norms[layer - 1],
                            "probe_norm": float(probe[layer - 1]) if head == "gradatlas" else math.nan,
                        }
                    )
    return pd.DataFrame(rows)


def geometric_mean(values) -> float:
    values = np.asarray(values, dtype=float)
    return float(np.exp(np.mean(np.log(values))))


def assess(norms: pd.DataFrame, adjacent=(3.0, 7.0), first_last_factor=3.0) -> pd.DataFrame:
    """Per (head, hidden_layers): our norms (geometric mean over seeds) against his, and the verdict.

    Reproduced means every adjacent-layer ratio norm(l+1)/norm(l) lies in `adjacent` and our
    first/last ratio is within `first_last_factor` of his.
    """
    out = []
    for (head, k), g in norms.groupby(["head", "hidden_layers"]):
        ours = g.groupby("layer")["norm"].apply(geometric_mean).sort_index().to_numpy()
        his = np.array(PUBLISHED[k]) if k in PUBLISHED else None
        ratios = ours[1:] / ours[:-1]
        first_last = ours[0] / ours[-1]
        his_first_last = his[0] / his[-1] if his is not None else math.nan
        per_seed = []
        for _, s in g.groupby("seed"):
            n = s.sort_values("layer")["norm"].to_numpy()
            r = n[1:] / n[:-1]
            per_seed.append(
                bool(
                    np.all((r >= adjacent[0]) & (r <= adjacent[1]))
                    and abs(math.log((n[0] / n[-1]) / his_first_last)) <= math.log(first_last_factor)
                )
            )
        ok_adjacent = bool(np.all((ratios >= adjacent[0]) & (ratios <= adjacent[1])))
        ok_first_last = bool(abs(math.log(first_last / his_first_last)) <= math.log(first_last_factor))
        out.append(
            {
                "head": head,
                "hidden_layers": k,
                "seeds": g["seed"].nunique(),
                "ours": [float(v) for v in ours],
                "published": [float(v) for v in his] if his is not None else None,
                "adjacent_ratios": [float(v) for v in ratios],
                "published_adjacent_ratios": [float(v) for v in his[1:] / his[:-1]] if his is not None else None,
                "first_last": float(first_last),
                "published_first_last": float(his_first_last),
                "adjacent_ok": ok_adjacent,
                "first_last_ok": ok_first_last,
                "reproduced": ok_adjacent and ok_first_last,
                "seeds_reproduced": int(sum(per_seed)),
            }
        )
    return pd.DataFrame(out)
