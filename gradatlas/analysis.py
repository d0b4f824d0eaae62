"""Statistics over the runs table: the headline answer, gradient flow, convergence speed, effects with
honest intervals, variance decomposition, leaderboards and plain-language findings.

Every function is pure: tables in, a new tidy DataFrame (or a list of sentences) out; nothing is read
or written. `factors` always names grid axes (never `seed`). Levels are strings everywhere
(`label_levels`), so numeric and named axes share one column and a missing value (e.g.
`clipnorm: null`) is the level "none" instead of a NaN that breaks index keys.

Intervals are 95% t-intervals (mean ± t(0.975, n-1)·s/√n): with 2-3 seeds they are wide, as they
should be, and with fewer than two values they are NaN and printed "n/a". Every printed interval
carries its n (`format_estimate`).

Gradient health is each run's verdict (`health_init`, `health_final`: healthy, vanishing, exploding,
saturated, dead or diverged, from every diagnostic; gradatlas.outcomes), read from the runs table, never
recomputed here. A level's verdict is its distribution over the classes (shares with n), never the
class of a median; levels rank by their share of healthy runs, then by the distance from healthy flow
|log10 delta ratio|. At initialization only distinct networks count: runs that differ only in what
cannot act before the first update (`catalog.acts_before_first_step`) are one network, counted once.
"""

from __future__ import annotations

import math
import re
from itertools import combinations
from typing import NamedTuple

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy import stats
from statsmodels.stats.anova import anova_lm

from gradatlas.config import FACTORS
from gradatlas.catalog import acts_before_first_step
from gradatlas.outcomes import FLOW_EXPLODING_ABOVE, FLOW_VANISHING_BELOW, HEALTH_CLASSES, HEALTH_RULES, STATUSES
from gradatlas.registry import ANALYSIS_TABLES, NUISANCE_TABLE

CI_LEVEL = 0.95
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
LEADERBOARD_OUTCOMES = ("test_accuracy", "val_auc", "flow_distance_init")


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
    return not any(acts_before_first_step(factor, level) for level in frame[factor].unique()) and frame[factor].nunique() > 1


def health_counts(classes) -> dict:
    """{class: runs} over HEALTH_CLASSES (runs without a verdict are not counted)."""
    values = pd.Series(list(classes), dtype=object)
    return {c: int((values == c).sum()) for c in HEALTH_CLASSES}


def describe_health(counts: dict) -> str:
    """'6 of 8 healthy, 2 saturated' (the classes with runs, healthy first)."""
    n = sum(counts.values())
    parts = [f"{counts[c]} {c}" for c in HEALTH_CLASSES if counts[c] and c != "healthy"]
    return f"{counts['healthy']} of {n} healthy" + (", " + ", ".join(parts) if parts else "")


# --- intervals ----------------------------------------------------------------------------------
def t_interval(values) -> tuple[float, float]:
    """95% t-interval of the mean of the finite `values`; (NaN, NaN) with fewer than two of them."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size < 2:
        return np.nan, np.nan
    mean = values.mean()
    half = stats.t.ppf(0.5 + CI_LEVEL / 2, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size)
    return float(mean - half), float(mean + half)


def welch_interval(a, b) -> tuple[float, float]:
    """95% Welch t-interval of mean(a) - mean(b); NaN unless both have two finite values."""
    a, b = (np.asarray(v, dtype=float) for v in (a, b))
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size < 2 or b.size < 2:
        return np.nan, np.nan
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = np.sqrt(va + vb)
    if se == 0:
        d = a.mean() - b.mean()
        return float(d), float(d)
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    half = stats.t.ppf(0.5 + CI_LEVEL / 2, df) * se
    d = a.mean() - b.mean()
    return float(d - half), float(d + half)


def format_ci(low, high, n, fmt: str = "+.3f", unit: str = "") -> str:
    """'95% CI a to b, n=N unit', or '95% CI n/a, n=N unit' when the interval is unavailable: never '+nan'."""
    n = int(n) if n is not None and np.isfinite(n) else 0
    count = f"n={n}{' ' + unit if unit else ''}"
    if low is None or high is None or not (np.isfinite(low) and np.isfinite(high)):
        return f"95% CI n/a, {count}"
    return f"95% CI {low:{fmt}} to {high:{fmt}}, {count}"


def format_estimate(mean, low, high, n, fmt: str = "+.3f", unit: str = "") -> str:
    """'mean (95% CI a to b, n=N unit)'; 'n/a (n=0)' without a value."""
    if mean is None or not np.isfinite(mean):
        n = int(n) if n is not None and np.isfinite(n) else 0
        return f"n/a (n={n}{' ' + unit if unit else ''})"
    return f"{mean:{fmt}} ({format_ci(low, high, n, fmt, unit)})"


def power_of_ten(log10_value: float) -> str:
    """10^x as text, e.g. '10^-2.5 (~316x smaller)'."""
    if not np.isfinite(log10_value):
        return "n/a"
    factor = 10 ** abs(log10_value)
    size = f"{factor:.0f}" if factor >= 10 else f"{factor:.1f}"
    if abs(log10_value) < 0.05:
        return f"10^{log10_value:+.1f} (unchanged)"
    return f"10^{log10_value:+.1f} (~{size}x {'smaller' if log10_value < 0 else 'larger'})"


# --- run-level outcomes -------------------------------------------------------------------------
def outcome_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """A copy of `runs` with the derived outcome columns.

    Adds, for each of `vanishing_ratio_init` / `vanishing_ratio_final` present: `log10_vanishing_ratio_<when>`
    (NaN where the ratio is missing or not positive) and `flow_distance_<when>` (its absolute value).
    The verdicts (`health_<when>`) come from the runs table as they are. A diverged run's `saturated_frac_epoch1`, `inactive_frac_epoch1` and `dead_frac_epoch1` are
    set to NaN: a NaN network says nothing about its units.
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
    return out


def run_keys(frame: pd.DataFrame, axes) -> list[str]:
    return [a for a in axes if a in frame.columns] + (["seed"] if "seed" in frame.columns else [])


def complete_curves(curves: pd.DataFrame, runs: pd.DataFrame, keys: list[str], epochs: int | None = None) -> pd.DataFrame:
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
        if "status" in runs.columns else {}
    )  # fmt: skip
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
    runs: pd.DataFrame, curves: pd.DataFrame | None, axes, epochs: int | None = None,
    relative_share: float = RELATIVE_TARGET,
) -> pd.DataFrame:  # fmt: skip
    """`runs` plus the speed outcomes that always say something, also when no run reaches the target.

    Adds `relative_target` (relative_share x the study's best best_val_accuracy), `val_auc` (mean of
    the completed validation curve over epochs 1..epochs: the area under it, 0-1),
    `epochs_to_relative_target` (first epoch at or above the relative target; NaN never), and, with a
    `steps_per_epoch` column, `steps_to_target` and `steps_to_relative_target`. Without curves only
    the steps columns are added.
    """
    out = runs.copy()
    if "steps_per_epoch" in out.columns:
        spe = pd.to_numeric(out["steps_per_epoch"], errors="coerce").astype(float)
        if "epochs_to_target" in out.columns:
            out["steps_to_target"] = pd.to_numeric(out["epochs_to_target"], errors="coerce").astype(float) * spe
    if curves is None or curves.empty or "best_val_accuracy" not in out.columns:
        return out
    keys = run_keys(out, axes)
    best = pd.to_numeric(out["best_val_accuracy"], errors="coerce").astype(float).max()
    target = relative_share * best if np.isfinite(best) else np.nan
    full = complete_curves(curves, out, keys, epochs)
    per_run = full.groupby(keys, sort=False, dropna=False).agg(val_auc=("val_accuracy", "mean")).reset_index()
    hits = full[(full["filled"] == "observed") & (full["val_accuracy"] >= target)]
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


