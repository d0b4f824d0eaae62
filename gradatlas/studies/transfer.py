"""Transfer learning with reused layers: frozen, partly frozen, fine-tuned, and frozen + cached.

Task A: digits 0-4 (the whole training split). Task B: digits 5-9 from only `per_class` training
images per class. The reused network is the task-A model loaded from its `.keras` file (a fresh
copy per variant, so variants never share weights); its hidden layers are reused as Keras layers
under a new 5-unit output layer.

- scratch                 a new network of the same shape, trained on task B only
- frozen_all              every reused hidden layer frozen, only the new output layer trains
- frozen_all_but_top1/2   the top one/two reused hidden layers train too
- fine_tuned              every reused layer trains
- frozen_cached           as frozen_all, but the frozen layers' outputs are computed once and the
                          output layer trains on that cache (the same model, without recomputing)

Every training (the task-A pretraining and each task-B variant) runs through the training engine
(`engine.train_pack`, a pack of one) with an injected `build` and a `data.Split` of the task's images,
so it gets the engine's early stopping (best weights restored), diagnostics and run folder.

Task B's budget is the same for every variant: one learning rate, and a cap and a patience in optimizer
steps, turned into the engine's epochs from the task's steps per epoch. A frozen head climbs slowly:
at Adam 0.001 with a patience of a few 16-step epochs it stopped (or hit the cap) before its plateau.

How frozen layers are expressed: the engine trains `model.trainable_variables` and probes every
Dense kernel, so a Keras `trainable = False` layer cannot be in its network. The network the engine
trains (`build(..., packed=True)`) therefore holds each frozen Dense as a `FrozenDense`: a Dense whose
kernel and bias enter the forward pass through `stop_gradient`. Their gradient is exactly zero, so
no optimizer moves them (SGD, momentum and Adam all update a zero-gradient variable by exactly 0),
and JAX computes no weight gradient for them. The run's own model (`packed=False`, what the run
folder's `model.keras` holds) is the same network with plain Dense layers and Keras' `trainable` flags.
"""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from gradatlas import data, grid

TASK_A, TASK_B = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)
VARIANTS = ("scratch", "frozen_all", "frozen_all_but_top1", "frozen_all_but_top2", "fine_tuned", "frozen_cached")
MODEL_NAME = "transfer"
TRAINABLE_TOP = {"frozen_all": 0, "frozen_all_but_top1": 1, "frozen_all_but_top2": 2, "frozen_cached": 0}


def task(x, y, digits, per_class: int | None = None):
    """The images of `digits`, labels renumbered 0..len(digits)-1; the first `per_class` of each."""
    keep = np.zeros(len(y), dtype=bool)
    for d in digits:
        where = np.flatnonzero(y == d)
        keep[where if per_class is None else where[:per_class]] = True
    return x[keep], (y[keep] - min(digits)).astype(np.int32)


def task_split(split: data.Split, digits, per_class: int | None = None) -> data.Split:
    """The engine's data for one task: training and validation images of `digits` (the first
    `per_class` of each), the whole test set of those digits."""
    xb, yb = task(split.x_train, split.y_train, digits, per_class)
    xv, yv = task(split.x_val, split.y_val, digits, per_class)  # early stopping on as few images
    xt, yt = task(split.x_test, split.y_test, digits)
    return data.Split(xb, yb, xv, yv, xt, yt)


@functools.cache
def frozen_dense_class():
    """`FrozenDense`: a Dense layer whose weights get no gradient (see the module docstring)."""
    import keras

    class FrozenDense(keras.layers.Dense):
        def call(self, inputs, training=None):
            ops = keras.ops
            out = ops.matmul(inputs, ops.stop_gradient(self.kernel))
            if self.use_bias:
                out = ops.add(out, ops.stop_gradient(self.bias))
            return self.activation(out) if self.activation is not None else out

    return FrozenDense


def head(n_classes: int, seed: int):
    import keras

    return keras.layers.Dense(
        n_classes, kernel_initializer=keras.initializers.GlorotUniform(seed=seed), name="output_b"
    )


