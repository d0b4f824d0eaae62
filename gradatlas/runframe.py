"""The per-run frame the analysis tables describe: level labels, the nuisance axes optimized away, and
every outcome derived from a run's numbers (`outcome_frame`, `convergence_outcomes`), once.

Levels are strings everywhere (`label_levels`), so numeric and named axes share one column and a
missing value (e.g. `clipnorm: null`) is the level "none" instead of a NaN that breaks index keys.
Gradient health is each run's verdict (`health_init`, `health_final`; gradatlas.outcomes), read from
the runs table, never recomputed here. At initialization only distinct networks count: runs that
differ only in what cannot act before the first update (`catalog.acts_before_first_step`) are one
network, counted once.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pandas as pd

from gradatlas.catalog import acts_before_first_step
from gradatlas.outcomes import HEALTH_CLASSES

RELATIVE_TARGET = 0.95  # share of the study's best validation accuracy that defines the relative target
CHANCE_ACCURACY = 0.1  # a diverged network's validation accuracy after divergence (10 classes)
FLOW_WHEN = {"init": "vanishing_ratio_init", "final": "vanishing_ratio_final"}
EPOCH1_FRACTIONS = ("saturated_frac_epoch1", "inactive_frac_epoch1", "dead_frac_epoch1")


class Outcome(NamedTuple):
    """An analysed outcome: its column in `outcome_frame(runs)`, which direction is better, a label."""

    column: str
    direction: str  # "higher" or "lower"
    label: str


OUTCOMES: dict[str, Outcome] = {
    "test_accuracy": Outcome("test_accuracy", "higher", "test accuracy (fraction correct)"),
    "best_val_accuracy": Outcome("best_val_accuracy", "higher", "best validation accuracy (fraction correct)"),
    "val_auc": Outcome("val_auc", "higher", "area under the validation-accuracy curve (0-1)"),
    "epochs_to_target": Outcome("epochs_to_target", "lower", "epochs to train.target_accuracy (epochs)"),
    "epochs_to_relative_target": Outcome(
        "epochs_to_relative_target", "lower", "epochs to the relative target (epochs)"
    ),
    # |log10 delta ratio|: 0 = the error signal reaches layer 1 unchanged; 2 = a hundredfold shrink or growth.
    "flow_distance_init": Outcome(
        "flow_distance_init", "lower", "distance from healthy gradient flow at init (|log10 delta ratio|)"
    ),
    "flow_distance_final": Outcome(
        "flow_distance_final", "lower", "distance from healthy gradient flow after training (|log10 delta ratio|)"
    ),
    "saturated_frac_epoch1": Outcome(
        "saturated_frac_epoch1", "lower", "saturated share after epoch 1 (saturating activations only, 0-1)"
    ),
    "inactive_frac_epoch1": Outcome(
        "inactive_frac_epoch1", "lower", "inactive share after epoch 1 (ReLU family only, 0-1)"
    ),
    "dead_frac_epoch1": Outcome("dead_frac_epoch1", "lower", "dead units after epoch 1 (fraction of hidden units)"),
}
DERIVED = "gradatlas.outcomes_derived"  # the mark `outcome_frame` leaves in a frame's attrs


# --- levels, statuses, families -----------------------------------------------------------------
def level_label(level) -> str:
    """How a level reads everywhere: its string, "none" for a missing value (null axis)."""
    if level is None or (isinstance(level, float) and math.isnan(level)) or level is pd.NA:
        return "none"
    return str(level)


def label_levels(frame: pd.DataFrame, axes) -> pd.DataFrame:
    """A copy of `frame` whose `axes` columns are level labels (strings, "none" for null)."""
    out = frame.copy()
    for axis in axes:
        if axis in out.columns:
            out[axis] = out[axis].astype(object).map(level_label)
    return out


def activation_family(activation: str) -> str:
    """'relu' for the ReLU family (inactive_frac is defined), 'saturating' otherwise (saturated_frac)."""
    from gradatlas import catalog

    entry = catalog.ACTIVATIONS.get(str(activation))
    return "relu" if entry is not None and getattr(entry, "inactive_is_saturated", False) else "saturating"


def init_levels(frame: pd.DataFrame, factors) -> pd.DataFrame:
    """`frame` (labelled levels) with every level replaced by what the network is at initialization:
    levels that cannot act before the first update become one label naming them all (e.g.
    'none = l2 = dropout'; an axis that never acts, e.g. the optimizer, has one label)."""
    out = frame.copy()
    for factor in factors:
        levels = list(dict.fromkeys(out[factor]))
        inert = [level for level in levels if not acts_before_first_step(factor, level)]
        if len(inert) > 1:
            out[factor] = out[factor].replace(dict.fromkeys(inert, " = ".join(inert)))
    return out


def distinct_at_init(frame: pd.DataFrame, factors) -> pd.DataFrame:
    """One row per distinct initial network: `init_levels`, then duplicates of (factors, seed) dropped."""
    out = init_levels(frame, factors)
    return out.drop_duplicates(subset=[*factors, "seed"], keep="first").reset_index(drop=True)


def inert_at_init(frame: pd.DataFrame, factor: str) -> bool:
    """True when no level of `factor` in `frame` can act before the first update."""
    return (
        not any(acts_before_first_step(factor, level) for level in frame[factor].unique())
        and frame[factor].nunique() > 1
    )


def health_counts(classes) -> dict:
    """{class: runs} over HEALTH_CLASSES (runs without a verdict are not counted)."""
    values = pd.Series(list(classes), dtype=object)
    return {c: int((values == c).sum()) for c in HEALTH_CLASSES}


def describe_health(counts: dict) -> str:
    """'6 of 8 healthy, 2 saturated' (the classes with runs, healthy first)."""
    n = sum(counts.values())
    parts = [f"{counts[c]} {c}" for c in HEALTH_CLASSES if counts[c] and c != "healthy"]
    return f"{counts['healthy']} of {n} healthy" + (", " + ", ".join(parts) if parts else "")


# --- run-level outcomes -------------------------------------------------------------------------
def outcome_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """A copy of `runs` with the derived outcome columns.

    Adds, for each of `vanishing_ratio_init` / `vanishing_ratio_final` present: `log10_vanishing_ratio_<when>`
    (NaN where the ratio is missing or not positive) and `flow_distance_<when>` (its absolute value).
    The verdicts (`health_<when>`) come from the runs table as they are. A diverged run's
    `saturated_frac_epoch1`, `inactive_frac_epoch1` and `dead_frac_epoch1` are set to NaN: a NaN
    network says nothing about its units. The copy is marked (`attrs`, kept by pandas through
    selections and by parquet), so `outcomes_of` never derives the same frame twice.
    """
    out = runs.copy()
    for when, source in FLOW_WHEN.items():
        if source in out.columns:
            ratio = pd.to_numeric(out[source], errors="coerce").astype(float)
            log = np.log10(ratio.where(ratio > 0))
            out[f"log10_vanishing_ratio_{when}"] = log
            out[f"flow_distance_{when}"] = log.abs()
    if "status" in out.columns:
        diverged = out["status"] == "diverged"
        for column in EPOCH1_FRACTIONS:
            if column in out.columns:
                out[column] = pd.to_numeric(out[column], errors="coerce").astype(float).mask(diverged)
    out.attrs[DERIVED] = True
    return out


def outcomes_of(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` itself when it is already an `outcome_frame` (as `study_tables` passes it down), else
    its outcome frame: every table function accepts a runs table too."""
    return frame if frame.attrs.get(DERIVED) else outcome_frame(frame)