# --- effects ------------------------------------------------------------------------------------
def main_effects(runs: pd.DataFrame, factors: list[str], outcome: str) -> pd.DataFrame:
    """Mean of `outcome` per factor level over the other factors and seeds, with a t-interval.

    Output columns: factor, level, outcome, mean, ci_low, ci_high, n (runs with a value),
    share_nonmissing (n / runs at the level).
    """
    data = _with_outcome(runs, outcome)
    rows = []
    for factor in factors:
        for level, group in data.groupby(factor, dropna=False, sort=False):
            values = pd.to_numeric(group[outcome], errors="coerce").to_numpy(dtype=float)
            observed = values[np.isfinite(values)]
            low, high = t_interval(observed)
            rows.append({"factor": factor, "level": level_label(level), "outcome": outcome, "mean": _mean(observed),
                         "ci_low": low, "ci_high": high, "n": observed.size,
                         "share_nonmissing": observed.size / values.size if values.size else np.nan})  # fmt: skip
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS["main_effects"]))


def paired_differences(data: pd.DataFrame, factors: list[str], factor: str, level, other, outcome: str) -> np.ndarray:
    """outcome(level) - outcome(other) for runs paired on every other factor and the seed (finite only)."""
    keys = [f for f in factors if f != factor] + ["seed"]
    a = data.loc[data[factor] == level, [*keys, outcome]]
    b = data.loc[data[factor] == other, [*keys, outcome]]
    pairs = a.merge(b, on=keys, suffixes=("", "_other"))
    d = (pd.to_numeric(pairs[outcome], errors="coerce") - pd.to_numeric(pairs[f"{outcome}_other"], errors="coerce"))
    d = d.to_numpy(dtype=float)
    return d[np.isfinite(d)]


def paired_deltas(runs: pd.DataFrame, factors: list[str], outcome: str, baselines: dict) -> pd.DataFrame:
    """Each non-baseline level minus the baseline, paired on every other axis and the seed.

    Pairs count only where both runs have the outcome; the others are `n_missing`. Factors without
    a baseline present in the data are skipped. Each (factors, seed) must identify one run.

    Output columns: factor, level, baseline, outcome, mean_delta, ci_low, ci_high (t-interval over
    pairs), n_pairs, n_missing.
    """
    data = _with_outcome(runs, outcome)
    duplicated = data.duplicated(subset=[*factors, "seed"], keep=False)
    if duplicated.any():
        raise ValueError(
            f"{int(duplicated.sum())} runs share their {factors} and seed; reduce nuisance axes with "
            "select_nuisance or list every axis in factors"
        )
    rows = []
    for factor in factors:
        baseline = baselines.get(factor)
        if baseline is None:
            continue
        baseline = level_label(baseline)
        labels = data[factor].map(level_label)
        if not (labels == baseline).any():
            continue
        keyed = data.assign(**{factor: labels})
        keys = [f for f in factors if f != factor] + ["seed"]
        n_base = keyed.loc[keyed[factor] == baseline, keys]
        for level in dict.fromkeys(labels):
            if level == baseline:
                continue
            observed = paired_differences(keyed, factors, factor, level, baseline, outcome)
            n_matched = len(keyed.loc[keyed[factor] == level, keys].merge(n_base, on=keys))
            low, high = t_interval(observed)
            rows.append({"factor": factor, "level": level, "baseline": baseline, "outcome": outcome,
                         "mean_delta": _mean(observed), "ci_low": low, "ci_high": high, "n_pairs": observed.size,
                         "n_missing": n_matched - observed.size})  # fmt: skip
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS["paired_deltas"]))


def interaction_table(runs: pd.DataFrame, a: str, b: str, outcome: str) -> pd.DataFrame:
    """Mean of `outcome` per observed (a level, b level) cell, over the other factors and seeds.

    Output columns: <a>, <b>, outcome, mean, n (runs with a value).
    """
    data = _with_outcome(runs, outcome)
    values = pd.to_numeric(data[outcome], errors="coerce").astype(float)
    table = (
        values.groupby([data[a], data[b]], dropna=False, sort=False)
        .agg(mean="mean", n="count")
        .reset_index()
        .assign(outcome=outcome)
    )
    return table[[a, b, "outcome", "mean", "n"]]


def variance_decomposition(runs: pd.DataFrame, factors: list[str], outcome: str) -> pd.DataFrame:
    """Two-way ANOVA of `outcome`: how much of its variance each factor and factor pair explains.

    OLS with `C(factor)` main effects and all estimable two-way interactions, type-II sums of
    squares; runs with a missing outcome are dropped. Output columns: term, sum_sq, df, eta_sq,
    partial_eta_sq, F, p; effects by eta_sq descending, Residual last; empty with too few rows.
    """
    columns = ["term", "sum_sq", "df", "eta_sq", "partial_eta_sq", "F", "p"]
    data = _with_outcome(runs, outcome)
    values = pd.to_numeric(data[outcome], errors="coerce").astype(float)
    data = data.loc[values.notna()]
    model_data = data[list(factors)].astype(object).map(level_label).assign(outcome_value=values[values.notna()])
    terms = _estimable_terms(model_data, factors)
    if not terms:
        return pd.DataFrame(columns=columns)
    fit = smf.ols("outcome_value ~ " + " + ".join(terms), data=model_data).fit()
    table = anova_lm(fit, typ=2).rename(columns={"PR(>F)": "p"})
    total_ss = float(((model_data["outcome_value"] - model_data["outcome_value"].mean()) ** 2).sum())
    residual_ss = float(table.loc["Residual", "sum_sq"])
    table["eta_sq"] = table["sum_sq"] / total_ss if total_ss > 0 else np.nan
    table["partial_eta_sq"] = table["sum_sq"] / (table["sum_sq"] + residual_ss)
    table.loc["Residual", "partial_eta_sq"] = np.nan
    effects = table.drop(index="Residual").sort_values("eta_sq", ascending=False, kind="stable")
    ordered = pd.concat([effects, table.loc[["Residual"]]])
    return ordered.rename_axis("term").reset_index()[columns].reset_index(drop=True)


# --- gradient health ----------------------------------------------------------------------------
def health_frame(runs: pd.DataFrame, factors: list[str], when: str) -> pd.DataFrame:
    """The runs a verdict `when` (init | final) is read from: at init one row per distinct network
    (`distinct_at_init`), after training every run."""
    data = outcome_frame(runs)
    return distinct_at_init(data, factors) if when == "init" else data


def gradient_flow_table(runs: pd.DataFrame, factors: list[str]) -> pd.DataFrame:
    """Per (init | final) x factor x level: how the level's runs split over the verdicts
    (HEALTH_CLASSES), and their distance from healthy flow. At init only distinct networks count,
    and a factor none of whose levels can act before the first update is left out (its levels start
    from the same networks: "no effect possible at initialization").

    `rank` orders the levels of a factor (1 = keeps gradients alive best): most healthy runs first,
    then the smallest mean distance; levels equal on both share a rank (`tied`). `keeps_alive` is
    True only for an untied rank-1 level with more than half its runs healthy.
    """
    rows = []
    for when in FLOW_WHEN:
        if f"health_{when}" not in runs.columns:
            continue
        data = health_frame(runs, factors, when)
        for factor in factors:
            if data[factor].nunique(dropna=False) < 2:
                continue  # nothing to compare (at init: no level can act before the first update)
            level_rows = []
            for level, group in data.groupby(factor, dropna=False, sort=False):
                counts = health_counts(group[f"health_{when}"])
                n = sum(counts.values())
                log = group[f"log10_vanishing_ratio_{when}"].to_numpy(dtype=float)
                distance = np.abs(log[np.isfinite(log)])
                low, high = t_interval(distance)
                level_rows.append({
                    "when": when, "factor": factor, "level": level_label(level), "n": n, "n_missing": len(group) - n,
                    **{f"share_{c}": counts[c] / n if n else np.nan for c in HEALTH_CLASSES},
                    "median_log10_ratio": float(np.median(log[np.isfinite(log)])) if np.isfinite(log).any() else np.nan,
                    "mean_distance": _mean(distance), "ci_low": low, "ci_high": high,
                })  # fmt: skip
            rows += _rank_levels(level_rows)
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS["gradient_flow"]))


