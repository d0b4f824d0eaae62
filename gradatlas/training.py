"""One training: one grid cell x seed, from the prepared data to a complete run folder.

Everything cross-cutting is a Keras callback: resume (BackupAndRestore), early stopping,
best-weights checkpoint, NaN guard, TensorBoard, the epoch journal and the diagnostics probe.
While a training is in flight its state lives in `<run>/_resume/`; the run's outputs are written
only at the end, each atomically, `run.json` last, so a run folder with `run.json` is complete.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import socket
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from gradatlas import backend, data
from gradatlas.files import atomic_write, write_json
from gradatlas.diagnostics import Diagnostics
from gradatlas.model import build, compile_model

HISTORY_COLUMNS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds"]
STATUSES = ("converged", "stalled", "diverged")


# --- callbacks -----------------------------------------------------------------------------------
class EpochStats(keras.callbacks.Callback):
    """Adds the epoch's learning rate (at its start) and wall time to the epoch logs."""

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()
        self.learning_rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_epoch_end(self, epoch, logs=None):
        logs["learning_rate"] = self.learning_rate
        logs["seconds"] = time.perf_counter() - self.start


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping whose patience survives a restart: it replays the epochs journalled before.

    Best weights are restored from the checkpoint file rather than from memory, which a killed
    job would lose.
    """

    def __init__(self, journalled: list[dict], **kwargs):
        super().__init__(restore_best_weights=False, **kwargs)
        self.journalled = journalled

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        for row in self.journalled:
            super().on_epoch_end(int(row["epoch"]), row)


# --- the run -------------------------------------------------------------------------------------
def epoch_batches(x, y, batch_size: int, seed: int, first_epoch: int, epochs: int):
    """The training batches of epochs `first_epoch`..`epochs-1`, in memory.

    Epoch e's order depends only on (seed, e), so a resumed training sees exactly the batches an
    uninterrupted one would have seen.
    """
    import tensorflow as tf

    x, y = tf.constant(x), tf.constant(y)
    n = int(x.shape[0])

    def one_epoch(e):
        order = tf.random.experimental.stateless_shuffle(tf.range(n), seed=tf.stack([tf.cast(seed, tf.int64), e]))
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

    return (
        tf.data.Dataset.range(first_epoch, epochs)
        .flat_map(one_epoch)
        .map(lambda idx: (tf.gather(x, idx), tf.gather(y, idx)))
        .prefetch(2)
    )


def resumed_epoch(backup_dir: Path) -> int:
    """Epochs completed by an interrupted training, from BackupAndRestore's own metadata."""
    meta = backup_dir / "training_metadata.json"
    return int(json.loads(meta.read_text())["epoch"]) if meta.exists() else 0