def with_new_head(network, n_classes: int, seed: int):
    """The hidden layers of `network` (reused, same weights) under a new output layer."""
    import keras

    # a fixed model name: Keras puts it in the head's variable paths, by which the engine matches a
    # run's own model to the network it trained
    return keras.Sequential(
        [keras.Input((784,), name="pixels"), *network.layers[:-1], head(n_classes, seed)], name=MODEL_NAME
    )


def hidden_dense(model) -> list:
    import keras

    return [layer for layer in model.layers[:-1] if isinstance(layer, keras.layers.Dense)]


def _frozen_flags(model, variant: str) -> list[bool]:
    """Per layer of `model` (hidden layers, then the head): whether the variant freezes it.
    A hidden block's layers (Dense, its activation...) follow the Dense's flag."""
    import keras

    n_dense = len(hidden_dense(model))
    free = n_dense if variant in ("fine_tuned", "scratch") else TRAINABLE_TOP[variant]
    flags, block = [], 0
    for layer in model.layers[:-1]:
        block += isinstance(layer, keras.layers.Dense)
        flags.append(block <= n_dense - free)
    return flags + [False]


def variant_model(variant: str, pretrained_path, spec, n_classes: int):
    """The task-B model of one variant, its Keras `trainable` flags set (not compiled)."""
    from gradatlas import model as gmodel

    if variant not in VARIANTS:
        raise ValueError(f"unknown transfer variant {variant!r}; allowed: {', '.join(VARIANTS)}")
    if variant == "scratch":
        return with_new_head(gmodel.build(spec), n_classes, spec.seed)
    import keras

    model = with_new_head(keras.models.load_model(pretrained_path), n_classes, spec.seed)
    for layer, frozen in zip(model.layers, _frozen_flags(model, variant)):
        layer.trainable = not frozen
    return model


def packed_variant_model(variant: str, pretrained_path, spec, n_classes: int):
    """The same network as the engine trains it: every frozen Dense a `FrozenDense` (trainable
    variables, zero gradient), so that the engine's optimizer and probe see every kernel."""
    import keras

    model = variant_model(variant, pretrained_path, spec, n_classes)
    frozen_dense = frozen_dense_class()
    layers = [keras.Input((784,), name="pixels")]
    for layer, frozen in zip(model.layers, _frozen_flags(model, variant)):
        if frozen and isinstance(layer, keras.layers.Dense):
            copy = frozen_dense.from_config(layer.get_config() | {"trainable": True})
            copy.build((None, layer.kernel.shape[0]))
            copy.set_weights(layer.get_weights())
            layer = copy
        layer.trainable = True
        layers.append(layer)
    return keras.Sequential(layers, name=MODEL_NAME)


def feature_extractor(model):
    """The frozen hidden layers of a transfer model, as a model of their own (shared layers)."""
    import keras

    return keras.Sequential([keras.Input((784,), name="pixels"), *model.layers[:-1]])


def cached_head_model(n_features: int, n_classes: int, seed: int):
    """What `frozen_cached` trains: the new output layer alone, on the cached features."""
    import keras

    return keras.Sequential([keras.Input((n_features,), name="cached"), head(n_classes, seed)], name=MODEL_NAME)


def _train(spec, split: data.Split, run_dir: Path, build, threads: int) -> tuple[dict, float]:
    """One engine training (a pack of one); its run.json record and its wall time."""
    from gradatlas import engine

    member = grid.Run(spec, {"seed": spec.seed}, run_dir)
    start = time.perf_counter()
    (record,) = engine.train_pack(
        [member], split, Path(run_dir).parent / f".{Path(run_dir).name}.pack", threads, build=build
    )
    return record, time.perf_counter() - start


def _steady_seconds(run_dir: Path) -> tuple[int, float]:
    """Epochs run and seconds per epoch, steady state: the median epoch after the first (whose
    time includes compiling the engine's programs), or the first when it is the only one."""
    seconds = pd.read_csv(Path(run_dir) / "history.csv")["seconds"].to_numpy()
    return len(seconds), float(np.median(seconds[1:] if len(seconds) > 1 else seconds))