def _rank_levels(level_rows: list[dict]) -> list[dict]:
    """Competition ranks (1, 1, 3) by share healthy (higher first), then mean distance (lower first)."""
    def key(r):
        return (-round(_nan_to(r["share_healthy"], -1), 12), round(_nan_to(r["mean_distance"], np.inf), 12))

    ranked = sorted(level_rows, key=key)
    for i, r in enumerate(ranked):
        r["rank"] = next(j for j, other in enumerate(ranked, start=1) if key(other) == key(r))
        r["tied"] = sum(key(other) == key(r) for other in ranked) > 1
        r["keeps_alive"] = bool(r["rank"] == 1 and not r["tied"] and _nan_to(r["share_healthy"], 0) > 0.5)
    return level_rows


# --- convergence speed --------------------------------------------------------------------------
def convergence_table(runs: pd.DataFrame, factors: list[str], target: float | None = None) -> pd.DataFrame:
    """Speed per factor level that is never empty: the configured target (Kaplan-Meier, misses
    censored at their last epoch), the relative target (always reached by the best run), steps, and
    the area under the validation curve with a t-interval. `runs` comes from `convergence_outcomes`.

    `mean_rank` ranks every run's epochs to the relative target over the whole study (1 = fastest,
    misses last, ties averaged).
    """
    data = runs
    epochs_run = pd.to_numeric(data.get("epochs_run"), errors="coerce").astype(float) if "epochs_run" in data else None
    rel = pd.to_numeric(data["epochs_to_relative_target"], errors="coerce").astype(float) if "epochs_to_relative_target" in data else None
    rank = rel.fillna(np.inf).rank(method="average") if rel is not None else None
    rows = []
    for factor in factors:
        for level, index in data.groupby(factor, dropna=False, sort=False).groups.items():
            group = data.loc[index]
            row = {"factor": factor, "level": level_label(level), "n": len(group), "target": target}
            if "epochs_to_target" in group:
                hit = pd.to_numeric(group["epochs_to_target"], errors="coerce").astype(float)
                reached = hit.notna()
                row["n_reached"] = int(reached.sum())
                row["km_median_epochs"] = (
                    km_median(hit.where(reached, epochs_run.loc[index]), reached) if epochs_run is not None else np.nan
                )
                if "steps_to_target" in group:
                    row["median_steps"] = float(group["steps_to_target"].median()) if reached.any() else np.nan
            if rel is not None:
                r = rel.loc[index]
                row["relative_target"] = float(group["relative_target"].iloc[0])
                row["n_reached_relative"] = int(r.notna().sum())
                censor = epochs_run.loc[index] if epochs_run is not None else r.max()
                row["km_median_epochs_relative"] = km_median(r.where(r.notna(), censor), r.notna())
                if "steps_to_relative_target" in group:
                    row["median_steps_relative"] = (
                        float(group["steps_to_relative_target"].median()) if r.notna().any() else np.nan
                    )
                row["mean_rank"] = float(rank.loc[index].mean())
            if "val_auc" in group:
                auc = pd.to_numeric(group["val_auc"], errors="coerce").to_numpy(dtype=float)
                auc = auc[np.isfinite(auc)]
                row["mean_val_auc"], (row["ci_low"], row["ci_high"]) = _mean(auc), t_interval(auc)
                row["n_auc"] = auc.size
            rows.append(row)
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS["convergence"]))


def kaplan_meier(time, event) -> pd.DataFrame:
    """Kaplan-Meier estimate of P(target not yet reached after t epochs).

    `time` is the epoch of the event or of censoring, `event` True where the target was reached.
    Output columns: time (each distinct event time), n_at_risk, n_events, survival.
    """
    time = np.asarray(time, dtype=float)
    event = np.asarray(event, dtype=bool)
    event_times = np.unique(time[event])
    n_at_risk = (time[None, :] >= event_times[:, None]).sum(axis=1)
    n_events = (time[event][None, :] == event_times[:, None]).sum(axis=1)
    survival = np.cumprod(1.0 - n_events / n_at_risk)
    return pd.DataFrame({"time": event_times, "n_at_risk": n_at_risk, "n_events": n_events, "survival": survival})


def km_median(time, event) -> float:
    """Median time to event: first time survival <= 0.5, NaN if it never drops that far."""
    curve = kaplan_meier(time, event)
    below = curve.loc[curve["survival"] <= 0.5, "time"]
    return float(below.iloc[0]) if len(below) else np.nan


def status_counts(runs: pd.DataFrame, factors: list[str]) -> pd.DataFrame:
    """How many runs of each level converged, stalled or diverged (+ any other status; a missing one
    is "unknown"), so the counts add up to n. Output columns: factor, level, n, <statuses>."""
    status = runs["status"].fillna("unknown")
    known = STATUSES
    status_columns = [*known, *sorted(set(status) - set(known))]
    tables = []
    for factor in factors:
        counts = (
            status.groupby(runs[factor].map(level_label), dropna=False, sort=False)
            .value_counts()
            .unstack(fill_value=0)
            .reindex(columns=status_columns, fill_value=0)
        )
        counts.insert(0, "n", counts.sum(axis=1))
        tables.append(counts.rename_axis(index="level", columns=None).reset_index().assign(factor=factor))
    columns = ["factor", "level", "n", *status_columns]
    if not tables:
        return pd.DataFrame(columns=columns)
    return pd.concat(tables, ignore_index=True)[columns]


def leaderboard(runs: pd.DataFrame, axes: list[str], outcome: str, k: int = 5, direction: str | None = None) -> pd.DataFrame:
    """The k best and k worst grid cells by mean `outcome` over seeds, with t-intervals over seeds.

    For a flow distance outcome (`flow_distance_<when>`) the cells are read from `health_frame` (at
    init: distinct networks, so a cell that differs only in what cannot act yet appears once, its
    levels joined, e.g. optimizer 'sgd = adam'), and only cells with more than half their seeds
    healthy can be in the "best" group. Cells whose every seed is missing rank last.

    Output columns: rank_group, rank (1 = best of all cells), the cell's axes, outcome, mean, ci_low,
    ci_high, n_seeds, health (flow outcomes only: the seeds' verdicts, e.g. '2 of 2 healthy'; else None).
    """
    direction = direction or OUTCOMES[outcome].direction
    cell_axes = [a for a in axes if a != "seed"]
    flow_when = outcome.removeprefix("flow_distance_") if outcome.startswith("flow_distance_") else None
    data = health_frame(runs, cell_axes, flow_when) if flow_when else _with_outcome(runs, outcome)
    rows, healthy = [], []
    for cell, group in data.groupby(cell_axes, dropna=False, sort=False):
        cell = cell if isinstance(cell, tuple) else (cell,)
        values = pd.to_numeric(group[outcome], errors="coerce").to_numpy(dtype=float)
        observed = values[np.isfinite(values)]
        low, high = t_interval(observed)
        health = None
        if flow_when:
            counts = health_counts(group[f"health_{flow_when}"])
            health = describe_health(counts)
            healthy.append(counts["healthy"] > sum(counts.values()) / 2)
        rows.append({**{a: level_label(v) for a, v in zip(cell_axes, cell)}, "outcome": outcome,
                     "mean": _mean(observed), "ci_low": low, "ci_high": high, "n_seeds": observed.size,
                     "health": health})  # fmt: skip
    cells = pd.DataFrame(rows, columns=[*cell_axes, "outcome", "mean", "ci_low", "ci_high", "n_seeds", "health"])
    sign = 1 if direction == "lower" else -1
    sort_key = cells["mean"].mul(sign).fillna(np.inf)
    if flow_when:
        unhealthy = (~np.asarray(healthy, dtype=bool)).astype(int)
        order = np.lexsort((sort_key.to_numpy(), unhealthy))
    else:
        order = np.argsort(sort_key.to_numpy(), kind="stable")
    cells = cells.iloc[order].reset_index(drop=True)
    cells.insert(0, "rank", np.arange(1, len(cells) + 1))
    n_best = min(k, len(cells))
    if flow_when:
        n_best = min(n_best, int(np.sum(healthy)))
    n_worst = min(k, len(cells) - n_best)
    best = cells.iloc[:n_best].assign(rank_group="best")
    worst = cells.iloc[len(cells) - n_worst :].assign(rank_group="worst")
    board = pd.concat([best, worst], ignore_index=True)
    return board[["rank_group", *board.columns.drop("rank_group")]]


