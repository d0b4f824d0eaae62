"""Batch normalization (Ioffe & Szegedy 2015, section 4.1) on MNIST.

784-100-100-100-10 sigmoid network, small Gaussian init, mini-batches of 60, with and without
batch normalization. Every `eval_every` steps: the test accuracy and the 15th/50th/85th
percentiles of one sigmoid's input (unit `unit` of the last hidden layer; after batch
normalization where there is one) over a fixed batch of test images, in inference mode.

Training runs through the engine: the seeds of one variant are one pack (under JAX; one run per
pack under TensorFlow), `early_steps` holds the evaluation steps, so the engine ends a compiled
segment of steps at each of them, and a `Track` hook records the curve at those segment ends.
The training set is cut to a whole number of batches (every step is a full batch of 60) and the
engine trains whole passes over it: ceil(steps / steps per pass) passes, of which the curve keeps
the evaluation points up to `steps`; the engine's early stopping is off (patience above the passes).
"""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from gradatlas import catalog, data, grid

VARIANTS = {"plain": "none", "batch_norm": "batch_norm"}
PERCENTILES = (15, 50, 85)
ROWS_FILE = "state.npz"  # the hook's rows live in the engine's checkpoint (gradatlas.state, its hooks slot)


def activation_input(model, x, layer: int):
    """The activation's input u (batch x units) of hidden layer `layer` (1-based), inference mode
    (batch normalization on its moving averages, dropout off)."""
    import keras

    h, seen = x, 0
    for item in model.layers:
        if isinstance(item, keras.layers.Dense):
            seen += 1
            h = item(h)
        elif isinstance(item, keras.layers.BatchNormalization):
            h = item(h, training=False)
        elif isinstance(item, keras.layers.Dropout) or type(item).__name__ == "MemberDropout":
            continue
        else:  # the activation
            if seen == layer:
                return h
            h = item(h)
    raise ValueError(f"the network has no hidden layer {layer}")


def sigmoid_inputs(model, x: np.ndarray, layer: int) -> np.ndarray:
    """`activation_input` of a built model, as numpy."""
    import keras

    return keras.ops.convert_to_numpy(activation_input(model, keras.ops.convert_to_tensor(x), layer))


@functools.cache
def track_class():
    """The `Track` hook class. Built on first use: the engine (and Keras, TensorBoard's writer) is
    imported only by the training job, never by the report job that imports this module for `assess`."""
    from gradatlas import engine

    class Track(engine.Hooks):
        """At step 0 (the training's start) and at every evaluation step: each member's test
        accuracy and the percentiles of the tracked sigmoid input, from the pack's current
        variables (one compiled, vectorized program over the members). Its rows are its state in
        the engine's checkpoint: a resumed pack goes on with the rows recorded up to its epoch."""

        key = "batch_norm.track"

        def __init__(self, x_test, y_test, x_fixed, layer: int, unit: int, targets):
            self.x_test, self.y_test, self.x_fixed = x_test, y_test, x_fixed
            self.layer, self.unit, self.targets = layer, unit, set(targets)
            self.rows: list[list[dict]] = []
            self._program = None

        def state(self):
            return self.rows

        def restore(self, rows) -> None:
            self.rows = rows

        def _compiled(self, model):
            if self._program is None:
                import keras

                from gradatlas import backend

                ops, layer = keras.ops, self.layer

                def member(trainable, non_trainable, x_test, y_test, x_fixed):
                    logits, _ = model.stateless_call(trainable, non_trainable, x_test, training=False)
                    accuracy = ops.mean(ops.cast(ops.cast(ops.argmax(logits, axis=-1), "int32") == y_test, "float32"))
                    mapping = list(zip(model.trainable_variables, trainable)) + list(
                        zip(model.non_trainable_variables, non_trainable)
                    )
                    with keras.StatelessScope(state_mapping=mapping):
                        u = activation_input(model, x_fixed, layer)
                    return accuracy, u

                program = backend.jit(backend.vmap(member, in_axes=(0, 0, None, None, None)))
                data_in = [ops.convert_to_tensor(a) for a in (self.x_test, self.y_test.astype("int32"), self.x_fixed)]
                self._program = lambda trainable, non_trainable: program(trainable, non_trainable, *data_in)
            return self._program

        def record(self, view, step: int) -> None:
            import keras

            if self.rows and any(r["step"] == step for r in self.rows[0]):
                return
            train = view.state.train
            accuracy, u = self._compiled(view.model)(train.trainable, train.non_trainable)
            accuracy, u = keras.ops.convert_to_numpy(accuracy), keras.ops.convert_to_numpy(u)
            if not self.rows:
                self.rows = [[] for _ in range(len(accuracy))]
            for k in range(len(accuracy)):
                row = {"step": int(step), "test_accuracy": float(accuracy[k])}
                for p in PERCENTILES:
                    row[f"p{p}"] = float(np.percentile(u[k][:, self.unit], p))
                    row[f"p{p}_all_units"] = float(np.mean(np.percentile(u[k], p, axis=0)))
                self.rows[k].append(row)

        def on_start(self, view) -> None:
            if view.epoch == 0:
                self.record(view, 0)

        def on_segment_end(self, view, epoch: int, step: int) -> None:
            if step in self.targets:
                self.record(view, step)

        def on_epoch_end(self, view, epoch: int) -> None:
            if view.step in self.targets:
                self.record(view, view.step)

    return Track