def pretrain(spec, split: data.Split, epochs: int, patience: int, run_dir: Path, threads: int = 1) -> tuple[Path, dict]:
    """Train the task-A network (digits 0-4) with early stopping through the engine; returns the
    path of its model (`<run_dir>/model.keras`, best weights) and a summary."""
    from gradatlas import model as gmodel

    spec = spec.replace(epochs=epochs, patience=patience)
    split_a = task_split(split, TASK_A)

    def build(s, packed=False, dropout=None):
        return with_new_head(gmodel.build(s, packed=packed, dropout=dropout), len(TASK_A), s.seed)

    record, seconds = _train(spec, split_a, run_dir, build, threads)
    summary = record["summary"]
    return Path(run_dir) / "model.keras", {
        "seed": spec.seed,
        "train_images": len(split_a.x_train),
        "epochs_run": summary["epochs_run"],
        "test_accuracy_a": summary["test_accuracy"],
        "train_seconds": summary["train_seconds"],
        "wall_seconds": seconds,
        "status": summary["status"],
    }


def step_budget(n_train: int, batch_size: int, max_steps: int, patience_steps: int) -> tuple[int, int]:
    """The engine's (epochs, patience) for a budget in steps: at least `max_steps` steps and a
    patience of at least `patience_steps` steps, in whole epochs of ceil(n_train / batch_size) steps."""
    per_epoch = math.ceil(n_train / batch_size)
    return math.ceil(max_steps / per_epoch), math.ceil(patience_steps / per_epoch)


def run_variants(
    spec,
    split: data.Split,
    pretrained_path,
    per_class: int,
    max_steps: int,
    patience_steps: int,
    variants=VARIANTS,
    runs_dir: Path | None = None,
    threads: int = 1,
) -> pd.DataFrame:
    """Train every variant on task B (same data, seed, batch order, head init, learning rate and
    step budget) through the engine; one row per variant. Each variant's run folder is
    `<runs_dir>/<variant>`."""
    import tempfile

    import keras

    if runs_dir is None:
        runs_dir = Path(tempfile.mkdtemp(prefix="gradatlas-transfer-"))
    split_b = task_split(split, TASK_B, per_class)
    epochs, patience = step_budget(len(split_b.x_train), spec.batch_size, max_steps, patience_steps)
    spec = spec.replace(epochs=epochs, patience=patience)
    n_classes = len(TASK_B)
    rows = []
    for variant in variants:
        model = variant_model(variant, pretrained_path, spec, n_classes)
        trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        cache_seconds = 0.0
        if variant == "frozen_cached":
            # the frozen layers' outputs, computed once; only the output layer trains on them
            start = time.perf_counter()
            extractor = feature_extractor(model)
            fb, fv = (extractor.predict(a, batch_size=1024, verbose=0) for a in (split_b.x_train, split_b.x_val))
            cache_seconds = time.perf_counter() - start
            ft = extractor.predict(split_b.x_test, batch_size=1024, verbose=0)  # for the test evaluation, untimed
            source = data.Split(fb, split_b.y_train, fv, split_b.y_val, ft, split_b.y_test)

            def build(s, packed=False, dropout=None, n=fb.shape[1]):
                # the engine trains the head alone; the run's model.keras is the whole network
                if packed:
                    return cached_head_model(n, n_classes, s.seed)
                return variant_model("frozen_cached", pretrained_path, s, n_classes)
        else:
            source = split_b

            def build(s, packed=False, dropout=None, variant=variant):
                if packed:
                    return packed_variant_model(variant, pretrained_path, s, n_classes)
                return variant_model(variant, pretrained_path, s, n_classes)

        keras.utils.set_random_seed(spec.seed)
        record, wall = _train(spec, source, Path(runs_dir) / variant, build, threads)
        n_epochs, per_epoch = _steady_seconds(Path(runs_dir) / variant)
        summary = record["summary"]
        rows.append(
            {
                "variant": variant,
                "seed": spec.seed,
                "train_images": len(split_b.x_train),
                "test_accuracy": float(summary["test_accuracy"]),
                "best_val_accuracy": float(summary["best_val_accuracy"]),
                "epochs_run": n_epochs,
                "best_epoch": summary["best_epoch"],
                "max_epochs": epochs,
                "trainable_params": trainable,
                "cache_seconds": cache_seconds,
                "fit_seconds": float(summary["train_seconds"]),
                "train_seconds": cache_seconds + float(summary["train_seconds"]),
                "seconds_per_epoch": per_epoch,
                "engine_wall_seconds": wall,
            }
        )
    return pd.DataFrame(rows)


