"""One training: one grid cell x seed, from the prepared data to a complete run folder.

Everything cross-cutting is a Keras callback: resume (BackupAndRestore), early stopping,
best-weights checkpoint, NaN guard, TensorBoard, the epoch journal and the diagnostics probe.
While a training is in flight its state lives in `<run>/_resume/`; the run's outputs are written
only at the end, each atomically, `run.json` last, so a run folder with `run.json` is complete.

Resume (docs/reliability.md): at every epoch end `EpochBackup` replaces `_resume/backup/state.npz`
atomically with everything the rest of the training depends on (all model and optimizer variables,
dropout RNG states included, the best weights so far, the epoch and diagnostics journals, whether
training has stopped). A killed job rerun by snakemake starts from that state and, with
deterministic ops, ends bit-identical to an uninterrupted run.
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
from gradatlas.model import build, compile_model, dense_layers

HISTORY_COLUMNS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"]
STATUSES = ("converged", "stalled", "diverged")
EXPLODED_LOSS = 1e6  # a training or validation loss above this counts as diverged, like NaN


# --- callbacks -----------------------------------------------------------------------------------
class EpochStats(keras.callbacks.Callback):
    """Adds the epoch's learning rate (at its start) and wall time to the epoch logs."""

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()
        self.learning_rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_epoch_end(self, epoch, logs=None):
        logs["lr"] = self.learning_rate  # not "learning_rate": that is also a grid axis
        logs["seconds"] = time.perf_counter() - self.start


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping whose patience survives a restart: it replays the epochs journalled before.

    Best weights are kept by `BestWeights` (saved with every backup) rather than by EarlyStopping's
    memory, which a killed job would lose.
    """

    def __init__(self, journalled: list[dict], **kwargs):
        super().__init__(restore_best_weights=False, **kwargs)
        self.journalled = journalled

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        for row in self.journalled:
            super().on_epoch_end(int(row["epoch"]), row)


class EpochJournal(keras.callbacks.Callback):
    """Every epoch's logs, the resumed ones first; `EpochBackup` saves them with the weights.

    `_resume/history.csv` is a readable copy for whoever watches a long training; resume never
    reads it.
    """

    def __init__(self, rows: list[dict], path: Path):
        super().__init__()
        self.rows, self.path = list(rows), path

    def on_epoch_end(self, epoch, logs=None):
        self.rows.append({"epoch": epoch} | {k: float(v) for k, v in (logs or {}).items()})
        atomic_write(self.path, lambda p: pd.DataFrame(self.rows).to_csv(p, index=False))


class BestWeights(keras.callbacks.Callback):
    """The weights of the first epoch with the highest `val_accuracy` (ModelCheckpoint's
    save_best_only rule), kept in memory and saved with every backup."""

    def __init__(self, best: dict | None = None):
        super().__init__()
        best = best or {}
        self.value = best.get("value", -math.inf)
        self.epoch = best.get("epoch")
        self.weights = best.get("weights")

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get("val_accuracy")
        if value is not None and float(value) > self.value:  # NaN is never better
            self.value, self.epoch = float(value), epoch
            self.weights = [np.array(w) for w in self.model.get_weights()]


class EpochBackup(keras.callbacks.BackupAndRestore):
    """BackupAndRestore with one backup file, replaced atomically at every epoch end.

    Keras' own writes the weights and the epoch to two files, in place, and its weights leave out
    the dropout RNG (SeedGenerator) states: a kill during or between those writes resumes from a
    torn file or the wrong epoch, and a resumed run draws other dropout masks. This one writes
    `state.npz` (see `backup_state`) to a temporary file, keeps the previous state as
    `state.prev.npz` (double checkpoint) and renames the new one into place. The state is restored
    by `train` before `fit`; here `on_train_begin` only tells `fit` where to start.
    """

    def __init__(self, backup_dir: Path, spec: dict, parts: dict, restored: dict | None):
        super().__init__(str(backup_dir), save_freq="epoch", double_checkpoint=True, delete_checkpoint=False)
        self.dir, self.spec, self.parts, self.restored = Path(backup_dir), spec, parts, restored

    def on_train_begin(self, logs=None):
        if self.restored:
            meta = self.restored["meta"]
            self._current_epoch = meta["epoch"]
            # a stopped training (early stopping, NaN) runs no further epoch
            self.model._initial_epoch = self.spec["epochs"] if meta["stopped"] else meta["epoch"]

    def _save_model(self):
        epoch = self._current_epoch
        arrays = backup_state(self.model, self.spec, epoch, bool(self.model.stop_training), **self.parts)
        self.dir.mkdir(parents=True, exist_ok=True)
        latest, partial = self.dir / BACKUP, self.dir / f".{BACKUP}.partial"
        with open(partial, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        hang_point(f"backup-written-{epoch}")
        if latest.exists():
            os.replace(latest, self.dir / PREVIOUS_BACKUP)
        hang_point(f"backup-rotated-{epoch}")
        os.replace(partial, latest)
        hang_point(f"committed-{epoch}")

    def on_train_end(self, logs=None):
        pass  # `train` removes `_resume/` once the run folder is complete


BACKUP, PREVIOUS_BACKUP = "state.npz", "state.prev.npz"


def _spec_key(spec: dict) -> str:
    return json.dumps(spec, sort_keys=True, default=str)


def backup_state(model, spec: dict, epoch: int, stopped: bool, journal, best, diagnostics) -> dict:
    """The arrays of one backup: model variables (RNG states, BN statistics), optimizer variables,
    best weights, and a JSON `meta` with the epoch, journals and the spec it belongs to."""
    arrays = {f"model_{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(model.variables)}
    arrays |= {f"optimizer_{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(model.optimizer.variables)}
    arrays |= {f"best_{i}": w for i, w in enumerate(best.weights or [])}
    meta = {
        "epoch": epoch,
        "stopped": stopped,
        "spec": _spec_key(spec),
        "journal": journal.rows,
        "diagnostics": diagnostics.rows,
        "best": {"value": best.value if best.weights is not None else None, "epoch": best.epoch},
    }
    arrays["meta"] = np.array(json.dumps(meta, default=_jsonable))
    return arrays


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot journal {type(value).__name__}")


def load_backup(backup_dir: Path, spec: dict) -> dict | None:
    """The newest readable backup of this spec: {"meta", "arrays"}; None when there is none.

    A torn or unreadable latest state falls back to the previous one; a backup made for another
    spec (the config changed between the kill and the rerun) is not used.
    """
    for path in (Path(backup_dir) / BACKUP, Path(backup_dir) / PREVIOUS_BACKUP):
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            meta = json.loads(str(arrays.pop("meta")))
        except FileNotFoundError:
            continue
        except Exception:  # torn or foreign file: try the previous state
            continue
        if meta.get("spec") != _spec_key(spec):
            return None
        return {"meta": meta, "arrays": arrays}
    return None


def restore(model, state: dict) -> bool:
    """Put a backup's variables back into a compiled model; False (nothing changed) if they do not fit."""
    arrays = state["arrays"]
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    pairs = [(v, arrays.get(f"model_{i}")) for i, v in enumerate(model.variables)]
    pairs += [(v, arrays.get(f"optimizer_{i}")) for i, v in enumerate(model.optimizer.variables)]
    if len(pairs) != sum(k.startswith(("model_", "optimizer_")) for k in arrays) or any(
        a is None or tuple(a.shape) != tuple(v.shape) for v, a in pairs
    ):
        return False
    for variable, value in pairs:
        variable.assign(value)
    return True