# --- the headline -------------------------------------------------------------------------------
def _compare(data, factors, factor, best, runner_up, outcome):
    """(mean difference, ci_low, ci_high, n, paired?) of best minus runner-up on `outcome`."""
    d = paired_differences(data, factors, factor, best, runner_up, outcome)
    if d.size:
        return (_mean(d), *t_interval(d), d.size, True)
    a = pd.to_numeric(data.loc[data[factor] == best, outcome], errors="coerce").to_numpy(dtype=float)
    b = pd.to_numeric(data.loc[data[factor] == runner_up, outcome], errors="coerce").to_numpy(dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    diff = a.mean() - b.mean() if a.size and b.size else np.nan
    return (diff, *welch_interval(a, b), a.size + b.size, False)


QUESTIONS = {"init": "gradient health init", "final": "gradient health final", "speed": "convergence speed"}


def headline(runs: pd.DataFrame, factors: list[str], target: float | None = None) -> pd.DataFrame:
    """Per factor, the answer to the study's question, from the numbers.

    One row per question (QUESTIONS: gradient health at init, after training, convergence speed) and
    factor with more than one level: the best level, the runner-up, their measures, and the effect
    (best minus runner-up, paired on the other axes and the seed when possible, else Welch) with its
    t-interval and n. Equal levels are called a tie (`tied`), never a win. A factor that cannot act
    before the first update gets one row at init that says so, without a ranking. `runs` comes from
    `convergence_outcomes`. `sentence` says it in words.
    """
    data = outcome_frame(runs)
    flow = gradient_flow_table(data, factors)
    speed = convergence_table(data, factors, target) if "val_auc" in data.columns else pd.DataFrame()
    rows = []
    for factor in factors:
        if data[factor].nunique() < 2:
            continue
        for when in FLOW_WHEN:
            if f"health_{when}" not in data.columns:
                continue
            if when == "init" and inert_at_init(data, factor):
                rows.append(_inert_row(factor, list(dict.fromkeys(data[factor]))))
                continue
            sub = flow[(flow["when"] == when) & (flow["factor"] == factor)].sort_values("rank", kind="stable")
            if len(sub) < 2 or not sub["n"].gt(0).any():
                continue
            best, second = sub.iloc[0], sub.iloc[1]
            frame = health_frame(data, factors, when)
            effect = _compare(frame, factors, factor, best["level"], second["level"], f"flow_distance_{when}")
            rows.append(_flow_row(factor, when, best, second, effect))
        if not speed.empty:
            sub = speed[speed["factor"] == factor].sort_values("mean_val_auc", ascending=False, na_position="last")
            if len(sub) >= 2 and np.isfinite(sub["mean_val_auc"].iloc[0]):
                best, second = sub.iloc[0], sub.iloc[1]
                effect = _compare(data, factors, factor, best["level"], second["level"], "val_auc")
                rows.append(_speed_row(factor, best, second, effect))
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS["headline"]))


def _inert_row(factor: str, levels: list[str]) -> dict:
    sentence = (f"Gradients at initialization, {factor}: no effect possible at initialization; its levels "
                f"({', '.join(levels)}) cannot act before the first update, so their runs start from the same "
                "networks (counted once).")  # fmt: skip
    return {"question": QUESTIONS["init"], "factor": factor, "best": None, "runner_up": None, "tied": None,
            "measure": None, "best_value": np.nan, "runner_up_value": np.nan, "keeps_alive": None, "effect": np.nan,
            "ci_low": np.nan, "ci_high": np.nan, "n": 0, "paired": None, "best_summary": "",
            "runner_up_summary": "", "sentence": sentence}  # fmt: skip


def _pairs_unit(paired: bool) -> str:
    return "matched pairs" if paired else "runs, unpaired"


def _flow_row(factor, when, best, second, effect) -> dict:
    diff, low, high, n, paired = effect
    moment = "at initialization" if when == "init" else "after training"
    networks = " (distinct networks)" if when == "init" else ""

    def describe(r):
        counts = {c: int(round(_nan_to(r[f"share_{c}"], 0) * int(r["n"]))) for c in HEALTH_CLASSES}
        return f"{describe_health(counts)}; median delta ratio {power_of_ten(r['median_log10_ratio'])}"

    tied = bool(best["tied"] and best["rank"] == second["rank"])
    if tied:
        lead = f"Gradients {moment}, {factor}: a tie between {best['level']} and {second['level']}"
    elif best["keeps_alive"]:
        lead = f"Gradients {moment}, {factor}: {best['level']} keeps them alive best"
    else:
        lead = f"Gradients {moment}, {factor}: no level keeps most runs healthy; the closest is {best['level']}"
    sentence = (
        f"{lead} ({describe(best)}){networks}; {'the other' if tied else 'runner-up'} {second['level']} "
        f"({describe(second)}). Distance from healthy flow |log10 ratio| {best['mean_distance']:.2f} vs "
        f"{second['mean_distance']:.2f}: difference {format_estimate(diff, low, high, n, '+.2f', _pairs_unit(paired))}."
    )
    return {"question": QUESTIONS[when], "factor": factor, "best": best["level"], "runner_up": second["level"],
            "tied": tied, "measure": f"flow_distance_{when}", "best_value": best["mean_distance"],
            "runner_up_value": second["mean_distance"], "keeps_alive": bool(best["keeps_alive"]), "effect": diff,
            "ci_low": low, "ci_high": high, "n": n, "paired": paired, "best_summary": describe(best),
            "runner_up_summary": describe(second), "sentence": sentence}  # fmt: skip


def _speed_row(factor, best, second, effect) -> dict:
    diff, low, high, n, paired = effect

    def km(r):
        value = r.get("km_median_epochs_relative", np.nan)
        return f"median {value:g} epochs to the relative target" if np.isfinite(value) else "median not reached"

    def summary(r):
        return (f"area {r['mean_val_auc']:.3f}; {km(r)}; {int(r.get('n_reached_relative', 0))} of {int(r['n'])} runs "
                "reach the relative target")  # fmt: skip

    tied = bool(round(best["mean_val_auc"], 12) == round(second["mean_val_auc"], 12))
    lead = (f"a tie between {best['level']} and {second['level']}" if tied
            else f"{best['level']} learns fastest")  # fmt: skip
    sentence = (
        f"Convergence speed, {factor}: {lead} (area under the validation curve {best['mean_val_auc']:.3f}, "
        f"{km(best)}; {int(best.get('n_reached_relative', 0))} of {int(best['n'])} runs reach "
        f"{best.get('relative_target', np.nan):.3f}); {'the other' if tied else 'runner-up'} {second['level']} "
        f"({second['mean_val_auc']:.3f}, {km(second)}). Difference in area "
        f"{format_estimate(diff, low, high, n, '+.3f', _pairs_unit(paired))}."
    )
    return {"question": QUESTIONS["speed"], "factor": factor, "best": best["level"], "runner_up": second["level"],
            "tied": tied, "measure": "val_auc", "best_value": best["mean_val_auc"],
            "runner_up_value": second["mean_val_auc"], "keeps_alive": None, "effect": diff, "ci_low": low,
            "ci_high": high, "n": n, "paired": paired, "best_summary": summary(best),
            "runner_up_summary": summary(second), "sentence": sentence}  # fmt: skip