def spec_for(base_spec, variant: str, settings: dict):
    """The variant's run spec (a `RunSpec`): the paper's network and SGD, on the base spec's data."""
    regularizer = VARIANTS[variant]
    return base_spec.replace(
        regularizer=regularizer,
        initializer="random_normal",
        activation="sigmoid",
        optimizer="sgd",
        initializer_params={"stddev": settings["init_stddev"]},
        optimizer_params=catalog.params("optimizer", "sgd"),
        activation_params=catalog.params("activation", "sigmoid"),
        lr_schedule="constant",
        lr_schedule_params=catalog.params("lr_schedule", "constant"),
        learning_rate=settings["learning_rate"],
        depth=3,
        width=100,
        batch_size=settings["batch_size"],
        clipnorm=None,
        clipvalue=None,
        regularizer_params=catalog.params(
            "regularizer", regularizer, {"momentum": settings["bn_momentum"]} if variant == "batch_norm" else None
        ),
    )


def run(
    specs: list,
    split: data.Split,
    steps: int,
    eval_every: int,
    unit: int,
    fixed_images: int,
    run_dirs: list,
    pack_dir: Path,
    threads: int = 1,
    hooks=(),
) -> tuple[list[pd.DataFrame], list[dict]]:
    """Train one variant's seeds (`specs`, one graph) for `steps` steps through the engine; per seed
    the tracked curve and a summary. The engine writes each seed's run folder to `run_dirs`;
    `hooks`: more `engine.Hooks` (tests). A pack killed mid-way resumes from `pack_dir`."""
    from gradatlas import backend

    if not backend.packs(backend.name()) and len(specs) > 1:  # TensorFlow trains packs of one
        out = [
            run([s], split, steps, eval_every, unit, fixed_images, [d], Path(pack_dir) / str(i), threads, hooks)
            for i, (s, d) in enumerate(zip(specs, run_dirs))
        ]
        return [c for o in out for c in o[0]], [r for o in out for r in o[1]]
    batch = specs[0].batch_size
    n_train = (len(split.x_train) // batch) * batch  # whole batches only: every step sees `batch` images
    if n_train == 0:
        raise ValueError(
            f"preset.batch_norm.batch_size = {batch}: larger than the {len(split.x_train)} training images"
        )
    split = data.Split(
        split.x_train[:n_train], split.y_train[:n_train], split.x_val, split.y_val, split.x_test, split.y_test
    )
    per_pass = n_train // batch
    passes = math.ceil(steps / per_pass)
    targets = list(range(eval_every, steps + 1, eval_every))
    specs = [s.replace(epochs=passes, patience=passes + 1, early_steps=tuple(targets)) for s in specs]
    from gradatlas import engine

    members = [grid.Run(s, {"variant": s.regularizer, "seed": s.seed}, d) for s, d in zip(specs, run_dirs)]
    track = track_class()(split.x_test, split.y_test, split.x_test[:fixed_images], specs[0].depth, unit, targets)
    start = time.perf_counter()
    records = engine.train_pack(members, split, Path(pack_dir), threads, hooks=[track, *hooks])
    seconds = time.perf_counter() - start
    curves, summaries = [], []
    for k, record in enumerate(records):
        curve = pd.DataFrame(track.rows[k])
        curve = curve[curve["step"] <= steps].sort_values("step").reset_index(drop=True)
        curves.append(curve)
        summaries.append(
            {
                "seconds": seconds,
                "pack_size": len(members),
                "steps": steps,
                "steps_trained": passes * per_pass,
                "train_images": n_train,
                "final_test_accuracy": float(curve["test_accuracy"].iloc[-1]),
                "engine_summary": record["summary"],
                "spec": record["spec"],
                "run_dir": members[k].run_dir,
            }
        )
    return curves, summaries


def _trained(curve: pd.DataFrame) -> pd.DataFrame:
    """The evaluation points after step 0. Step 0 is left out because in inference mode an untrained
    BN layer normalizes with its initial moving averages (mean 0, variance 1), i.e. passes the tiny
    pre-BN input through unchanged: that point is not the distribution BN trains with. From the
    first evaluation on (500 steps at momentum 0.99) the moving averages have caught up."""
    return curve[curve["step"] > 0].sort_values("step")


def location_drift(curve: pd.DataFrame) -> float:
    """How far the tracked sigmoid input's median moves over the whole run, in units of its spread:
    (max - min of p50) / median over the run of the 15-85 percentile spread. A change of scale
    alone (BN's learned gamma widening the distribution around a fixed median) is not location drift."""
    c = _trained(curve)
    return float((c["p50"].max() - c["p50"].min()) / (c["p85"] - c["p15"]).median())


def scale_drift(curve: pd.DataFrame) -> float:
    """How much the tracked sigmoid input's 15-85 percentile spread changes over the whole run,
    as a factor: max / min of the spread (1 = constant)."""
    c = _trained(curve)
    spread = c["p85"] - c["p15"]
    return float(spread.max() / spread.min())


def assess(curves: pd.DataFrame, ahead_share: float = 1.0, drift_factor: float = 0.5) -> dict:
    """Verdict: BN is ahead (mean test accuracy over seeds higher) at >= `ahead_share` of the
    evaluation points after step 0, and the BN sigmoid input is more stable over the whole run, in
    location and in scale separately: its location drift at most `drift_factor` times that without
    BN, and its scale drift at most the `drift_factor` power of that without (factors compare on a
    log scale). Location drift: mean over seeds; scale drift: geometric mean over seeds."""
    mean = curves.groupby(["variant", "step"])["test_accuracy"].mean().unstack("variant")
    later = mean[mean.index > 0]
    share = float((later["batch_norm"] > later["plain"]).mean())
    groups = curves.groupby(["variant", "seed"])
    per_seed = pd.DataFrame(
        {
            "location_drift": groups.apply(location_drift, include_groups=False),
            "scale_drift": groups.apply(scale_drift, include_groups=False),
        }
    )
    location = per_seed["location_drift"].groupby("variant").mean()
    scale = np.exp(np.log(per_seed["scale_drift"]).groupby("variant").mean())
    ahead_ok = share >= ahead_share
    location_ok = bool(location["batch_norm"] <= drift_factor * location["plain"])
    scale_ok = bool(np.log(scale["batch_norm"]) <= drift_factor * np.log(scale["plain"]))
    return {
        "ahead_share": share,
        "location_drift": location.to_dict(),
        "scale_drift": scale.to_dict(),
        "ahead_ok": bool(ahead_ok),
        "location_ok": location_ok,
        "scale_ok": scale_ok,
        "reproduced": bool(ahead_ok and location_ok and scale_ok),
        "mean_accuracy": mean,
        "per_seed": per_seed.reset_index(),
        "seeds": int(curves["seed"].nunique()),
    }
