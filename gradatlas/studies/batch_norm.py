"""Batch normalization (Ioffe & Szegedy 2015, section 4.1) on MNIST.

784-100-100-100-10 sigmoid network, small Gaussian init, mini-batches of 60, with and without
batch normalization. Every `eval_every` steps: the test accuracy and the 15th/50th/85th
percentiles of one sigmoid's input (unit `unit` of the last hidden layer; after batch
normalization where there is one) over a fixed batch of test images, in inference mode.
"""

from __future__ import annotations

import math
import time

import keras
import numpy as np
import pandas as pd

from gradatlas import catalog, data
from gradatlas.model import build, compile_model, probe_forward

VARIANTS = {"plain": "none", "batch_norm": "batch_norm"}
PERCENTILES = (15, 50, 85)


def sigmoid_inputs(model: keras.Sequential, x: np.ndarray, layer: int) -> np.ndarray:
    """The activation's input u (batch x units) of hidden layer `layer` (1-based), inference mode."""
    from gradatlas.model import dense_layers

    zeros = [np.zeros((len(x), d.units), dtype="float32") for d in dense_layers(model)]
    _, records = probe_forward(model, x, zeros)
    return keras.ops.convert_to_numpy(records[layer - 1]["u"])


class Track(keras.callbacks.Callback):
    """At step 0 and every epoch end (an "epoch" here is `eval_every` steps): test accuracy and percentiles."""

    def __init__(self, x_test, y_test, x_fixed, layer, unit, eval_every):
        super().__init__()
        self.x_test, self.y_test, self.x_fixed = x_test, y_test, x_fixed
        self.layer, self.unit, self.eval_every = layer, unit, eval_every
        self.rows = []

    def record(self, step):
        logits = self.model.predict(self.x_test, batch_size=2000, verbose=0)
        u = sigmoid_inputs(self.model, self.x_fixed, self.layer)
        row = {"step": step, "test_accuracy": float(np.mean(np.argmax(logits, axis=1) == self.y_test))}
        for p in PERCENTILES:
            row[f"p{p}"] = float(np.percentile(u[:, self.unit], p))
            row[f"p{p}_all_units"] = float(np.mean(np.percentile(u, p, axis=0)))
        self.rows.append(row)

    def on_train_begin(self, logs=None):
        self.record(0)

    def on_epoch_end(self, epoch, logs=None):
        self.record((epoch + 1) * self.eval_every)


def spec_for(base_spec: dict, variant: str, settings: dict) -> dict:
    spec = dict(base_spec)
    spec.update(regularizer=VARIANTS[variant], initializer="random_normal", activation="sigmoid", optimizer="sgd",
                initializer_params={"stddev": settings["init_stddev"]}, optimizer_params=catalog.params("optimizer", "sgd"),
                activation_params=catalog.params("activation", "sigmoid"), lr_schedule_params={}, learning_rate=settings["learning_rate"],
                depth=3, width=100, batch_size=settings["batch_size"], lr_schedule="constant",
                steps_per_execution=math.gcd(settings["eval_every"], 50),
                regularizer_params=catalog.params("regularizer", VARIANTS[variant], {"momentum": settings["bn_momentum"]}
                                                  if variant == "batch_norm" else None))  # fmt: skip
    return spec


def run(spec: dict, split: data.Split, steps: int, eval_every: int, unit: int, fixed_images: int) -> tuple[pd.DataFrame, dict]:
    """Train one variant x seed for `steps` steps; the tracked curve and a summary."""
    model = build(spec)
    steps_per_pass = math.ceil(len(split.x_train) / spec["batch_size"])
    compile_model(model, spec, steps_per_pass)
    if eval_every * spec["batch_size"] > len(split.x_train):
        raise ValueError(f"preset.batch_norm.eval_every = {eval_every}: at most {len(split.x_train) // spec['batch_size']} "
                         "steps (one pass over the training set) between evaluations")
    track = Track(split.x_test, split.y_test, split.x_test[:fixed_images], spec["depth"], unit, eval_every)
    start = time.perf_counter()
    # each chunk of eval_every steps draws its mini-batches from a fresh seeded shuffle of the training set
    model.fit(split.x_train, split.y_train, batch_size=spec["batch_size"], shuffle=True,
              steps_per_epoch=eval_every, epochs=steps // eval_every, callbacks=[track], verbose=0)  # fmt: skip
    seconds = time.perf_counter() - start
    curve = pd.DataFrame(track.rows)
    return curve, {"seconds": seconds, "steps": steps, "final_test_accuracy": curve["test_accuracy"].iloc[-1]}


def drift(curve: pd.DataFrame, skip_fraction: float = 0.1) -> float:
    """How far the tracked sigmoid input's 15th/50th/85th percentiles move over training: the
    largest range (max - min over the evaluation points after the first `skip_fraction` of steps)."""
    late = curve[curve["step"] >= skip_fraction * curve["step"].max()]
    return float(max(late[f"p{p}"].max() - late[f"p{p}"].min() for p in PERCENTILES))


def median_shift(curve: pd.DataFrame) -> float:
    """Informational, not part of the verdict: the largest move of the median away from its value
    at the first evaluation after step 0, over the whole run."""
    later = curve[curve["step"] > 0].sort_values("step")
    return float((later["p50"] - later["p50"].iloc[0]).abs().max())


def assess(curves: pd.DataFrame, ahead_share: float = 1.0, drift_factor: float = 0.5) -> dict:
    """Verdict: BN is ahead (mean test accuracy over seeds higher) at >= `ahead_share` of the
    evaluation points after step 0, and the BN sigmoid input drifts at most `drift_factor` times as
    much as without BN (mean drift over seeds)."""
    mean = curves.groupby(["variant", "step"])["test_accuracy"].mean().unstack("variant")
    later = mean[mean.index > 0]
    share = float((later["batch_norm"] > later["plain"]).mean())
    drifts = curves.groupby(["variant", "seed"]).apply(drift, include_groups=False).groupby("variant").mean()
    shifts = curves.groupby(["variant", "seed"]).apply(median_shift, include_groups=False).groupby("variant").mean()
    ahead_ok = share >= ahead_share
    drift_ok = bool(drifts["batch_norm"] <= drift_factor * drifts["plain"])
    return {"ahead_share": share, "drift": drifts.to_dict(), "median_shift": shifts.to_dict(), "ahead_ok": bool(ahead_ok), "drift_ok": drift_ok,
            "reproduced": bool(ahead_ok and drift_ok), "mean_accuracy": mean, "seeds": int(curves["seed"].nunique())}  # fmt: skip