def budget_sentence(settings: dict) -> str:
    """The study's budget and caveats in one line, from `registry.study_settings(config)`."""
    s = {k: (", ".join(map(str, v)) if isinstance(v, (list, tuple)) else v) for k, v in settings.items()
         if k not in ("nuisance", "grid_learning_rate", "learning_rates")} | {
        k: settings.get(k) for k in ("nuisance", "grid_learning_rate", "learning_rates")}  # fmt: skip
    tuned = list(s.get("nuisance") or [])
    if "learning_rate" in tuned:
        lr = "learning rate tuned per cell on validation accuracy over " + ", ".join(map(str, s.get("grid_learning_rate", [])))
    elif s.get("grid_learning_rate"):
        lr = "learning rates untuned (a grid axis: " + ", ".join(map(str, s["grid_learning_rate"])) + ")"
    else:
        rates = s.get("learning_rates", {})
        lr = "learning rates untuned (fixed per optimizer: " + ", ".join(f"{k} {v}" for k, v in (rates or {}).items()) + ")"
    return (
        f"Budget: at most {s.get('epochs')} epochs on {s.get('train_images')} training images, batch "
        f"{s.get('batch_size')}, {lr}; a {s.get('depth')}×{s.get('width')} MLP on MNIST; {s.get('n_seeds')} "
        f"seed(s). Every finding holds for this budget and grid only, not for the techniques in general; "
        f"intervals are 95% t-intervals with their n."
    )


# --- findings -----------------------------------------------------------------------------------
# the figure that shows each kind of finding (the report links the sentence to it)
FINDING_FIGURES = {
    "budget": None, "caveat": "learning_curves", "gradients": "flow_classes", "recipe": "atlas",
    "interaction": "interactions", "headline": "flow_classes", "variance": "variance", "paired_effect": "paired_deltas",
    "best_level": "paired_deltas", "extremes": "gradient_flow", "divergence": "status", "speed": "convergence",
}  # fmt: skip
FIRST_SCREEN = ("gradients", "recipe", "interaction", "caveat")  # the kinds the answer opens with


def findings(runs: pd.DataFrame, factors: list[str], baselines: dict, settings: dict | None = None,
             target: float | None = None) -> pd.DataFrame:  # fmt: skip
    """Plain-language sentences computed from the numbers, one row each: kind, sentence, figure.

    kinds (FINDING_FIGURES): budget, gradients (what keeps gradients alive and what kills them),
    recipe (what converges best and fastest), interaction (the largest one), caveat (batch-norm runs
    too short for their moving averages), headline (per factor), variance, paired_effect,
    best_level, extremes, divergence, speed. `runs` should come from `convergence_outcomes`; a
    finding whose data is absent is skipped. `figure` names the figure that shows it (or None).
    """
    data = outcome_frame(runs)
    settings = settings or {}
    rows: list[tuple[str, str]] = []
    if settings:
        rows.append(("budget", budget_sentence(settings)))
    rows += [("gradients", s) for s in _gradient_answer(data, factors)]
    if "test_accuracy" in data.columns:
        rows += [("recipe", s) for s in _recipe_finding(data, factors)]
        rows += [("interaction", s) for s in _interaction_finding(data, factors, baselines)]
    rows += [("caveat", s) for s in _bn_caveat(data, settings)]
    head = headline(data, factors, target)
    rows += [("headline", s) for s in head["sentence"]]
    if "test_accuracy" in data.columns:
        rows += [("variance", s) for s in _variance_finding(data, factors)]
        rows += [("paired_effect", s) for s in _delta_finding(data, factors, baselines)]
        rows += [("best_level", s) for s in _best_level_findings(data, factors, baselines)]
    for when in FLOW_WHEN:
        if f"health_{when}" in data.columns:
            rows += [("extremes", s) for s in _flow_extremes(data, factors, when)]
    if "status" in data.columns:
        rows += [("divergence", s) for s in _divergence_finding(data, factors)]
    if {"epochs_to_target", "epochs_run"} <= set(data.columns):
        rows += [("speed", s) for s in _speed_finding(data, factors, target)]
    # a headline sentence shows in the figure of its question
    questions = iter(head["question"])
    figure = [("convergence" if next(questions) == QUESTIONS["speed"] else "flow_classes") if kind == "headline"
              else FINDING_FIGURES[kind] for kind, _ in rows]  # fmt: skip
    return pd.DataFrame({"kind": [k for k, _ in rows], "sentence": [s for _, s in rows], "figure": figure},
                        columns=["kind", "sentence", "figure"])  # fmt: skip


def _cell_name(values: dict) -> str:
    """'he_normal + relu + batch_norm + depth 16': technique names as they are, other axes named."""
    def part(axis, value):
        if axis not in FACTORS:
            return f"{axis} {value}"
        return f"no {axis}" if value == "none" else str(value)

    return " + ".join(part(a, v) for a, v in values.items())


def _some(items: list[str], k: int = 4) -> str:
    return ", ".join(items[:k]) + (f" and {len(items) - k} more" if len(items) > k else "")


def _gradient_answer(data: pd.DataFrame, factors: list[str]) -> list[str]:
    """What keeps gradients alive and what kills them: the distinct networks' verdicts at
    initialization, the cells (combinations of the factors that can act then) named per class, and
    the runs' verdicts after training."""
    out = []
    if "health_init" in data.columns:
        init = distinct_at_init(data, factors)
        acting = [f for f in factors if init[f].nunique() > 1]
        by_class: dict[str, list[str]] = {c: [] for c in HEALTH_CLASSES}
        for cell, group in init.groupby(acting, sort=False, dropna=False) if acting else []:
            counts = health_counts(group["health_init"])
            n = sum(counts.values())
            if n:
                top = max(HEALTH_CLASSES, key=lambda c: counts[c])  # ties: the earlier class (healthy first)
                cell = cell if isinstance(cell, tuple) else (cell,)
                share = "" if counts[top] == n else f" ({counts[top]} of {n})"
                by_class[top].append(_cell_name(dict(zip(acting, cell))) + share)
        total = health_counts(init["health_init"])
        n = sum(total.values())
        if n:
            killed = [f"{c} — {_some(cells, 6)}" for c, cells in by_class.items() if cells and c != "healthy"]
            cells = sum(len(v) for v in by_class.values())
            out.append(f"At initialization {describe_health(total)} distinct networks; healthy in "
                       f"{len(by_class['healthy'])} of {cells} cells ({' × '.join(acting) or 'one cell'}). "
                       + (f"Killed: {'; '.join(killed)}." if killed else "None is killed."))  # fmt: skip
    if "health_final" in data.columns:
        total = health_counts(data["health_final"])
        if sum(total.values()):
            out.append(f"After training {describe_health(total)} runs.")
    return out


def _recipe_finding(data: pd.DataFrame, factors: list[str]) -> list[str]:
    """The best cell by test accuracy, with its interval, seeds and speed, and the cells that tie with it."""
    board = leaderboard(data, factors, "test_accuracy", k=len(data))
    board = board[board["rank_group"] == "best"].dropna(subset=["mean"])
    if board.empty:
        return []
    top = board.iloc[0]
    varying = [f for f in factors if data[f].nunique() > 1]
    cell = {f: top[f] for f in varying}
    match = np.logical_and.reduce([data[f].map(level_label) == v for f, v in cell.items()]) if cell else np.ones(len(data), bool)
    epochs = pd.to_numeric(data.loc[match, "epochs_to_relative_target"], errors="coerce") if "epochs_to_relative_target" in data else pd.Series(dtype=float)
    median = epochs.median()
    speed = (f"; it reaches the relative target ({data['relative_target'].iloc[0]:.3f}) in a median {median:g} "
             f"epoch{'' if median == 1 else 's'}" if epochs.notna().any() else "")  # fmt: skip
    within = board.iloc[1:][board["mean"].iloc[1:] >= (top["ci_low"] if np.isfinite(top["ci_low"]) else top["mean"])]
    others = (f" Within its interval: {len(within)} more cell(s), e.g. "
              + "; ".join(f"{_cell_name({f: r[f] for f in varying})} {r['mean']:.3f}" for _, r in within.head(3).iterrows())
              + "." if len(within) else "")  # fmt: skip
    return [f"Best recipe: {_cell_name(cell) or 'the only cell'}, test accuracy "
            f"{format_estimate(top['mean'], top['ci_low'], top['ci_high'], top['n_seeds'], '.3f', 'seeds')}{speed}."
            + others]  # fmt: skip


