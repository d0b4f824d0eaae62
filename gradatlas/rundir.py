"""A run's folder: what it holds, writing it (run.json last: its presence marks the run finished),
and cleaning what an interrupted attempt left. Light (no Keras): the workflow's rules import the
file list from here (workflow/rules/common.smk)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from gradatlas import diagnostics
from gradatlas.files import atomic_write, write_json
from gradatlas.outcomes import STATUSES

RUN_OUTPUTS = ("run.json", "history.csv", "diagnostics.parquet", "model.keras")  # files
RUN_FOLDERS = ("tensorboard",)  # folders
RUN_FILES = RUN_OUTPUTS + RUN_FOLDERS
HISTORY_COLUMNS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"]


def clean(run_dirs) -> None:
    """Remove what a previous, interrupted attempt left of these run folders' outputs (a complete
    file is replaced atomically when written again; a folder and a half-written file are not)."""
    for run_dir in map(Path, run_dirs):
        for name in RUN_FOLDERS:
            shutil.rmtree(run_dir / name, ignore_errors=True)
        for partial in run_dir.glob(".*.partial*"):
            partial.unlink(missing_ok=True)


def write(
    run_dir: Path,
    history: pd.DataFrame,
    diag: pd.DataFrame,
    save_model,
    tensorboard,
    record: dict,
    stage=lambda name: None,
) -> None:
    """Write one run's folder: history.csv, diagnostics.parquet, model.keras (`save_model(path)`),
    tensorboard/ (a copy of the `tensorboard.RunLog`'s folder, finished here) and run.json (`record`),
    last. `stage(name)` after each part ("history", "model", "run.json")."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(run_dir / "history.csv", lambda path: history.to_csv(path, index=False))
    atomic_write(run_dir / "diagnostics.parquet", lambda path: diag.to_parquet(path, index=False))
    stage("history")
    atomic_write(run_dir / "model.keras", save_model)
    stage("model")
    tensorboard.finish(record["cell"], record["summary"])
    # copied, not moved: a kill before the pack is complete must find every member's events there
    shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)
    shutil.copytree(tensorboard.folder, run_dir / "tensorboard")
    write_json(run_dir / "run.json", record)
    stage("run.json")


def history_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows).reindex(columns=HISTORY_COLUMNS)


def summarize(
    history: pd.DataFrame, diag: pd.DataFrame, spec, diverged: bool, test: dict, n_train: int, pack_size: int = 1
) -> dict:
    """The run's summary metrics (the columns of `runs.parquet`, README "Tables").

    A pack trains its members together: `pack_seconds` is the pack's wall-clock time, and each
    member's `train_seconds` its share (pack_seconds / pack_size), so that a study's runs add up to
    its wall-clock training time; `samples_per_second` is the run's throughput at that share."""
    val = history["val_accuracy"]
    finite = val[np.isfinite(val)]
    best_index = finite.idxmax() if len(finite) else None
    reached = history.loc[val >= spec.target_accuracy, "epoch"]
    best_val = float(finite.max()) if len(finite) else math.nan
    converged, stalled, diverged_ = STATUSES
    if diverged:
        status = diverged_
    elif not best_val >= spec.stall_accuracy:
        status = stalled
    else:
        status = converged
    pack_seconds = float(history["seconds"].sum())
    seconds = pack_seconds / max(int(pack_size), 1)
    return {
        "status": status,
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "best_val_accuracy": best_val,
        "best_epoch": int(history.loc[best_index, "epoch"]) if best_index is not None else None,
        "epochs_run": int(len(history)),
        "epochs_to_target": int(reached.iloc[0]) if len(reached) else None,
        "train_seconds": seconds,
        "pack_seconds": pack_seconds,
        "pack_size": int(pack_size),
        "samples_per_second": n_train * len(history) / seconds if seconds > 0 else math.nan,
        **diagnostics.run_measures(diag, diverged),
    }
