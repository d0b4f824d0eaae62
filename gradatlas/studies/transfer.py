"""Transfer learning with reused layers: frozen, partly frozen, fine-tuned, and frozen + cached.

Task A: digits 0-4 (the whole training split). Task B: digits 5-9 from only `per_class` training
images per class. The reused network is the task-A model loaded from its `.keras` file (a fresh
copy per variant, so variants never share weights); its hidden layers are reused as Keras layers
under a new 5-unit output layer, and frozen with Keras' `trainable` flags.

- scratch                 a new network of the same shape, trained on task B only
- frozen_all              every reused hidden layer frozen, only the new output layer trains
- frozen_all_but_top1/2   the top one/two reused hidden layers train too
- fine_tuned              every reused layer trains
- frozen_cached           as frozen_all, but the frozen layers' outputs are computed once and the
                          output layer trains on that cache (the same model, without recomputing)
"""

from __future__ import annotations

import time

import keras
import numpy as np
import pandas as pd

from gradatlas import data
from gradatlas.model import build, compile_model

TASK_A, TASK_B = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)
VARIANTS = ("scratch", "frozen_all", "frozen_all_but_top1", "frozen_all_but_top2", "fine_tuned", "frozen_cached")
TRAINABLE_TOP = {"frozen_all": 0, "frozen_all_but_top1": 1, "frozen_all_but_top2": 2, "frozen_cached": 0}


def task(x, y, digits, per_class: int | None = None):
    """The images of `digits`, labels renumbered 0..len(digits)-1; the first `per_class` of each."""
    keep = np.zeros(len(y), dtype=bool)
    for d in digits:
        where = np.flatnonzero(y == d)
        keep[where if per_class is None else where[:per_class]] = True
    return x[keep], (y[keep] - min(digits)).astype(np.int32)


def head(n_classes: int, seed: int) -> keras.layers.Dense:
    return keras.layers.Dense(n_classes, kernel_initializer=keras.initializers.GlorotUniform(seed=seed), name="output_b")


def with_new_head(network: keras.Sequential, n_classes: int, seed: int) -> keras.Sequential:
    """The hidden layers of `network` (reused, same weights) under a new output layer."""
    return keras.Sequential([keras.Input((784,), name="pixels"), *network.layers[:-1], head(n_classes, seed)])


def hidden_dense(model: keras.Sequential) -> list:
    return [layer for layer in model.layers[:-1] if isinstance(layer, keras.layers.Dense)]