def _interaction_finding(data: pd.DataFrame, factors: list[str], baselines: dict) -> list[str]:
    """The two-way interaction with the largest share of test-accuracy variance, in words: how the
    effect of one factor's level changes across the other factor's levels."""
    anova = variance_decomposition(data, factors, "test_accuracy")
    terms = anova[anova["term"].str.contains(":") & anova["eta_sq"].notna()]
    if terms.empty:
        return []
    term = terms.iloc[0]
    a, b = re.findall(r"C\((\w+)\)", term["term"])
    best = None
    for x, y in ((a, b), (b, a)):
        means = interaction_table(data, x, y, "test_accuracy").assign(**{x: lambda t: t[x].map(level_label), y: lambda t: t[y].map(level_label)})
        grid = means.pivot_table(index=x, columns=y, values="mean")
        base = level_label(baselines.get(x)) if level_label(baselines.get(x)) in grid.index else grid.index[0]
        for level in grid.index.drop(base):
            effect = (grid.loc[level] - grid.loc[base]).dropna()
            if len(effect) >= 2 and (best is None or effect.max() - effect.min() > best[0]):
                best = (effect.max() - effect.min(), x, y, level, base, effect, grid)
    if best is None:
        return []
    _, x, y, level, base, effect, grid = best
    hi, lo = effect.idxmax(), effect.idxmin()
    return [f"Largest interaction ({_term_label(term['term'])}, {term['eta_sq']:.0%} of the variance in test accuracy): "
            f"{x} {level} instead of {base} changes test accuracy by {effect[hi]:+.3f} with {y} {hi} "
            f"({grid.loc[base, hi]:.3f} → {grid.loc[level, hi]:.3f}) but by {effect[lo]:+.3f} with {y} {lo} "
            f"({grid.loc[base, lo]:.3f} → {grid.loc[level, lo]:.3f}); means over the other factors and seeds."]  # fmt: skip


def _bn_caveat(data: pd.DataFrame, settings: dict) -> list[str]:
    """Batch-norm runs evaluated before their moving averages settled (outcomes.BN_UNSETTLED_ABOVE)."""
    from gradatlas.outcomes import bn_moving_average_left, bn_steps_needed

    momentum = settings.get("bn_momentum")
    if momentum is None or "regularizer" not in data.columns or not {"steps_per_epoch", "epochs_run"} <= set(data.columns):
        return []
    bn = data[data["regularizer"].map(level_label) == "batch_norm"]
    steps = (pd.to_numeric(bn["steps_per_epoch"], errors="coerce") * pd.to_numeric(bn["epochs_run"], errors="coerce")).dropna()
    needed = bn_steps_needed(momentum)
    short = steps[steps < needed]
    if short.empty:
        return []
    left = bn_moving_average_left(momentum, int(short.min()))
    return [f"Caveat: {len(short)} of {len(steps)} batch-norm runs trained fewer than {needed} steps (the fewest "
            f"{int(short.min())}), so with momentum {momentum:g} their moving averages still hold up to {left:.0%} of "
            "their initial mean 0 and variance 1; these runs are evaluated on statistics that are not yet their own, "
            "and their validation and test accuracy may understate them. Lower techniques.batch_norm.momentum "
            f"(e.g. 0.9 settles in {bn_steps_needed(0.9)} steps) or train more steps."]  # fmt: skip


def _variance_finding(data: pd.DataFrame, factors: list[str]) -> list[str]:
    anova = variance_decomposition(data, factors, "test_accuracy")
    effects = anova[anova["term"] != "Residual"].dropna(subset=["eta_sq"])
    if effects.empty:
        return []
    top = effects.iloc[0]
    sentence = (f"In this study, {_term_label(top['term'])} explains {top['eta_sq']:.0%} of the variance in test "
                "accuracy")  # fmt: skip
    if len(effects) > 1:
        runner_up = effects.iloc[1]
        sentence += f" (next: {_term_label(runner_up['term'])}, {runner_up['eta_sq']:.0%})"
    return [sentence + f"; n={int(anova['df'].sum()) + 1} runs, a share of this grid's variance, not a general truth."]


def _delta_finding(data: pd.DataFrame, factors: list[str], baselines: dict) -> list[str]:
    deltas = paired_deltas(data, factors, "test_accuracy", baselines).dropna(subset=["mean_delta"])
    if deltas.empty:
        return []
    top = deltas.loc[deltas["mean_delta"].abs().idxmax()]
    ci_known = np.isfinite(top["ci_low"])
    verdict = ("the CI excludes 0" if top["ci_low"] > 0 or top["ci_high"] < 0 else "the CI includes 0") if ci_known else "no interval"
    return [
        f"The largest paired effect on test accuracy: {top['factor']}={top['level']} instead of {top['baseline']} "
        f"changes it by {format_estimate(top['mean_delta'], top['ci_low'], top['ci_high'], top['n_pairs'], unit='pairs')}; "
        f"{verdict}."
    ]


def _best_level_findings(data: pd.DataFrame, factors: list[str], baselines: dict) -> list[str]:
    deltas = paired_deltas(data, factors, "test_accuracy", baselines).dropna(subset=["mean_delta"])
    sentences = []
    for factor, group in deltas.groupby("factor", sort=False):
        top = group.loc[group["mean_delta"].idxmax()]
        numbers = f"{format_estimate(top['mean_delta'], top['ci_low'], top['ci_high'], top['n_pairs'], unit='pairs')} test accuracy"
        if top["mean_delta"] > 0 and top["ci_low"] > 0:
            sentences.append(f"Best {factor} against the baseline {top['baseline']}: {top['level']}, {numbers}.")
        elif top["mean_delta"] > 0:
            sentences.append(f"No {factor} clearly beats the baseline {top['baseline']}: the best, {top['level']}, gives "
                             f"{numbers}, and its interval includes 0 or is unavailable.")  # fmt: skip
        else:
            sentences.append(f"No {factor} beats the baseline {top['baseline']}: the closest, {top['level']}, gives {numbers}.")
    return sentences


def _flow_extremes(data: pd.DataFrame, factors: list[str], when: str) -> list[str]:
    """The healthiest, the most vanishing and the most exploding cell (at init: distinct networks),
    each by the mean log10 delta ratio of its runs, with their verdicts."""
    frame = health_frame(data, factors, when)
    column = f"log10_vanishing_ratio_{when}"
    groups = frame.groupby(factors, dropna=False, sort=False)
    cells = groups[column].agg(["mean", "count"]).join(groups[f"health_{when}"].agg(lambda v: describe_health(health_counts(v))).rename("health"))
    healthy_share = groups[f"health_{when}"].agg(lambda v: (v == "healthy").mean())
    cells = cells[cells["count"] > 0]
    if cells.empty:
        return []
    moment = "at initialization" if when == "init" else "after training"

    def describe(cell) -> str:
        values = cell if isinstance(cell, tuple) else (cell,)
        return ", ".join(f"{f}={level_label(v)}" for f, v in zip(factors, values))

    out = []
    healthy = cells[healthy_share.loc[cells.index] > 0.5]
    if len(healthy):
        cell = healthy["mean"].abs().idxmin()
        out.append(f"Healthiest cell {moment}: {describe(cell)}, delta ratio {power_of_ten(cells.loc[[cell], 'mean'].iloc[0])} "
                   f"({cells.loc[[cell], 'health'].iloc[0]}).")  # fmt: skip
    for name, pick, beyond in (("vanishing", "idxmin", np.log10(FLOW_VANISHING_BELOW)), ("exploding", "idxmax", np.log10(FLOW_EXPLODING_ABOVE))):
        side = cells[cells["mean"] < beyond] if name == "vanishing" else cells[cells["mean"] > beyond]
        if len(side):
            cell = getattr(side["mean"], pick)()
            out.append(f"Most {name} cell {moment}: {describe(cell)}, {power_of_ten(side.loc[[cell], 'mean'].iloc[0])} "
                       f"({cells.loc[[cell], 'health'].iloc[0]}); {len(side)} of {len(cells)} cells have a mean delta ratio "
                       f"{'<' if name == 'vanishing' else '>'} {10 ** beyond:g}.")  # fmt: skip
        else:
            out.append(f"No cell has a mean delta ratio {'<' if name == 'vanishing' else '>'} {10 ** beyond:g} {moment} "
                       f"({len(cells)} cells).")  # fmt: skip
    return out