def git_commit(where: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        )
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()  # fmt: skip
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance(threads: int) -> dict:
    import importlib.metadata as md

    versions = {"python": platform.python_version()}
    for pkg in ("keras", "tensorflow", "tensorflow-cpu", "jax", "numpy", "pandas"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    env = {k: os.environ[k] for k in ("SLURM_JOB_ID", "SLURM_STEP_GPUS", "CUDA_VISIBLE_DEVICES") if k in os.environ}
    return {
        "versions": versions,
        "backend": backend.name(),
        "device": backend.device(),
        "hostname": socket.gethostname(),
        "git_commit": git_commit(Path(__file__).resolve().parent),
        "threads": threads,
        "environment": env,
    }


def summarize(history: pd.DataFrame, diag: pd.DataFrame, spec: dict, diverged: bool, test: dict, n_train: int) -> dict:
    """The run's summary metrics (the columns of `runs.parquet`)."""
    val = history["val_accuracy"]
    finite = val[np.isfinite(val)]
    best_index = finite.idxmax() if len(finite) else None
    reached = history.loc[val >= spec["target_accuracy"], "epoch"]
    best_val = float(finite.max()) if len(finite) else math.nan
    if diverged:
        status = "diverged"
    elif not best_val >= spec["stall_accuracy"]:
        status = "stalled"
    else:
        status = "converged"
    seconds = float(history["seconds"].sum())
    return {
        "status": status,
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "best_val_accuracy": best_val,
        "best_epoch": int(history.loc[best_index, "epoch"]) if best_index is not None else None,
        "epochs_run": int(len(history)),
        "epochs_to_target": int(reached.iloc[0]) if len(reached) else None,
        "train_seconds": seconds,
        "samples_per_second": n_train * len(history) / seconds if seconds > 0 else math.nan,
        "vanishing_ratio_init": vanishing_ratio(diag, first=True),
        "vanishing_ratio_final": vanishing_ratio(diag, first=False),
    }


def vanishing_ratio(diag: pd.DataFrame, first: bool) -> float:
    """delta_norm of layer 1 over that of the last hidden layer, at the first or last probe."""
    hidden = diag[diag["layer_kind"] == "hidden"]
    if hidden.empty or hidden["layer"].max() < 2:
        return math.nan
    step = hidden["step"].min() if first else hidden["step"].max()
    at = hidden[hidden["step"] == step].set_index("layer")["delta_norm"]
    at = at[~at.index.duplicated(keep="last")]
    last = at.loc[at.index.max()]
    return float(at.loc[1] / last) if last > 0 else math.nan


def train(spec: dict, data_dir: Path, run_dir: Path, cell: dict, threads: int = 1) -> dict:
    """Train one cell; write the complete run folder; return run.json's content."""
    run_dir = Path(run_dir)
    resume = run_dir / "_resume"
    backup_dir = resume / "backup"
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    backend.configure(threads, spec["deterministic"], spec["seed"])

    split = data.split(data.open_prepared(data_dir), spec["validation_size"], spec["train_subset"])
    n_train = len(split.x_train)
    steps_per_epoch = math.ceil(n_train / spec["batch_size"])
    model = compile_model(build(spec), spec, steps_per_epoch)

    # What an interrupted run had journalled, cut back to the epochs its backup holds.
    first_epoch = resumed_epoch(backup_dir)
    history_path, diag_path = resume / "history.csv", resume / "diagnostics.parquet"
    journalled = []
    if first_epoch and history_path.exists():
        journal = pd.read_csv(history_path)
        # CSVLogger's epochs count from 0; a kill between journal and backup leaves an extra row
        journal = journal[journal["epoch"] < first_epoch].drop_duplicates("epoch", keep="last")
        journal.to_csv(history_path, index=False)
        journalled = journal.to_dict("records")
    else:
        shutil.rmtree(resume, ignore_errors=True)
        first_epoch = 0
    resume.mkdir(parents=True, exist_ok=True)
    diag_rows = []
    if first_epoch and diag_path.exists():
        diag_rows = pd.read_parquet(diag_path).query("step <= @first_epoch * @steps_per_epoch").to_dict("records")
    best_so_far = max((r["val_accuracy"] for r in journalled if np.isfinite(r["val_accuracy"])), default=None)

    diagnostics = Diagnostics(
        split.x_train[: spec["probe_size"]],
        split.y_train[: spec["probe_size"]],
        spec["activation"],
        spec["activation_params"],
        spec["early_steps"],
        steps_per_epoch,
        rows=diag_rows,
        journal=diag_path,
    )
    best_path = resume / "best.weights.h5"
    callbacks = [
        EpochStats(),
        keras.callbacks.TerminateOnNaN(),
        diagnostics,
        keras.callbacks.CSVLogger(history_path, append=True),
        keras.callbacks.ModelCheckpoint(
            best_path, monitor="val_accuracy", mode="max", save_best_only=True, save_weights_only=True,
            initial_value_threshold=best_so_far,
        ),  # fmt: skip
        ResumableEarlyStopping(journalled, monitor="val_accuracy", mode="max", patience=spec["patience"]),
        keras.callbacks.TensorBoard(resume / "tensorboard", histogram_freq=0, write_graph=False),
        # last, so that everything above is journalled before an epoch counts as backed up
        keras.callbacks.BackupAndRestore(backup_dir, double_checkpoint=True),
    ]
    model.fit(
        epoch_batches(split.x_train, split.y_train, spec["batch_size"], spec["seed"], first_epoch, spec["epochs"]),
        epochs=spec["epochs"],
        steps_per_epoch=steps_per_epoch,
        validation_data=(split.x_val, split.y_val),
        validation_batch_size=1024,
        callbacks=callbacks,
        shuffle=False,  # epoch_batches shuffles, resumably
        verbose=0,
    )

    history = pd.read_csv(history_path).drop_duplicates("epoch", keep="last").reindex(columns=HISTORY_COLUMNS)
    history["epoch"] += 1  # 1-based: epoch e is the e-th pass over the training set
    weights_finite = all(np.all(np.isfinite(keras.ops.convert_to_numpy(w))) for w in model.weights)
    diverged = not weights_finite or not np.all(np.isfinite(history[["loss", "val_loss"]].to_numpy(dtype=float)))
    if not diverged and best_path.exists():
        model.load_weights(best_path)
    test = model.evaluate(split.x_test, split.y_test, batch_size=1024, verbose=0, return_dict=True)
    test = {k: float(v) for k, v in test.items()}
    diag = diagnostics.frame()
    summary = summarize(history, diag, spec, diverged, test, n_train)

    atomic_write(run_dir / "history.csv", lambda p: history.to_csv(p, index=False))
    atomic_write(run_dir / "diagnostics.parquet", lambda p: diag.to_parquet(p, index=False))
    atomic_write(run_dir / "model.keras", model.save)
    shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)
    os.replace(resume / "tensorboard", run_dir / "tensorboard")
    record = {
        "cell": cell,
        "spec": spec,
        "summary": summary,
        "probe_seconds": diagnostics.seconds,
        "resumed_from_epoch": first_epoch,
        "started": started,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "provenance": provenance(threads),
    }
    write_json(run_dir / "run.json", record)
    shutil.rmtree(resume, ignore_errors=True)
    return record

