"""Run folders -> the tidy tables of a study (`results/tables/`).

- runs:        one row per run: every grid axis, `seed`, the summary metrics of run.json (for the
               unit fractions at the end of epoch 1 the summary's values, else computed here the same
               way), `steps_per_epoch` (from the diagnostics' epoch probes) and `probe_seconds`.
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
from gradatlas import diagnostics as diagnostics_module



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
            "rerun it (snakemake --forcerun train) before aggregating."
        ) from error
    missing = [key for key in ("cell", "spec", "summary") if not isinstance(record, dict) or key not in record]
    if missing:
        raise BrokenRunError(f"{path}: run.json lacks {', '.join(missing)}; rerun this run before aggregating.")
    return record


def _differences(recorded: dict, expected: dict) -> list[str]:
    keys = sorted(set(recorded) | set(expected))
    return [f"{k}: ran with {recorded.get(k)!r}, config now says {expected.get(k)!r}" for k in keys
            if recorded.get(k) != expected.get(k)]  # fmt: skip


def read_run(run_dir: Path, config: dict) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """One complete run: (run.json, history, diagnostics), checked against the config."""
    run_dir = Path(run_dir)
    record = read_record(run_dir / "run.json")
    expected = gaconfig.run_spec(config, record["cell"]).as_dict()
    diffs = _differences(json.loads(json.dumps(record["spec"])), json.loads(json.dumps(expected)))
    if diffs:
        raise StaleRunError(
            f"{run_dir}: this run does not match the current config ({'; '.join(diffs)}). "
            "Delete the folder or rerun it (snakemake --forcerun train) before aggregating."
        )
    history = _read(run_dir / "history.csv", pd.read_csv)
    diagnostics = _read(run_dir / "diagnostics.parquet", pd.read_parquet)
    return record, history, diagnostics


UNIT_FRACTIONS = ("saturated_frac", "inactive_frac", "dead_frac")


def finite_probes(diagnostics: pd.DataFrame) -> pd.DataFrame:
    """`diagnostics` with the unit fractions blanked at probes where the network was non-finite.

    A diverged network's probe says nothing about its units (an old engine recorded it as every unit
    dead, none saturated): where the probe's gradient or error statistics are not finite, the
    fractions become NaN for every layer of that probe.
    """
    out = diagnostics.copy()
    checks = [c for c in ("grad_w_norm", "delta_rms", "act_std") if c in out.columns]
    if not checks or out.empty:
        return out
    bad_row = ~np.isfinite(out[checks].apply(pd.to_numeric, errors="coerce").astype(float)).all(axis=1)
    keys = [c for c in out.columns if c not in diagnostics_module.COLUMNS] + ["step"]
    bad = bad_row.groupby([out[k] for k in keys], dropna=False).transform("any") if keys else bad_row
    for column in UNIT_FRACTIONS:
        if column in out.columns:
            out[column] = pd.to_numeric(out[column], errors="coerce").astype(float).mask(bad)
    return out


def _read(path: Path, reader) -> pd.DataFrame:
    try:
        return reader(path)
    except Exception as error:  # any reader failure: say which file
        raise BrokenRunError(f"{path}: cannot read it ({type(error).__name__}: {error}); rerun this run.") from error


def epoch1_means(diagnostics: pd.DataFrame) -> dict:
    """Mean over hidden layers, at the end of epoch 1, of each unit fraction (NaN where undefined:
    saturated_frac for the ReLU family, inactive_frac otherwise, and at a non-finite probe)."""
    diagnostics = finite_probes(diagnostics)
    rows = diagnostics[(diagnostics["phase"] == "epoch") & (diagnostics["layer_kind"] == "hidden")]
    first = rows[rows["step"] == rows["step"].min()] if len(rows) else rows
    out = {}
    for column in UNIT_FRACTIONS:
        values = pd.to_numeric(first[column], errors="coerce") if column in first.columns else pd.Series(dtype=float)
        out[f"{column}_epoch1"] = float(values.mean()) if values.notna().any() else np.nan
    return out


def steps_per_epoch(diagnostics: pd.DataFrame) -> float:
    """Optimizer steps per epoch, from the epoch-end probes (step / epoch); NaN without one."""
    rows = diagnostics[(diagnostics["phase"] == "epoch") & (pd.to_numeric(diagnostics["epoch"], errors="coerce") > 0)]
    if rows.empty:
        return np.nan
    ratio = (rows["step"].astype(float) / rows["epoch"].astype(float)).round()
    return float(ratio.iloc[0])


def tables(run_dirs: list[Path], config: dict) -> dict[str, pd.DataFrame]:
    axes = gaconfig.axes(config)
    runs, curves, diags = [], [], []
    for run_dir in run_dirs:
        record, history, diagnostics = read_run(run_dir, config)
        keys = {axis: record["cell"][axis] for axis in axes} | {"seed": record["cell"]["seed"]}
        summary = dict(record["summary"])
        for column, value in epoch1_means(diagnostics).items():  # the engine's summary wins where it has one
            summary.setdefault(column, value)
        extra = {"steps_per_epoch": steps_per_epoch(diagnostics), "probe_seconds": record.get("probe_seconds", np.nan)}
        runs.append(keys | summary | extra)
        curves.append(history.assign(**keys))
        diags.append(finite_probes(diagnostics).assign(**keys))
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