def _divergence_finding(data: pd.DataFrame, factors: list[str]) -> list[str]:
    n_diverged = int((data["status"] == "diverged").sum())
    if n_diverged == 0:
        return [f"No run diverged (of {len(data)})."]
    counts = status_counts(data, factors)
    worst = counts.loc[counts["diverged"].idxmax()]
    return [
        f"{n_diverged} of {len(data)} runs diverged (they add no dead, saturated or inactive values); the most under "
        f"{worst['factor']}={worst['level']} ({worst['diverged']} of {worst['n']})."
    ]


def _speed_finding(data: pd.DataFrame, factors: list[str], target: float | None) -> list[str]:
    reached = pd.to_numeric(data["epochs_to_target"], errors="coerce").notna()
    goal = f"the configured target {target:g}" if target else "the configured target"
    if not reached.any():
        out = [f"No run reached {goal} validation accuracy within its epochs; see the relative target instead."]
    else:
        out = [f"{int(reached.sum())} of {len(data)} runs reached {goal} validation accuracy."]
    if "relative_target" in data.columns and "epochs_to_relative_target" in data.columns:
        rel = data["epochs_to_relative_target"].notna()
        out.append(f"The relative target is {RELATIVE_TARGET:.0%} of the study's best validation accuracy "
                   f"({data['relative_target'].iloc[0]:.3f}); {int(rel.sum())} of {len(data)} runs reached it.")  # fmt: skip
    return out


# --- the study's analysis tables ----------------------------------------------------------------
_LEVEL = "level of the factor, as a string (a missing value, e.g. clipnorm null, reads 'none')"
_CI = "lower end of the 95% t-interval (NaN, printed n/a, with fewer than 2 values)"
TABLE_COLUMNS: dict[str, dict[str, str]] = {
    "headline": {
        "question": "'gradient health init', 'gradient health final' or 'convergence speed' (analysis.QUESTIONS)",
        "factor": "grid axis",
        "best": "the level that answers the question best (see gradient_flow.rank / convergence.mean_val_auc); "
        "empty where the factor cannot act at initialization",
        "runner_up": "the second level",
        "tied": "True when best and runner-up are equal on the ranking (a tie, not a win)",
        "measure": "outcome behind the comparison (flow_distance_<when> lower is better; val_auc higher)",
        "best_value": "the best level's mean of the measure",
        "runner_up_value": "the runner-up's mean",
        "keeps_alive": "gradient health: True when the best level is untied and more than half its runs are healthy",
        "effect": "best minus runner-up on the measure, paired on every other axis and the seed when possible",
        "ci_low": _CI,
        "ci_high": "upper end of that interval",
        "n": "matched pairs (paired) or runs (unpaired) behind the interval; at init, pairs of distinct networks",
        "paired": "True when the effect is paired, False for a Welch comparison of unpaired runs",
        "best_summary": "the best level in numbers (runs per verdict and median delta ratio as 10^x; or area and speed)",
        "runner_up_summary": "the same for the runner-up",
        "sentence": "the row in words, as the report shows it",
    },
    "gradient_flow": {
        "when": "init (first probe, before any update) or final (last probe)",
        "factor": "grid axis with two or more levels (at init: levels that can act before the first update)",
        "level": _LEVEL + "; at init, levels that cannot act yet are joined ('none = l2 = dropout')",
        "n": "runs with a verdict (at init: distinct networks, each counted once)",
        "n_missing": "runs without one",
        **{f"share_{c}": f"share of those runs whose verdict is {c} ({HEALTH_RULES[c]})" for c in HEALTH_CLASSES},
        "median_log10_ratio": "median log10 delta ratio (layer-1 delta_rms / output-layer delta_rms)",
        "mean_distance": "mean |log10 ratio|: distance from healthy flow, vanishing and exploding alike (0 = ideal)",
        "ci_low": _CI,
        "ci_high": "upper end of that interval",
        "rank": "1 = keeps gradients alive best: most healthy runs first, then smallest mean distance (ties share a rank)",
        "tied": "True when another level of the factor has the same rank",
        "keeps_alive": "True for an untied rank-1 level with more than half its runs healthy",
    },
    "convergence": {
        "factor": "grid axis",
        "level": _LEVEL,
        "n": "runs at this level",
        "target": "train.target_accuracy (validation)",
        "n_reached": "runs that reached it",
        "km_median_epochs": "Kaplan-Meier median epochs to it, misses censored (NaN: fewer than half reach it)",
        "median_steps": "median optimizer steps to it among the runs that reached it",
        "relative_target": "95% of the study's best validation accuracy",
        "n_reached_relative": "runs that reached the relative target",
        "km_median_epochs_relative": "Kaplan-Meier median epochs to the relative target",
        "median_steps_relative": "median optimizer steps to the relative target among runs that reached it",
        "mean_rank": "mean rank of epochs to the relative target over the study (1 = fastest, misses last)",
        "mean_val_auc": "mean area under the validation-accuracy curve (mean accuracy over the epoch budget; "
        "early-stopped runs keep their best, diverged runs count 0.1 after divergence)",
        "ci_low": "lower end of the 95% t-interval of mean_val_auc",
        "ci_high": "upper end of that interval",
        "n_auc": "runs behind mean_val_auc",
    },
    "main_effects": {
        "factor": "grid axis (initializer, activation, optimizer, regularizer, or an optional axis)",
        "level": _LEVEL,
        "outcome": "outcome name (see analysis.OUTCOMES)",
        "mean": "mean of the outcome over every run at this level (other factors and seeds pooled)",
        "ci_low": _CI,
        "ci_high": "upper end of that interval",
        "n": "runs at this level with a value of the outcome",
        "share_nonmissing": "n / runs at this level (below 1 where e.g. diverged runs lack the outcome)",
    },
    "paired_deltas": {
        "factor": "grid axis",
        "level": "the level compared with the baseline",
        "baseline": "the factor's baseline level (config report.baselines)",
        "outcome": "outcome name",
        "mean_delta": "mean of (level - baseline) over runs paired on every other axis and the seed",
        "ci_low": "lower end of the 95% t-interval over pairs (a clear effect when it excludes 0)",
        "ci_high": "upper end of that interval",
        "n_pairs": "pairs where both runs have the outcome",
        "n_missing": "matched pairs where either run lacks it",
    },
    "interactions": {
        "factor_a": "first grid axis of the pair",
        "level_a": "its level",
        "factor_b": "second grid axis of the pair",
        "level_b": "its level",
        "outcome": "outcome name",
        "mean": "mean of the outcome over the runs of this (level_a, level_b) cell",
        "n": "runs of the cell with a value",
    },
    "variance_decomposition": {
        "outcome": "outcome name",
        "term": "C(f) for a main effect, C(f):C(g) for a two-way interaction, Residual",
        "sum_sq": "type-II sum of squares of the term",
        "df": "degrees of freedom",
        "eta_sq": "share of the total variance the term explains (sum_sq / total sum of squares)",
        "partial_eta_sq": "sum_sq / (sum_sq + residual sum_sq); NaN for Residual",
        "F": "F statistic",
        "p": "p-value of the F test",
    },
    "status_counts": {
        "factor": "grid axis",
        "level": _LEVEL,
        "n": "runs at this level",
        "converged": "runs that trained normally",
        "stalled": "runs whose best validation accuracy stayed below train.stall_accuracy",
        "diverged": "runs stopped by a non-finite loss",
    },
    "leaderboard": {
        "outcome": "outcome the cells are ranked by (test_accuracy, val_auc, flow_distance_init)",
        "rank_group": "best | worst (for flow_distance outcomes only cells with most seeds healthy can be best; at "
        "init each distinct network once)",
        "rank": "rank among all cells (1 = best)",
        "<axes>": "one column per grid axis: the cell",
        "mean": "mean of the outcome over the cell's seeds",
        "ci_low": "lower end of the 95% t-interval over seeds (NaN with one seed)",
        "ci_high": "upper end of that interval",
        "n_seeds": "seeds with a value",
        "health": "flow_distance outcomes: the verdicts of the cell's seeds ('2 of 2 healthy'); empty otherwise",
    },
    "findings": {
        "kind": "budget, gradients, recipe, interaction, caveat, headline, variance, paired_effect, best_level, "
        "extremes, divergence or speed (analysis.FINDING_FIGURES)",
        "sentence": "the finding in words, computed from the numbers",
        "figure": "the report figure that shows it (registry.FIGURES name), or empty",
    },
    NUISANCE_TABLE: {
        "<axes>": "one column per studied (non-nuisance) grid axis",
        "seed": "the seed",
        "chosen_<nuisance axis>": "the nuisance value kept for this cell and seed (best validation accuracy)",
        "best_val_accuracy": "the validation accuracy that chose it",
        "test_accuracy": "the test accuracy of the chosen run (never used for the choice)",
    },
}
assert set(TABLE_COLUMNS) == {*ANALYSIS_TABLES, NUISANCE_TABLE}