def variant_model(variant: str, pretrained_path, spec: dict, n_classes: int) -> keras.Sequential:
    """The task-B model of one variant, its `trainable` flags set (not compiled)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown transfer variant {variant!r}; allowed: {', '.join(VARIANTS)}")
    if variant == "scratch":
        return with_new_head(build(spec), n_classes, spec["seed"])
    model = with_new_head(keras.models.load_model(pretrained_path), n_classes, spec["seed"])
    dense = hidden_dense(model)
    free = len(dense) if variant == "fine_tuned" else TRAINABLE_TOP[variant]
    for i, layer in enumerate(model.layers[:-1]):
        # a hidden block's layers (Dense, its activation...) follow the Dense's flag
        block = sum(1 for d in model.layers[: i + 1] if isinstance(d, keras.layers.Dense))
        layer.trainable = block > len(dense) - free
    return model


def feature_extractor(model: keras.Sequential) -> keras.Sequential:
    """The frozen hidden layers of a transfer model, as a model of their own (shared layers)."""
    return keras.Sequential([keras.Input((784,), name="pixels"), *model.layers[:-1]])


def _compile(model, spec, steps_per_epoch):
    return compile_model(model, spec, steps_per_epoch)


def pretrain(spec: dict, split: data.Split, epochs: int, patience: int) -> tuple[keras.Sequential, dict]:
    """Train the task-A network (digits 0-4) with early stopping; returns it and a summary."""
    xa, ya = task(split.x_train, split.y_train, TASK_A)
    xv, yv = task(split.x_val, split.y_val, TASK_A)
    xt, yt = task(split.x_test, split.y_test, TASK_A)
    model = with_new_head(build(spec), len(TASK_A), spec["seed"])
    _compile(model, spec, int(np.ceil(len(xa) / spec["batch_size"])))
    start = time.perf_counter()
    stop = keras.callbacks.EarlyStopping("val_accuracy", patience=patience, restore_best_weights=True)
    hist = model.fit(xa, ya, batch_size=spec["batch_size"], epochs=epochs, validation_data=(xv, yv),
                     callbacks=[stop], verbose=0)  # fmt: skip
    seconds = time.perf_counter() - start
    test = model.evaluate(xt, yt, batch_size=1024, verbose=0, return_dict=True)
    return model, {"seed": spec["seed"], "train_images": len(xa), "epochs_run": len(hist.history["loss"]),
                   "test_accuracy_a": float(test["accuracy"]), "train_seconds": seconds}  # fmt: skip


def run_variants(spec: dict, split: data.Split, pretrained_path, per_class: int, epochs: int, patience: int,
                 variants=VARIANTS) -> pd.DataFrame:  # fmt: skip
    """Train every variant on task B (same data, seed and head init); one row per variant."""
    xb, yb = task(split.x_train, split.y_train, TASK_B, per_class)
    xv, yv = task(split.x_val, split.y_val, TASK_B, per_class)  # early stopping on as few images
    xt, yt = task(split.x_test, split.y_test, TASK_B)
    n_classes = len(TASK_B)
    steps = int(np.ceil(len(xb) / spec["batch_size"]))
    rows = []
    for variant in variants:
        keras.utils.set_random_seed(spec["seed"])
        model = variant_model(variant, pretrained_path, spec, n_classes)
        trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        cache_seconds = 0.0
        if variant == "frozen_cached":
            # the frozen layers' outputs, computed once; only the output layer trains on them
            start = time.perf_counter()
            extractor = feature_extractor(model)
            fb, fv = (extractor.predict(a, batch_size=1024, verbose=0) for a in (xb, xv))
            cache_seconds = time.perf_counter() - start
            trained = keras.Sequential([keras.Input((fb.shape[1],), name="cached"), model.layers[-1]])
            fit_x, fit_v = fb, (fv, yv)
        else:
            trained, fit_x, fit_v = model, xb, (xv, yv)
        _compile(trained, spec, steps)
        stop = keras.callbacks.EarlyStopping("val_accuracy", patience=patience, restore_best_weights=True)
        start = time.perf_counter()
        hist = trained.fit(fit_x, yb, batch_size=spec["batch_size"], epochs=epochs, validation_data=fit_v,
                           callbacks=[stop], verbose=0)  # fmt: skip
        fit_seconds = time.perf_counter() - start
        _compile(model, spec, steps)  # the full model (its output layer is the one just trained)
        test = model.evaluate(xt, yt, batch_size=1024, verbose=0, return_dict=True)
        n_epochs = len(hist.history["loss"])
        rows.append({
            "variant": variant, "seed": spec["seed"], "train_images": len(xb), "test_accuracy": float(test["accuracy"]),
            "best_val_accuracy": float(max(hist.history["val_accuracy"])), "epochs_run": n_epochs,
            "trainable_params": trainable, "cache_seconds": cache_seconds, "fit_seconds": fit_seconds,
            "train_seconds": cache_seconds + fit_seconds, "seconds_per_epoch": fit_seconds / n_epochs,
        })  # fmt: skip
    return pd.DataFrame(rows)


def assess(table: pd.DataFrame, speedup_min: float = 1.0, same_accuracy: float = 0.01) -> dict:
    """Verdict on the course's claims, from the seeds' runs.

    Reproduced means (1) the best reused variant beats training from scratch on mean test accuracy,
    by more than the seeds' standard error of the difference, and (2) caching the frozen layers'
    outputs trains faster per epoch (speed-up > `speedup_min`) with the same accuracy as
    recomputing them (mean difference <= `same_accuracy`).
    """
    acc = table.pivot_table(index="seed", columns="variant", values="test_accuracy")
    summary = table.groupby("variant").agg(
        test_accuracy=("test_accuracy", "mean"), test_accuracy_sd=("test_accuracy", "std"),
        epochs_run=("epochs_run", "mean"), train_seconds=("train_seconds", "mean"),
        seconds_per_epoch=("seconds_per_epoch", "mean"), trainable_params=("trainable_params", "first"),
    ).reindex([v for v in VARIANTS if v in set(table["variant"])])  # fmt: skip
    reused = [v for v in summary.index if v != "scratch"]
    best = max(reused, key=lambda v: summary.loc[v, "test_accuracy"])
    diff = acc[best] - acc["scratch"]
    se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
    beats = bool(diff.mean() > se)
    speedup = float(summary.loc["frozen_all", "seconds_per_epoch"] / summary.loc["frozen_cached", "seconds_per_epoch"])
    same = float((acc["frozen_cached"] - acc["frozen_all"]).abs().mean())
    cached_ok = speedup > speedup_min and same <= same_accuracy
    return {
        "summary": summary, "best_reused": best, "gain_over_scratch": float(diff.mean()), "gain_se": se,
        "beats_scratch": beats, "speedup_per_epoch": speedup, "cached_vs_recomputed_accuracy_gap": same,
        "cached_ok": bool(cached_ok), "reproduced": beats and cached_ok, "seeds": int(table["seed"].nunique()),
    }  # fmt: skip