def run_keys(frame: pd.DataFrame, axes) -> list[str]:
    return [a for a in axes if a in frame.columns] + (["seed"] if "seed" in frame.columns else [])


def complete_curves(
    curves: pd.DataFrame, runs: pd.DataFrame, keys: list[str], epochs: int | None = None
) -> pd.DataFrame:
    """Every run's validation curve over epochs 1..`epochs`, nobody dropped.

    After an early stop a run keeps its best validation accuracy so far (the restored weights); a
    non-finite value and every epoch after a divergence count as chance (CHANCE_ACCURACY). Output:
    `keys`, epoch, val_accuracy, filled ("observed" | "early_stop" | "diverged").
    """
    columns = [*keys, "epoch", "val_accuracy", "filled"]
    if curves.empty or runs.empty:
        return pd.DataFrame(columns=columns)
    epochs = int(epochs or curves["epoch"].max())
    status = (
        dict(zip(map(tuple, runs[keys].itertuples(index=False, name=None)), runs["status"]))
        if "status" in runs.columns
        else {}
    )
    frames = []
    for key, group in curves.groupby(keys, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        observed = group.set_index("epoch")["val_accuracy"].astype(float)
        observed = observed[~observed.index.duplicated(keep="last")]
        diverged = status.get(key) == "diverged"
        values, filled, best, dead = [], [], CHANCE_ACCURACY, False
        for epoch in range(1, epochs + 1):
            v = observed.get(epoch, np.nan)
            if epoch in observed.index and np.isfinite(v) and not dead:
                best = max(best, v)
                values.append(v)
                filled.append("observed")
            elif dead or diverged or epoch in observed.index:
                dead = True
                values.append(CHANCE_ACCURACY)
                filled.append("diverged")
            else:
                values.append(best)
                filled.append("early_stop")
        frame = pd.DataFrame({"epoch": range(1, epochs + 1), "val_accuracy": values, "filled": filled})
        for k, v in zip(keys, key):
            frame[k] = v
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)[columns]