def prepare(runs: pd.DataFrame, curves: pd.DataFrame | None, factors: list[str], nuisance=(), epochs: int | None = None):
    """(chosen runs with every outcome, studied axes, nuisance axes, chosen curves): levels labelled,
    nuisance axes optimized away on validation accuracy, convergence outcomes added."""
    nuisance = [a for a in nuisance if a in factors]
    studied = [f for f in factors if f not in nuisance]
    runs = label_levels(runs, factors)
    chosen = select_nuisance(runs, nuisance, studied)
    if curves is not None:
        curves = chosen_rows(label_levels(curves, factors), chosen, studied, nuisance)
    data = outcome_frame(convergence_outcomes(chosen, curves, studied, epochs))
    return data, studied, nuisance, curves


def study_tables(
    runs: pd.DataFrame,
    factors: list[str],
    baselines: dict,
    nuisance: list[str] | tuple = (),
    curves: pd.DataFrame | None = None,
    settings: dict | None = None,
    k: int = 5,
) -> dict[str, pd.DataFrame]:
    """Every analysis table of a study, by name (registry.ANALYSIS_TABLES; columns in TABLE_COLUMNS).

    `factors` lists every non-seed axis of `runs`; the `nuisance` axes among them are optimized away
    per cell and seed on validation accuracy and every other table describes the chosen runs.
    `curves` (the curves table) gives the convergence outcomes that never come out empty; `settings`
    (`registry.study_settings(config)`) gives the target accuracy, the epoch budget and the budget line.
    """
    settings = settings or {}
    target = settings.get("target_accuracy")
    data, studied, nuisance, _ = prepare(runs, curves, factors, nuisance, settings.get("epochs"))
    outcomes = [o for o in OUTCOMES if o in data.columns]

    def stack(frames, name):
        frames = [f for f in frames if len(f)]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(TABLE_COLUMNS[name]))

    varying = [f for f in studied if data[f].nunique(dropna=False) > 1]
    interactions = []
    for a, b in combinations(varying, 2):
        for outcome in outcomes:
            table = interaction_table(data, a, b, outcome)
            interactions.append(pd.DataFrame({
                "factor_a": a, "level_a": table[a].map(level_label), "factor_b": b, "level_b": table[b].map(level_label),
                "outcome": outcome, "mean": pd.to_numeric(table["mean"], errors="coerce").astype(float),
                "n": table["n"].astype(int),
            }))  # fmt: skip
    board_columns = ["outcome", "rank_group", "rank", *studied, "mean", "ci_low", "ci_high", "n_seeds", "health"]
    boards = [leaderboard(data, studied, o, k=k) for o in LEADERBOARD_OUTCOMES if o in outcomes]
    board = pd.concat([b for b in boards if len(b)], ignore_index=True) if any(len(b) for b in boards) else pd.DataFrame(columns=board_columns)
    out = {
        "headline": headline(data, studied, target),
        "gradient_flow": gradient_flow_table(data, studied),
        "convergence": convergence_table(data, studied, target),
        "main_effects": stack([main_effects(data, studied, o) for o in outcomes], "main_effects"),
        "paired_deltas": stack([paired_deltas(data, studied, o, baselines) for o in outcomes], "paired_deltas"),
        "interactions": stack(interactions, "interactions"),
        "variance_decomposition": stack(
            [variance_decomposition(data, studied, o).assign(outcome=o) for o in outcomes], "variance_decomposition"
        )[list(TABLE_COLUMNS["variance_decomposition"])],
        "status_counts": status_counts(data, studied),
        "leaderboard": board[board_columns],
        "findings": findings(data, studied, baselines, settings or None, target),
    }
    if nuisance:
        keep = [*studied, "seed", *(f"chosen_{a}" for a in nuisance), "best_val_accuracy", "test_accuracy"]
        out[NUISANCE_TABLE] = data[[c for c in keep if c in data.columns]].reset_index(drop=True)
    return out


# --- shared helpers -----------------------------------------------------------------------------
def _with_outcome(runs: pd.DataFrame, outcome: str) -> pd.DataFrame:
    """`outcome_frame(runs)`: derived outcomes added, diverged runs' unit fractions masked."""
    data = outcome_frame(runs)
    if outcome not in data.columns:
        raise KeyError(f"outcome {outcome!r} is neither a column of the runs table nor derivable from one")
    return data


def _estimable_terms(model_data: pd.DataFrame, factors: list[str]) -> list[str]:
    """Main effects then two-way interactions, each kept only if it adds full-rank columns and leaves residual df."""
    varying = [f for f in factors if model_data[f].nunique() > 1]
    candidates = [f"C({f})" for f in varying] + [f"C({a}):C({b})" for a, b in combinations(varying, 2)]
    kept: list[str] = []
    n_columns = 1
    for term in candidates:
        design = smf.ols("outcome_value ~ " + " + ".join([*kept, term]), data=model_data).exog
        adds_columns = design.shape[1] > n_columns
        full_rank = np.linalg.matrix_rank(design) == design.shape[1]
        if adds_columns and full_rank and design.shape[0] > design.shape[1]:
            kept.append(term)
            n_columns = design.shape[1]
    return kept


def _term_label(term: str) -> str:
    """`C(a):C(b)` -> `a × b`, for sentences."""
    return " × ".join(re.findall(r"C\((\w+)\)", term))


def _mean(values: np.ndarray) -> float:
    """Mean that is NaN (not a warning) for no values."""
    values = np.asarray(values, dtype=float)
    return float(values.mean()) if values.size else np.nan


def _nan_to(value, default):
    return default if value is None or not np.isfinite(value) else value


__all__ = ["FACTORS", "OUTCOMES", "TABLE_COLUMNS", "study_tables", "findings", "headline"]