# --- fault injection, for the reliability tests only ---------------------------------------------
HANG_AT = os.environ.get("GRADATLAS_TEST_HANG_AT")


def hang_point(name: str) -> None:
    """With GRADATLAS_TEST_HANG_AT=<name>, the training creates the file $GRADATLAS_TEST_HANG_FLAG
    at that point and sleeps until a test kills it (tests/test_resume.py). A no-op otherwise.

    Points: batch-<epoch>-<batch> (0-based, mid-epoch), backup-written-<n> / backup-rotated-<n> /
    committed-<n> (while saving the backup after n complete epochs), trained (after fit),
    outputs-history / outputs-model / outputs-run.json (after writing that output).
    """
    if HANG_AT != name:
        return
    Path(os.environ["GRADATLAS_TEST_HANG_FLAG"]).write_text(name)
    time.sleep(3600)


class HangMidEpoch(keras.callbacks.Callback):
    """Offers the points batch-<epoch>-<batch> to `hang_point`; only installed when HANG_AT is set."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        hang_point(f"batch-{self.epoch}-{batch}")


# --- the run -------------------------------------------------------------------------------------
def epoch_batches(x, y, batch_size: int, seed: int, first_epoch: int, epochs: int) -> backend.EpochData:
    """The training batches, in memory, one epoch per pass over `.dataset()`.

    Epoch e's order depends only on (seed, e) and is the same in every backend, so a resumed
    training sees exactly the batches an uninterrupted one would have seen. `model.fit` needs
    `.callback()` too (it selects the epoch) and no `steps_per_epoch`: each epoch then ends with
    its data, also when `steps_per_execution` does not divide the epoch's steps.
    """
    batches = backend.EpochData(x, y, batch_size, seed)
    batches.set_epoch(first_epoch)
    return batches


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
        "determinism": determinism_settings(),
    }


def determinism_settings() -> dict:
    """What decides whether a rerun is bit-identical (docs/reliability.md), as this process runs."""
    settings = {
        k: os.environ.get(k)
        for k in ("PYTHONHASHSEED", "TF_DETERMINISTIC_OPS", "TF_CUDNN_DETERMINISTIC", "TF_ENABLE_ONEDNN_OPTS", "XLA_FLAGS")
    }
    if backend.name() == "tensorflow":
        import tensorflow as tf

        try:
            from tensorflow.python.framework import config as tf_config

            settings["op_determinism"] = bool(tf_config.is_op_determinism_enabled())
        except (ImportError, AttributeError):
            settings["op_determinism"] = None
        settings["intra_op_threads"] = tf.config.threading.get_intra_op_parallelism_threads()
        settings["inter_op_threads"] = tf.config.threading.get_inter_op_parallelism_threads()
    return settings


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
    backend.require(spec.get("backend", "tensorflow"))
    backend.configure(threads, spec["deterministic"], spec["seed"])

    split = data.split(data.open_prepared(data_dir), spec["validation_size"], spec["train_subset"])
    n_train = len(split.x_train)
    steps_per_epoch = math.ceil(n_train / spec["batch_size"])
    model = compile_model(build(spec), spec, steps_per_epoch)

    # An interrupted run's last complete epoch: its whole state, restored before fit
    state = load_backup(backup_dir, spec)
    if state is None or not restore(model, state):
        shutil.rmtree(resume, ignore_errors=True)
        state = None
    resume.mkdir(parents=True, exist_ok=True)
    meta = state["meta"] if state else {"epoch": 0, "journal": [], "diagnostics": [], "best": {}}
    first_epoch = int(meta["epoch"])
    journalled = meta["journal"]
    best_meta = meta["best"]
    if best_meta.get("value") is not None:
        n_best = sum(k.startswith("best_") for k in state["arrays"])
        best_meta = best_meta | {"weights": [state["arrays"][f"best_{i}"] for i in range(n_best)]}

    diagnostics = Diagnostics(
        split.x_train[: spec["probe_size"]],
        split.y_train[: spec["probe_size"]],
        spec["activation"],
        spec["activation_params"],
        spec["early_steps"],
        steps_per_epoch,
        rows=meta["diagnostics"],
    )
    if state:  # the update ratios of the next probe compare with the last probe's weights
        diagnostics.previous_weights = [keras.ops.convert_to_numpy(d.kernel) for d in dense_layers(model)]
    journal = EpochJournal(journalled, resume / "history.csv")
    best = BestWeights(best_meta)
    callbacks = [
        *([HangMidEpoch()] if HANG_AT else []),
        EpochStats(),
        keras.callbacks.TerminateOnNaN(),
        diagnostics,
        journal,
        best,
        ResumableEarlyStopping(journalled, monitor="val_accuracy", mode="max", patience=spec["patience"]),
        keras.callbacks.TensorBoard(resume / "tensorboard", histogram_freq=0, write_graph=False),
        # last, so that everything above is in the epoch's backup
        EpochBackup(backup_dir, spec, {"journal": journal, "best": best, "diagnostics": diagnostics}, state),
    ]
    batches = epoch_batches(split.x_train, split.y_train, spec["batch_size"], spec["seed"], first_epoch, spec["epochs"])
    model.fit(
        batches.dataset(),
        epochs=spec["epochs"],
        validation_data=(split.x_val, split.y_val),
        validation_batch_size=1024,
        callbacks=[batches.callback(), *callbacks],
        shuffle=False,  # epoch_batches shuffles, resumably
        verbose=0,
    )

    hang_point("trained")
    history = pd.DataFrame(journal.rows).reindex(columns=HISTORY_COLUMNS)
    history["epoch"] += 1  # 1-based: epoch e is the e-th pass over the training set
    weights_finite = all(np.all(np.isfinite(keras.ops.convert_to_numpy(w))) for w in model.weights)
    losses = history[["loss", "val_loss"]].to_numpy(dtype=float)
    # NaN/inf, or a loss so large (ln 10 = 2.3 is a uniform guess) that the weights have exploded
    diverged = not weights_finite or not np.all(np.isfinite(losses)) or bool(np.any(losses > EXPLODED_LOSS))
    if not diverged and best.weights is not None:
        model.set_weights(best.weights)
    test = model.evaluate(split.x_test, split.y_test, batch_size=1024, verbose=0, return_dict=True)
    test = {k: float(v) for k, v in test.items()}
    diag = diagnostics.frame()
    summary = summarize(history, diag, spec, diverged, test, n_train)

    atomic_write(run_dir / "history.csv", lambda p: history.to_csv(p, index=False))
    hang_point("outputs-history")
    atomic_write(run_dir / "diagnostics.parquet", lambda p: diag.to_parquet(p, index=False))
    atomic_write(run_dir / "model.keras", model.save)
    hang_point("outputs-model")
    shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)
    (resume / "tensorboard").mkdir(exist_ok=True)  # absent if a rerun found training already done
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
    hang_point("outputs-run.json")
    shutil.rmtree(resume, ignore_errors=True)
    return record