def convergence_outcomes(
    runs: pd.DataFrame,
    completed: pd.DataFrame | None,
    axes,
    relative_share: float = RELATIVE_TARGET,
) -> pd.DataFrame:
    """`runs` plus the speed outcomes that always say something, also when no run reaches the target.

    `completed` is `complete_curves` of the runs' curves. Adds `relative_target` (relative_share x the
    study's best best_val_accuracy), `val_auc` (mean of the completed validation curve over the epoch
    budget: the area under it, 0-1), `epochs_to_relative_target` (first epoch at or above the relative
    target; NaN never), and, with a `steps_per_epoch` column, `steps_to_target` and
    `steps_to_relative_target`. Without curves only the steps columns are added.
    """
    out = runs.copy()
    if "steps_per_epoch" in out.columns:
        spe = pd.to_numeric(out["steps_per_epoch"], errors="coerce").astype(float)
        if "epochs_to_target" in out.columns:
            out["steps_to_target"] = pd.to_numeric(out["epochs_to_target"], errors="coerce").astype(float) * spe
    if completed is None or completed.empty or "best_val_accuracy" not in out.columns:
        return out
    keys = run_keys(out, axes)
    best = pd.to_numeric(out["best_val_accuracy"], errors="coerce").astype(float).max()
    target = relative_share * best if np.isfinite(best) else np.nan
    per_run = completed.groupby(keys, sort=False, dropna=False).agg(val_auc=("val_accuracy", "mean")).reset_index()
    hits = completed[(completed["filled"] == "observed") & (completed["val_accuracy"] >= target)]
    first = hits.groupby(keys, sort=False, dropna=False)["epoch"].min().rename("epochs_to_relative_target")
    per_run = per_run.merge(first.reset_index(), on=keys, how="left")
    out = out.drop(columns=[c for c in ("val_auc", "epochs_to_relative_target") if c in out.columns])
    out = out.merge(per_run, on=keys, how="left")
    out["relative_target"] = target
    out["epochs_to_relative_target"] = out["epochs_to_relative_target"].astype(float)
    if "steps_per_epoch" in out.columns:
        out["steps_to_relative_target"] = out["epochs_to_relative_target"] * pd.to_numeric(
            out["steps_per_epoch"], errors="coerce"
        ).astype(float)
    return out


# --- nuisance selection -------------------------------------------------------------------------
def select_nuisance(runs: pd.DataFrame, nuisance_axes: list[str], factors: list[str]) -> pd.DataFrame:
    """Optimize the nuisance axes away, as in the Deep Learning Tuning Playbook.

    For each combination of the remaining axes (`factors` minus the nuisance axes) and `seed`, keep
    the run with the highest `best_val_accuracy`. Test metrics are never consulted. Runs whose
    validation accuracy is missing (e.g. diverged) are chosen only when every candidate is missing,
    so no combination disappears. Ties go to the earlier row of `runs`.

    Output: the columns of `runs`, one row per (remaining axes, seed), each nuisance column renamed
    `chosen_<axis>`; row order follows `runs`. Without nuisance axes, a copy of `runs`.
    """
    if not nuisance_axes:
        return runs.copy()
    keys = [f for f in factors if f not in nuisance_axes] + ["seed"]
    best_first = runs.reset_index(drop=True).sort_values(
        "best_val_accuracy", ascending=False, na_position="last", kind="stable"
    )
    winners = best_first.index[~best_first.duplicated(subset=keys, keep="first")]
    chosen = runs.iloc[np.sort(winners)]
    return chosen.rename(columns={axis: f"chosen_{axis}" for axis in nuisance_axes})


def chosen_rows(frame: pd.DataFrame, chosen: pd.DataFrame, studied: list[str], nuisance: list[str]) -> pd.DataFrame:
    """Rows of a per-run table (curves, diagnostics) that belong to the runs `select_nuisance` kept.

    Both tables must carry the same level labels (`label_levels`). Without nuisance axes, `frame`.
    """
    nuisance = [a for a in nuisance if a in frame.columns]
    if not nuisance:
        return frame
    keys = [*studied, "seed", *nuisance]
    picked = chosen.rename(columns={f"chosen_{a}": a for a in nuisance})[keys].drop_duplicates()
    return frame.merge(picked, on=keys, how="inner")


def health_frame(runs: pd.DataFrame, factors: list[str], when: str) -> pd.DataFrame:
    """The runs a verdict `when` (init | final) is read from: at init one row per distinct network
    (`distinct_at_init`), after training every run."""
    data = outcomes_of(runs)
    return distinct_at_init(data, factors) if when == "init" else data
