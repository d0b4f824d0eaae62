"""Run folders -> the tidy tables of a study (`results/tables/`).

- runs:        one row per run: every grid axis, `seed`, the summary metrics, `saturated_frac_epoch1`,
               `dead_frac_epoch1` (mean over hidden layers at the end of epoch 1), and `probe_seconds`.
- curves:      one row per run and epoch: run keys + history.csv's columns.
- diagnostics: one row per run, probe and layer: run keys + diagnostics.parquet's columns.

Only complete runs (with `run.json`) are read, and each must have been trained with the spec the
current config gives its cell: a stale or foreign run folder is refused, not averaged in.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from gradatlas import config as gaconfig


class StaleRunError(ValueError):
    """A run folder whose recorded spec differs from what the current config asks for."""


def _differences(recorded: dict, expected: dict) -> list[str]:
    keys = sorted(set(recorded) | set(expected))
    return [f"{k}: ran with {recorded.get(k)!r}, config now says {expected.get(k)!r}" for k in keys
            if recorded.get(k) != expected.get(k)]  # fmt: skip


def read_run(run_dir: Path, config: dict) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """One complete run: (run.json, history, diagnostics), checked against the config."""
    run_dir = Path(run_dir)
    record = json.loads((run_dir / "run.json").read_text())
    expected = gaconfig.run_spec(config, record["cell"]).as_dict()
    diffs = _differences(json.loads(json.dumps(record["spec"])), json.loads(json.dumps(expected)))
    if diffs:
        raise StaleRunError(
            f"{run_dir}: this run does not match the current config ({'; '.join(diffs)}). "
            "Delete the folder or rerun it (snakemake --forcerun train) before aggregating."
        )
    history = pd.read_csv(run_dir / "history.csv")
    diagnostics = pd.read_parquet(run_dir / "diagnostics.parquet")
    return record, history, diagnostics


def epoch1_means(diagnostics: pd.DataFrame) -> dict:
    """Saturated and dead fractions over hidden layers at the end of epoch 1."""
    rows = diagnostics[(diagnostics["phase"] == "epoch") & (diagnostics["layer_kind"] == "hidden")]
    first = rows[rows["step"] == rows["step"].min()] if len(rows) else rows
    return {
        "saturated_frac_epoch1": float(first["saturated_frac"].mean()) if len(first) else np.nan,
        "dead_frac_epoch1": float(first["dead_frac"].mean()) if len(first) else np.nan,
    }


def tables(run_dirs: list[Path], config: dict) -> dict[str, pd.DataFrame]:
    axes = gaconfig.axes(config)
    runs, curves, diags = [], [], []
    for run_dir in run_dirs:
        record, history, diagnostics = read_run(run_dir, config)
        keys = {axis: record["cell"][axis] for axis in axes} | {"seed": record["cell"]["seed"]}
        runs.append(keys | record["summary"] | epoch1_means(diagnostics) | {"probe_seconds": record["probe_seconds"]})
        curves.append(history.assign(**keys))
        diags.append(diagnostics.assign(**keys))
    key_cols = axes + ["seed"]

    def keyed_first(frames):
        frame = pd.concat(frames, ignore_index=True)
        return frame[key_cols + [c for c in frame.columns if c not in key_cols]]

    runs_frame = pd.DataFrame(runs)
    for column in ("epochs_to_target", "best_epoch"):
        runs_frame[column] = runs_frame[column].astype("Float64")  # empty when never reached
    return {"runs": runs_frame, "curves": keyed_first(curves), "diagnostics": keyed_first(diags)}


def write(tables_: dict[str, pd.DataFrame], out_dir: Path) -> None:
    from gradatlas.files import atomic_write

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, frame in tables_.items():
        atomic_write(out_dir / f"{name}.parquet", lambda p, f=frame: f.to_parquet(p, index=False))
        atomic_write(out_dir / f"{name}.csv", lambda p, f=frame: f.to_csv(p, index=False))
