"""The effect tables: what each level of a factor does to an outcome.

Main effects and paired deltas with t-intervals, two-way interaction means, the variance
decomposition (two-way ANOVA), the gradient-flow and convergence tables per level, status counts and
the leaderboard. Each takes the per-run frame (`runframe.outcome_frame`; a runs table is derived on
the way in) and returns a tidy DataFrame with the columns `registry.TABLES` documents.

A level's gradient health is its distribution over the verdicts (shares with n), never the class of a
median; levels rank by their share of healthy runs, then by the distance from healthy flow
|log10 delta ratio|.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from statsmodels.stats.anova import anova_lm

from gradatlas.outcomes import HEALTH_CLASSES, STATUSES
from gradatlas.registry import TABLES
from gradatlas.runframe import (
    FLOW_WHEN,
    OUTCOMES,
    describe_health,
    health_counts,
    health_frame,
    level_label,
    outcomes_of,
)
from gradatlas.stats import km_median, mean as _mean, nan_to, t_interval


def _with_outcome(runs: pd.DataFrame, outcome: str) -> pd.DataFrame:
    """`outcomes_of(runs)`, after checking it has `outcome`."""
    data = outcomes_of(runs)
    if outcome not in data.columns:
        raise KeyError(f"outcome {outcome!r} is neither a column of the runs table nor derivable from one")
    return data


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
            rows.append(
                {
                    "factor": factor,
                    "level": level_label(level),
                    "outcome": outcome,
                    "mean": _mean(observed),
                    "ci_low": low,
                    "ci_high": high,
                    "n": observed.size,
                    "share_nonmissing": observed.size / values.size if values.size else np.nan,
                }
            )
    return pd.DataFrame(rows, columns=list(TABLES["main_effects"].columns))


def paired_differences(data: pd.DataFrame, factors: list[str], factor: str, level, other, outcome: str) -> np.ndarray:
    """outcome(level) - outcome(other) for runs paired on every other factor and the seed (finite only)."""
    keys = [f for f in factors if f != factor] + ["seed"]
    a = data.loc[data[factor] == level, [*keys, outcome]]
    b = data.loc[data[factor] == other, [*keys, outcome]]
    pairs = a.merge(b, on=keys, suffixes=("", "_other"))
    d = pd.to_numeric(pairs[outcome], errors="coerce") - pd.to_numeric(pairs[f"{outcome}_other"], errors="coerce")
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
            rows.append(
                {
                    "factor": factor,
                    "level": level,
                    "baseline": baseline,
                    "outcome": outcome,
                    "mean_delta": _mean(observed),
                    "ci_low": low,
                    "ci_high": high,
                    "n_pairs": observed.size,
                    "n_missing": n_matched - observed.size,
                }
            )
    return pd.DataFrame(rows, columns=list(TABLES["paired_deltas"].columns))


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
                level_rows.append(
                    {
                        "when": when,
                        "factor": factor,
                        "level": level_label(level),
                        "n": n,
                        "n_missing": len(group) - n,
                        **{f"share_{c}": counts[c] / n if n else np.nan for c in HEALTH_CLASSES},
                        "median_log10_ratio": float(np.median(log[np.isfinite(log)]))
                        if np.isfinite(log).any()
                        else np.nan,
                        "mean_distance": _mean(distance),
                        "ci_low": low,
                        "ci_high": high,
                    }
                )
            rows += _rank_levels(level_rows)
    return pd.DataFrame(rows, columns=list(TABLES["gradient_flow"].columns))


def _rank_levels(level_rows: list[dict]) -> list[dict]:
    """Competition ranks (1, 1, 3) by share healthy (higher first), then mean distance (lower first)."""

    def key(r):
        return (-round(nan_to(r["share_healthy"], -1), 12), round(nan_to(r["mean_distance"], np.inf), 12))

    ranked = sorted(level_rows, key=key)
    for i, r in enumerate(ranked):
        r["rank"] = next(j for j, other in enumerate(ranked, start=1) if key(other) == key(r))
        r["tied"] = sum(key(other) == key(r) for other in ranked) > 1
        r["keeps_alive"] = bool(r["rank"] == 1 and not r["tied"] and nan_to(r["share_healthy"], 0) > 0.5)
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
    rel = (
        pd.to_numeric(data["epochs_to_relative_target"], errors="coerce").astype(float)
        if "epochs_to_relative_target" in data
        else None
    )
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
    return pd.DataFrame(rows, columns=list(TABLES["convergence"].columns))


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


def leaderboard(
    runs: pd.DataFrame, axes: list[str], outcome: str, k: int = 5, direction: str | None = None
) -> pd.DataFrame:
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
        rows.append(
            {
                **{a: level_label(v) for a, v in zip(cell_axes, cell)},
                "outcome": outcome,
                "mean": _mean(observed),
                "ci_low": low,
                "ci_high": high,
                "n_seeds": observed.size,
                "health": health,
            }
        )
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