def compare(diff: pd.Series, level: float = 0.95) -> dict:
    """The per-seed difference `diff` (best reused minus scratch): mean, standard error and the
    two-sided Student-t interval at `level`; the outcome is a ranking only when the interval
    excludes 0 ("reused ahead" / "scratch ahead"), else "within noise" (always with one seed)."""
    from scipy import stats  # here: the report job's environment has scipy, the training jobs' need not

    n, mean = len(diff), float(diff.mean())
    se = float(diff.std(ddof=1) / math.sqrt(n)) if n > 1 else math.inf
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * se if n > 1 else math.inf
    low, high = mean - half, mean + half
    outcome = "reused ahead" if low > 0 else "scratch ahead" if high < 0 else "within noise"
    return {
        "mean": mean,
        "se": se,
        "interval": [low, high],
        "level": level,
        "outcome": outcome,
        "per_seed": {int(k): float(v) for k, v in diff.items()},
    }


def assess(table: pd.DataFrame, speedup_min: float = 1.0, same_accuracy: float = 0.01, level: float = 0.95) -> dict:
    """Verdict on the course's claims, from the seeds' runs.

    Reproduced means (1) the best reused variant (highest mean test accuracy) beats training from
    scratch: the `level` t-interval of the per-seed difference lies above 0 (`compare`; an interval
    covering 0 is "within noise"), and (2) caching the frozen layers' outputs trains faster per epoch
    (speed-up > `speedup_min`) with the same accuracy as recomputing them (mean difference <= `same_accuracy`).
    """
    acc = table.pivot_table(index="seed", columns="variant", values="test_accuracy")
    summary = (
        table.groupby("variant")
        .agg(
            test_accuracy=("test_accuracy", "mean"),
            test_accuracy_sd=("test_accuracy", "std"),
            epochs_run=("epochs_run", "mean"),
            best_epoch=("best_epoch", "mean"),
            max_epochs=("max_epochs", "first"),
            train_seconds=("train_seconds", "mean"),
            seconds_per_epoch=("seconds_per_epoch", "mean"),
            trainable_params=("trainable_params", "first"),
        )
        .reindex([v for v in VARIANTS if v in set(table["variant"])])
    )
    reused = [v for v in summary.index if v != "scratch"]
    best = max(reused, key=lambda v: summary.loc[v, "test_accuracy"])
    gain = compare(acc[best] - acc["scratch"], level)
    speedup = float(summary.loc["frozen_all", "seconds_per_epoch"] / summary.loc["frozen_cached", "seconds_per_epoch"])
    same = float((acc["frozen_cached"] - acc["frozen_all"]).abs().mean())
    cached_ok = speedup > speedup_min and same <= same_accuracy
    return {
        "summary": summary,
        "ranking": list(summary["test_accuracy"].sort_values(ascending=False).index),
        "best_reused": best,
        "gain_over_scratch": gain,
        "beats_scratch": gain["outcome"] == "reused ahead",
        "speedup_per_epoch": speedup,
        "cached_vs_recomputed_accuracy_gap": same,
        "cached_ok": bool(cached_ok),
        "reproduced": gain["outcome"] == "reused ahead" and bool(cached_ok),
        "seeds": int(table["seed"].nunique()),
    }
