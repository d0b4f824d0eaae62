"""Run folders -> the tidy tables of a study (`results/tables/`).

- runs:        one row per run: every grid axis, `seed`, the summary metrics of run.json (among them
               the run measures and verdicts, `outcomes.RUN_MEASURES`, derived once by
               `diagnostics.run_measures`), `steps_per_epoch` (from the diagnostics' epoch probes)
               and `probe_seconds`.
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

from gradatlas import grid
from gradatlas.outcomes import RUN_MEASURES


class StaleRunError(ValueError):
    """A run folder whose recorded spec differs from what the current config asks for."""


class BrokenRunError(ValueError):
    """A run folder whose run.json cannot be read or lacks what aggregation needs; names the file."""


def read_record(path: Path) -> dict:
    """run.json as a dict; a missing, unreadable or malformed file raises BrokenRunError naming it."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise BrokenRunError(
            f"{path}: cannot read this run.json ({type(error).__name__}: {error}). Delete the run folder or "
            "rerun snakemake (it trains the run again) before aggregating."
        ) from error
    missing = [key for key in ("cell", "spec", "summary") if not isinstance(record, dict) or key not in record]
    if missing:
        raise BrokenRunError(f"{path}: run.json lacks {', '.join(missing)}; rerun this run before aggregating.")
    return record


def _differences(recorded: dict, expected: dict) -> list[str]:
    keys = sorted(set(recorded) | set(expected))
    return [
        f"{k}: ran with {recorded.get(k)!r}, config now says {expected.get(k)!r}"
        for k in keys
        if recorded.get(k) != expected.get(k)
    ]


def read_run(run_dir: Path, config: dict) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """One complete run: (run.json, history, diagnostics), checked against the config."""
    run_dir = Path(run_dir)
    record = read_record(run_dir / "run.json")
    expected = grid.run_spec(config, record["cell"]).as_dict()
    diffs = _differences(json.loads(json.dumps(record["spec"])), json.loads(json.dumps(expected)))
    if diffs:
        raise StaleRunError(
            f"{run_dir}: this run does not match the current config ({'; '.join(diffs)}). "
            "Delete the folder and rerun snakemake (it trains the run with the current config)."
        )
    history = _read(run_dir / "history.csv", pd.read_csv)
    diagnostics = _read(run_dir / "diagnostics.parquet", pd.read_parquet)
    return record, history, diagnostics


def _read(path: Path, reader) -> pd.DataFrame:
    try:
        return reader(path)
    except Exception as error:  # any reader failure: say which file
        raise BrokenRunError(f"{path}: cannot read it ({type(error).__name__}: {error}); rerun this run.") from error


def steps_per_epoch(diagnostics: pd.DataFrame) -> float:
    """Optimizer steps per epoch, from the epoch-end probes (step / epoch); NaN without one."""
    rows = diagnostics[(diagnostics["phase"] == "epoch") & (pd.to_numeric(diagnostics["epoch"], errors="coerce") > 0)]
    if rows.empty:
        return np.nan
    ratio = (rows["step"].astype(float) / rows["epoch"].astype(float)).round()
    return float(ratio.iloc[0])


def tables(run_dirs: list[Path], config: dict) -> dict[str, pd.DataFrame]:
    axes = grid.axes(config)
    runs, curves, diags = [], [], []
    for run_dir in run_dirs:
        record, history, diagnostics = read_run(run_dir, config)
        keys = {axis: record["cell"][axis] for axis in axes} | {"seed": record["cell"]["seed"]}
        summary = record["summary"]
        missing = [name for name in RUN_MEASURES if name not in summary]
        if missing:
            raise BrokenRunError(
                f"{run_dir / 'run.json'}: its summary lacks {', '.join(missing)} (trained by an older GradAtlas); "
                "rerun snakemake, which trains such runs again."
            )
        extra = {"steps_per_epoch": steps_per_epoch(diagnostics), "probe_seconds": record.get("probe_seconds", np.nan)}
        runs.append(keys | summary | extra)
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
