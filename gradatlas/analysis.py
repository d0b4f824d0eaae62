"""Statistics over the runs table: effects with bootstrap CIs, variance decomposition, leaderboards.

Every function is pure: it takes the runs table (one row per run, see docs/architecture.md) and
returns a new tidy DataFrame (or, for `findings`, a list of sentences); nothing is read or written.
`factors` always names grid axes (never `seed`); `outcome` is a key of `OUTCOMES` or any numeric
column of the table. Levels in the cross-factor tables (`main_effects`, `paired_deltas`,
`epochs_to_target_summary`, `status_counts`) are strings, so numeric and named axes share one
column; a missing level (e.g. `clipnorm: null`) reads "none".
"""

from __future__ import annotations

import re
from itertools import combinations
from typing import NamedTuple

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from statsmodels.stats.anova import anova_lm


class Outcome(NamedTuple):
    """An analysed outcome: its column in `outcome_frame(runs)`, which direction is better, a label."""

    column: str
    direction: str  # "higher" or "lower"
    label: str


# Ratios span orders of magnitude, so they are analysed as log10: means and CIs then describe
# geometric means, and one bad run cannot dominate an average.
_LOG10_OF = {
    "log10_vanishing_ratio_init": "vanishing_ratio_init",
    "log10_vanishing_ratio_final": "vanishing_ratio_final",
}

OUTCOMES: dict[str, Outcome] = {
    "test_accuracy": Outcome("test_accuracy", "higher", "test accuracy (fraction correct)"),
    "best_val_accuracy": Outcome("best_val_accuracy", "higher", "best validation accuracy (fraction correct)"),
    "epochs_to_target": Outcome("epochs_to_target", "lower", "epochs to target validation accuracy (epochs)"),
    # A ratio below 1 (log10 < 0) means the gradient shrinks on its way to the input layers, the
    # failure this atlas maps; the grid is not expected to produce exploding (> 1) ratios.
    "log10_vanishing_ratio_init": Outcome(
        "log10_vanishing_ratio_init", "higher", "vanishing ratio at initialization (log10, dimensionless)"
    ),
    "log10_vanishing_ratio_final": Outcome(
        "log10_vanishing_ratio_final", "higher", "vanishing ratio after training (log10, dimensionless)"
    ),
    "saturated_frac_epoch1": Outcome(
        "saturated_frac_epoch1", "lower", "saturated units after epoch 1 (fraction of hidden units)"
    ),
    "dead_frac_epoch1": Outcome("dead_frac_epoch1", "lower", "dead units after epoch 1 (fraction of hidden units)"),
}

STATUSES = ("converged", "stalled", "diverged")
CI_LEVEL = 0.95


def outcome_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """Return a copy of `runs` with the derived outcome columns added.

    Adds `log10_vanishing_ratio_init` and `log10_vanishing_ratio_final` (log10 of the ratio; NaN
    where the ratio is missing or not positive) for each source column the table has.
    """
    out = runs.copy()
    for derived, source in _LOG10_OF.items():
        if source in out.columns:
            ratio = pd.to_numeric(out[source], errors="coerce")
            out[derived] = np.log10(ratio.where(ratio > 0))
    return out


def select_nuisance(runs: pd.DataFrame, nuisance_axes: list[str], factors: list[str]) -> pd.DataFrame:
    """Optimize the nuisance axes away, as in the Deep Learning Tuning Playbook.

    For each combination of the remaining axes (`factors` minus the nuisance axes) and `seed`, keep
    the run with the highest `best_val_accuracy`. Test metrics are never consulted, so the choice
    cannot leak the test set into the comparison. Runs whose validation accuracy is missing (e.g.
    diverged) are chosen only when every candidate is missing, so no combination disappears. Ties
    go to the earlier row of `runs`. `factors` must list every non-seed axis that is not nuisance.

    Output: the columns of `runs`, one row per (remaining axes, seed), with each nuisance column
    renamed to `chosen_<axis>` (the value picked for that row); row order follows `runs`. Without
    nuisance axes, a copy of `runs`.
    """
    if not nuisance_axes:
        return runs.copy()
    keys = [f for f in factors if f not in nuisance_axes] + ["seed"]
    # Positional index, so the original order (and index) can be restored whatever the index is.
    best_first = runs.reset_index(drop=True).sort_values(
        "best_val_accuracy", ascending=False, na_position="last", kind="stable"
    )
    winners = best_first.index[~best_first.duplicated(subset=keys, keep="first")]
    chosen = runs.iloc[np.sort(winners)]
    return chosen.rename(columns={axis: f"chosen_{axis}" for axis in nuisance_axes})


def main_effects(
    runs: pd.DataFrame, factors: list[str], outcome: str, n_boot: int = 2000, seed: int = 0
) -> pd.DataFrame:
    """Marginal mean of `outcome` per factor level, averaged over the other factors and seeds.

    The CI is a percentile bootstrap that resamples the level's runs; runs with a missing outcome
    (e.g. diverged) are left out of the mean and counted by `share_nonmissing`.

    Output columns: factor, level, outcome, mean, ci_low, ci_high, n (runs with a value),
    share_nonmissing (n / runs at that level).
    """
    data = _with_outcome(runs, outcome)
    rng = np.random.default_rng(seed)
    rows = []
    for factor in factors:
        for level, group in data.groupby(factor, dropna=False, sort=True):
            values = group[outcome].to_numpy(dtype=float)
            observed = values[~np.isnan(values)]
            ci_low, ci_high = _bootstrap_ci(observed, n_boot, rng)
            rows.append(
                {
                    "factor": factor,
                    "level": _level_label(level),
                    "outcome": outcome,
                    "mean": _mean(observed),
                    "ci_low": ci_low,
                    "ci_high": ci_high,
                    "n": observed.size,
                    "share_nonmissing": observed.size / values.size,
                }
            )
    columns = ["factor", "level", "outcome", "mean", "ci_low", "ci_high", "n", "share_nonmissing"]
    return pd.DataFrame(rows, columns=columns)


def paired_deltas(
    runs: pd.DataFrame,
    factors: list[str],
    outcome: str,
    baselines: dict,
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Effect of each non-baseline level versus the baseline, paired on every other axis and seed.

    Pairing removes the variance the other factors and the seed share between the two runs, so
    a small effect shows up with far fewer runs than an unpaired comparison needs. A matched pair
    counts only when both runs have the outcome; matched pairs where either lacks it (e.g. a
    diverged run) are reported in `n_missing`. Factors without a baseline, or whose baseline level
    is absent from the data, are skipped. Each (factors, seed) must identify one run: reduce
    nuisance axes with `select_nuisance` first.

    Output columns: factor, level, baseline, outcome, mean_delta (level minus baseline), ci_low,
    ci_high (percentile bootstrap over pairs), n_pairs, n_missing.
    """
    data = _with_outcome(runs, outcome)
    duplicated = data.duplicated(subset=[*factors, "seed"], keep=False)
    if duplicated.any():
        raise ValueError(
            f"{int(duplicated.sum())} runs share their {factors} and seed; reduce nuisance axes with "
            "select_nuisance or list every axis in factors"
        )
    rng = np.random.default_rng(seed)
    rows = []
    for factor in factors:
        baseline = baselines.get(factor)
        if baseline is None or not (data[factor] == baseline).any():
            continue
        keys = [f for f in factors if f != factor] + ["seed"]
        base = data.loc[data[factor] == baseline, [*keys, outcome]]
        for level, other in data.groupby(factor, dropna=False, sort=True):
            if level == baseline:
                continue
            pairs = other[[*keys, outcome]].merge(base, on=keys, suffixes=("", "_baseline"))
            deltas = (pairs[outcome] - pairs[f"{outcome}_baseline"]).to_numpy(dtype=float)
            observed = deltas[~np.isnan(deltas)]
            ci_low, ci_high = _bootstrap_ci(observed, n_boot, rng)
            rows.append(
                {
                    "factor": factor,
                    "level": _level_label(level),
                    "baseline": _level_label(baseline),
                    "outcome": outcome,
                    "mean_delta": _mean(observed),
                    "ci_low": ci_low,
                    "ci_high": ci_high,
                    "n_pairs": observed.size,
                    "n_missing": deltas.size - observed.size,
                }
            )
    columns = ["factor", "level", "baseline", "outcome", "mean_delta", "ci_low", "ci_high", "n_pairs", "n_missing"]
    return pd.DataFrame(rows, columns=columns)


def interaction_table(runs: pd.DataFrame, a: str, b: str, outcome: str) -> pd.DataFrame:
    """Mean of `outcome` per observed (a level, b level) cell, over the other factors and seeds.

    Output columns: <a>, <b> (the level values as in `runs`), outcome, mean, n (runs with a value).
    """
    data = _with_outcome(runs, outcome)
    table = (
        data.groupby([a, b], dropna=False, sort=True)[outcome]
        .agg(mean="mean", n="count")
        .reset_index()
        .assign(outcome=outcome)
    )
    return table[[a, b, "outcome", "mean", "n"]]


def variance_decomposition(runs: pd.DataFrame, factors: list[str], outcome: str) -> pd.DataFrame:
    """Two-way ANOVA of `outcome`: how much of its variance each factor and factor pair explains.

    Fits OLS with `C(factor)` main effects and all two-way interactions, then type-II sums of
    squares. Runs with a missing outcome are dropped. A term is kept only if it is estimable: it
    adds columns the earlier terms do not already span and leaves at least one residual degree of
    freedom (so one-level factors, aliased factors and saturated interactions drop out). Too few
    rows for any estimable term gives an empty frame.

    Output columns: term (`C(f)`, `C(f):C(g)` or `Residual`), sum_sq, df, eta_sq (sum_sq / total
    sum of squares), partial_eta_sq (sum_sq / (sum_sq + residual sum_sq)), F, p. Effect rows are
    sorted by eta_sq descending, the Residual row comes last. With unbalanced data type-II sums of
    squares need not add up to the total, so eta_sq need not sum to 1.
    """
    columns = ["term", "sum_sq", "df", "eta_sq", "partial_eta_sq", "F", "p"]
    data = _with_outcome(runs, outcome)
    data = data.loc[data[outcome].notna()]
    # Strings make every axis categorical and keep missing levels (clipnorm: null) as a level
    # instead of letting the formula engine drop those rows.
    model_data = data[list(factors)].astype(str).assign(outcome_value=data[outcome].astype(float))
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


def epochs_to_target_summary(runs: pd.DataFrame, factors: list[str]) -> pd.DataFrame:
    """Censoring-aware speed per factor level: a run that never reaches the target is a miss.

    A miss is right-censored at its `epochs_run`: it enters the Kaplan-Meier estimate as "not yet
    reached after epochs_run epochs" and ranks after every hit, so slow-or-failing levels are not
    flattered by averaging only their successes. Ranks are over the whole table (1 = fastest, ties
    averaged, all misses tie), so mean ranks compare across factors.

    Output columns: factor, level, n (runs), n_reached, share_reached, km_median_epochs (first time
    the Kaplan-Meier survival is <= 0.5; NaN if it never is), mean_rank.
    """
    reached = runs["epochs_to_target"].notna()
    data = pd.DataFrame(
        {
            "reached": reached,
            "time": runs["epochs_to_target"].where(reached, runs["epochs_run"]).astype(float),
            "rank": runs["epochs_to_target"].where(reached, np.inf).rank(method="average"),
        }
    )
    rows = []
    for factor in factors:
        for level, group in data.groupby(runs[factor], dropna=False, sort=True):
            rows.append(
                {
                    "factor": factor,
                    "level": _level_label(level),
                    "n": len(group),
                    "n_reached": int(group["reached"].sum()),
                    "share_reached": float(group["reached"].mean()),
                    "km_median_epochs": km_median(group["time"], group["reached"]),
                    "mean_rank": float(group["rank"].mean()),
                }
            )
    columns = ["factor", "level", "n", "n_reached", "share_reached", "km_median_epochs", "mean_rank"]
    return pd.DataFrame(rows, columns=columns)


def kaplan_meier(time, event) -> pd.DataFrame:
    """Kaplan-Meier estimate of P(target not yet reached after t epochs).

    `time` is the epoch of the event or of censoring, `event` True where the target was reached.
    A run censored at the same time as an event still counts as at risk for that event (the usual
    convention: it was observed through that epoch).

    Output columns: time (each distinct event time, ascending), n_at_risk, n_events, survival.
    """
    time = np.asarray(time, dtype=float)
    event = np.asarray(event, dtype=bool)
    event_times = np.unique(time[event])
    n_at_risk = (time[None, :] >= event_times[:, None]).sum(axis=1)
    n_events = (time[event][None, :] == event_times[:, None]).sum(axis=1)
    survival = np.cumprod(1.0 - n_events / n_at_risk)
    return pd.DataFrame({"time": event_times, "n_at_risk": n_at_risk, "n_events": n_events, "survival": survival})


def km_median(time, event) -> float:
    """Median time to event from `kaplan_meier`: first time survival <= 0.5, NaN if it never drops that far."""
    curve = kaplan_meier(time, event)
    below = curve.loc[curve["survival"] <= 0.5, "time"]
    return float(below.iloc[0]) if len(below) else np.nan


def status_counts(runs: pd.DataFrame, factors: list[str]) -> pd.DataFrame:
    """How many runs of each factor level converged, stalled or diverged.

    Output columns: factor, level, n, converged, stalled, diverged, then one column per any other
    status value found (a missing status counts as "unknown"), so the counts always add up to n.
    """
    status = runs["status"].fillna("unknown")
    extra = sorted(set(status) - set(STATUSES))
    status_columns = [*STATUSES, *extra]
    tables = []
    for factor in factors:
        counts = (
            status.groupby(runs[factor], dropna=False, sort=True)
            .value_counts()
            .unstack(fill_value=0)
            .reindex(columns=status_columns, fill_value=0)
        )
        counts.insert(0, "n", counts.sum(axis=1))
        counts.index = counts.index.map(_level_label)
        tables.append(counts.rename_axis(index="level", columns=None).reset_index().assign(factor=factor))
    columns = ["factor", "level", "n", *status_columns]
    if not tables:
        return pd.DataFrame(columns=columns)
    return pd.concat(tables, ignore_index=True)[columns]


def leaderboard(
    runs: pd.DataFrame,
    axes: list[str],
    outcome: str,
    k: int = 5,
    direction: str | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """The k best and k worst grid cells by mean `outcome` over seeds.

    A cell is one combination of `axes` (seed excluded if listed). `direction` defaults to the
    one in `OUTCOMES`. Cells whose every seed is missing rank last. When there are fewer than 2k
    cells, the worst group holds only cells not already among the best.

    Output columns: rank_group ("best" | "worst"), rank (1 = best of all cells), the cell's axes,
    outcome, mean, ci_low, ci_high (percentile bootstrap over seeds; NaN with one seed), n_seeds
    (seeds with a value). Rows are ordered by rank.
    """
    direction = direction or OUTCOMES[outcome].direction
    cell_axes = [a for a in axes if a != "seed"]
    data = _with_outcome(runs, outcome)
    rng = np.random.default_rng(seed)
    rows = []
    for cell, group in data.groupby(cell_axes, dropna=False, sort=True):
        values = group[outcome].to_numpy(dtype=float)
        observed = values[~np.isnan(values)]
        ci_low, ci_high = _bootstrap_ci(observed, n_boot, rng)
        rows.append(
            {
                **dict(zip(cell_axes, cell)),
                "outcome": outcome,
                "mean": _mean(observed),
                "ci_low": ci_low,
                "ci_high": ci_high,
                "n_seeds": observed.size,
            }
        )
    cells = pd.DataFrame(rows, columns=[*cell_axes, "outcome", "mean", "ci_low", "ci_high", "n_seeds"])
    cells = cells.sort_values("mean", ascending=direction == "lower", na_position="last", kind="stable")
    cells.insert(0, "rank", np.arange(1, len(cells) + 1))
    n_best = min(k, len(cells))
    n_worst = min(k, len(cells) - n_best)
    best = cells.iloc[:n_best].assign(rank_group="best")
    worst = cells.iloc[len(cells) - n_worst :].assign(rank_group="worst")
    board = pd.concat([best, worst], ignore_index=True)
    return board[["rank_group", *board.columns.drop("rank_group")]]


def findings(runs: pd.DataFrame, factors: list[str], baselines: dict) -> list[str]:
    """Short plain-language sentences summarising the numbers; a finding is skipped if its data is absent.

    Covers: the term explaining most variance in test accuracy, the largest paired effect on test
    accuracy with its CI, the lowest and highest mean vanishing ratio per cell (as 10^x), the best
    level of each factor against its baseline (paired, with CI), divergence counts, and the fastest
    level to the target accuracy. Like `paired_deltas`, it needs one run
    per (factors, seed).
    """
    data = outcome_frame(runs)
    sentences = []
    if "test_accuracy" in data.columns:
        sentences += _variance_finding(data, factors)
        sentences += _delta_finding(data, factors, baselines)
    for outcome in ("log10_vanishing_ratio_init", "log10_vanishing_ratio_final"):
        if outcome in data.columns:
            sentences += _vanishing_finding(data, factors, outcome)
    if "test_accuracy" in data.columns:
        sentences += _best_level_findings(data, factors, baselines)
    if "status" in data.columns:
        sentences += _divergence_finding(data, factors)
    if {"epochs_to_target", "epochs_run"} <= set(data.columns):
        sentences += _speed_finding(data, factors)
    return sentences


# --- the study's analysis tables -------------------------------------------------------------------
# Columns of every table `study_tables` returns, documented once: the README and the tests read this.
_LEVEL = "level of the factor, as a string (a missing value reads 'none')"
TABLE_COLUMNS: dict[str, dict[str, str]] = {
    "main_effects": {
        "factor": "grid axis (initializer, activation, optimizer, regularizer, or an extra axis)",
        "level": _LEVEL,
        "outcome": "outcome name (see OUTCOMES: test_accuracy, log10_vanishing_ratio_init, ...)",
        "mean": "mean of the outcome over every run at this level (other factors and seeds pooled)",
        "ci_low": "lower end of the 95% percentile-bootstrap CI of the mean (NaN with fewer than 2 runs)",
        "ci_high": "upper end of that CI",
        "n": "runs at this level with a value of the outcome",
        "share_nonmissing": "n / runs at this level (below 1 when e.g. diverged runs lack the outcome)",
    },
    "paired_deltas": {
        "factor": "grid axis",
        "level": "the level compared with the baseline",
        "baseline": "the factor's baseline level (config report.baselines)",
        "outcome": "outcome name",
        "mean_delta": "mean of (level - baseline) over runs paired on every other axis and the seed",
        "ci_low": "lower end of the 95% bootstrap CI over pairs (an effect is clear when the CI excludes 0)",
        "ci_high": "upper end of that CI",
        "n_pairs": "pairs where both runs have the outcome",
        "n_missing": "pairs where either run lacks it",
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
    "epochs_to_target": {
        "factor": "grid axis",
        "level": _LEVEL,
        "n": "runs at this level",
        "n_reached": "runs that reached train.target_accuracy on validation",
        "share_reached": "n_reached / n",
        "km_median_epochs": "Kaplan-Meier median epochs to target, misses censored (NaN: fewer than half reach it)",
        "mean_rank": "mean rank of the runs' epochs-to-target over the whole study (1 = fastest, misses last)",
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
        "outcome": "outcome the cells are ranked by",
        "rank_group": "best | worst",
        "rank": "rank among all cells (1 = best)",
        "<axes>": "one column per grid axis: the cell",
        "mean": "mean of the outcome over the cell's seeds",
        "ci_low": "lower end of the 95% bootstrap CI over seeds (NaN with one seed)",
        "ci_high": "upper end of that CI",
        "n_seeds": "seeds with a value",
    },
    "nuisance_choices": {
        "<axes>": "one column per studied (non-nuisance) grid axis",
        "seed": "the seed",
        "chosen_<nuisance axis>": "the nuisance value kept for this cell and seed (best validation accuracy)",
        "best_val_accuracy": "the validation accuracy that chose it",
        "test_accuracy": "the test accuracy of the chosen run (never used for the choice)",
    },
}

# Outcomes ranked on a leaderboard (the others are in main_effects and paired_deltas).
LEADERBOARD_OUTCOMES = ("test_accuracy", "best_val_accuracy", "log10_vanishing_ratio_init")


def study_tables(
    runs: pd.DataFrame,
    factors: list[str],
    baselines: dict,
    nuisance: list[str] | tuple = (),
    k: int = 5,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, pd.DataFrame]:
    """Every analysis table of a study, by name (see `TABLE_COLUMNS` for their columns).

    `factors` lists every non-seed axis of `runs`; the `nuisance` axes among them are first
    optimized away per cell and seed with `select_nuisance` (on validation accuracy), and every
    other table describes the chosen runs. Tables: main_effects, paired_deltas, interactions
    (every pair of factors with more than one level), variance_decomposition, epochs_to_target,
    status_counts, leaderboard (k best and worst cells for each of LEADERBOARD_OUTCOMES), and
    nuisance_choices (only with nuisance axes). Outcomes absent from `runs` are skipped.
    """
    nuisance = [a for a in nuisance if a in factors]
    studied = [f for f in factors if f not in nuisance]
    chosen = select_nuisance(runs, nuisance, studied)
    data = outcome_frame(chosen)
    outcomes = [o for o in OUTCOMES if o in data.columns]
    kw = {"n_boot": n_boot, "seed": seed}

    def stack(frames, columns):
        frames = [f for f in frames if len(f)]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)

    varying = [f for f in studied if data[f].nunique(dropna=False) > 1]
    interactions = []
    for a, b in combinations(varying, 2):
        for outcome in outcomes:
            table = interaction_table(data, a, b, outcome)
            interactions.append(
                pd.DataFrame(
                    {
                        "factor_a": a,
                        "level_a": table[a].map(_level_label),
                        "factor_b": b,
                        "level_b": table[b].map(_level_label),
                        "outcome": outcome,
                        "mean": pd.to_numeric(table["mean"], errors="coerce").astype(float),
                        "n": table["n"].astype(int),
                    }
                )
            )
    out = {
        "main_effects": stack(
            [main_effects(data, studied, o, **kw) for o in outcomes], list(TABLE_COLUMNS["main_effects"])
        ),
        "paired_deltas": stack(
            [paired_deltas(data, studied, o, baselines, **kw) for o in outcomes], list(TABLE_COLUMNS["paired_deltas"])
        ),
        "interactions": stack(interactions, list(TABLE_COLUMNS["interactions"])),
        "variance_decomposition": stack(
            [variance_decomposition(data, studied, o).assign(outcome=o) for o in outcomes],
            list(TABLE_COLUMNS["variance_decomposition"]),
        ),
        "epochs_to_target": epochs_to_target_summary(data, studied)
        if {"epochs_to_target", "epochs_run"} <= set(data.columns)
        else pd.DataFrame(columns=list(TABLE_COLUMNS["epochs_to_target"])),
        "status_counts": status_counts(data, studied),
        "leaderboard": stack(
            [
                leaderboard(data, studied, o, k=k, **kw).assign(outcome=o)
                for o in LEADERBOARD_OUTCOMES
                if o in outcomes
            ],
            ["outcome", "rank_group", "rank", *studied, "mean", "ci_low", "ci_high", "n_seeds"],
        ),
    }
    out["variance_decomposition"] = out["variance_decomposition"][list(TABLE_COLUMNS["variance_decomposition"])]
    board = out["leaderboard"]
    out["leaderboard"] = board[["outcome", *board.columns.drop("outcome")]]
    if nuisance:
        keep = [*studied, "seed", *(f"chosen_{a}" for a in nuisance), "best_val_accuracy", "test_accuracy"]
        out["nuisance_choices"] = chosen[[c for c in keep if c in chosen.columns]].reset_index(drop=True)
    return out


def chosen_rows(frame: pd.DataFrame, chosen: pd.DataFrame, studied: list[str], nuisance: list[str]) -> pd.DataFrame:
    """Rows of a per-run table (curves, diagnostics) that belong to the runs `select_nuisance` kept.

    `chosen` is `select_nuisance`'s output (nuisance columns renamed `chosen_<axis>`), `studied`
    the non-nuisance axes. Without nuisance axes, `frame` itself.
    """
    nuisance = [a for a in nuisance if a in frame.columns]
    if not nuisance:
        return frame
    keys = [*studied, "seed", *nuisance]
    picked = chosen.rename(columns={f"chosen_{a}": a for a in nuisance})[keys].drop_duplicates()
    return frame.merge(picked, on=keys, how="inner")


# --- findings, one helper per sentence -------------------------------------------------------------
def _variance_finding(data: pd.DataFrame, factors: list[str]) -> list[str]:
    anova = variance_decomposition(data, factors, "test_accuracy")
    effects = anova[anova["term"] != "Residual"].dropna(subset=["eta_sq"])
    if effects.empty:
        return []
    top = effects.iloc[0]
    sentence = f"{_term_label(top['term'])} explains {top['eta_sq']:.0%} of the variance in test accuracy"
    if len(effects) > 1:
        runner_up = effects.iloc[1]
        sentence += f" (next: {_term_label(runner_up['term'])}, {runner_up['eta_sq']:.0%})"
    return [sentence + "."]


def _delta_finding(data: pd.DataFrame, factors: list[str], baselines: dict) -> list[str]:
    deltas = paired_deltas(data, factors, "test_accuracy", baselines).dropna(subset=["mean_delta"])
    if deltas.empty:
        return []
    top = deltas.loc[deltas["mean_delta"].abs().idxmax()]
    excludes_zero = top["ci_low"] > 0 or top["ci_high"] < 0
    verdict = "the CI excludes 0" if excludes_zero else "the CI includes 0"
    return [
        f"The largest paired effect on test accuracy: {top['factor']}={top['level']} instead of "
        f"{top['baseline']} changes it by {top['mean_delta']:+.3f} (95% CI {top['ci_low']:+.3f} to "
        f"{top['ci_high']:+.3f}, {top['n_pairs']} pairs; {verdict})."
    ]


def _best_level_findings(data: pd.DataFrame, factors: list[str], baselines: dict) -> list[str]:
    deltas = paired_deltas(data, factors, "test_accuracy", baselines).dropna(subset=["mean_delta"])
    sentences = []
    for factor, group in deltas.groupby("factor", sort=False):
        top = group.loc[group["mean_delta"].idxmax()]
        ci = f"95% CI {top['ci_low']:+.3f} to {top['ci_high']:+.3f}" if np.isfinite(top["ci_low"]) else "no CI"
        numbers = f"{top['mean_delta']:+.3f} test accuracy ({ci}, {top['n_pairs']} pairs)"
        if top["mean_delta"] > 0 and top["ci_low"] > 0:
            sentences.append(f"Best {factor} against the baseline {top['baseline']}: {top['level']}, {numbers}.")
        elif top["mean_delta"] > 0:
            sentences.append(
                f"No {factor} clearly beats the baseline {top['baseline']}: the best, {top['level']}, gives "
                f"{numbers}, and its CI includes 0."
            )
        else:
            sentences.append(
                f"No {factor} beats the baseline {top['baseline']}: the closest, {top['level']}, gives {numbers}."
            )
    return sentences


def _vanishing_finding(data: pd.DataFrame, factors: list[str], outcome: str) -> list[str]:
    cells = data.groupby(factors, dropna=False)[outcome].mean().dropna()
    if cells.empty:
        return []

    def describe(cell) -> str:
        values = cell if isinstance(cell, tuple) else (cell,)
        return ", ".join(f"{f}={_level_label(v)}" for f, v in zip(factors, values))

    label = OUTCOMES[outcome].label.split(" (")[0]
    low, high = cells.idxmin(), cells.idxmax()
    return [
        f"Mean {label} is lowest for {describe(low)} (10^{cells[low]:.1f}) and highest for "
        f"{describe(high)} (10^{cells[high]:.1f})."
    ]


def _divergence_finding(data: pd.DataFrame, factors: list[str]) -> list[str]:
    n_diverged = int((data["status"] == "diverged").sum())
    if n_diverged == 0:
        return [f"No run diverged (of {len(data)})."]
    counts = status_counts(data, factors)
    worst = counts.loc[counts["diverged"].idxmax()]
    return [
        f"{n_diverged} of {len(data)} runs diverged; the most under {worst['factor']}={worst['level']} "
        f"({worst['diverged']} of {worst['n']})."
    ]


def _speed_finding(data: pd.DataFrame, factors: list[str]) -> list[str]:
    summary = epochs_to_target_summary(data, factors)
    if summary.empty or summary["n_reached"].sum() == 0:
        return []
    fastest = summary.loc[summary["mean_rank"].idxmin()]
    median = fastest["km_median_epochs"]
    median_text = f"median {median:g} epochs" if np.isfinite(median) else "median not reached"
    return [
        f"Fastest to the target accuracy: {fastest['factor']}={fastest['level']} ({fastest['share_reached']:.0%} "
        f"of runs reach it, {median_text})."
    ]


# --- shared helpers --------------------------------------------------------------------------------
def _with_outcome(runs: pd.DataFrame, outcome: str) -> pd.DataFrame:
    """`runs`, with `outcome` derived by `outcome_frame` when it is not a column yet."""
    if outcome in runs.columns:
        return runs
    data = outcome_frame(runs)
    if outcome not in data.columns:
        raise KeyError(f"outcome {outcome!r} is neither a column of the runs table nor derivable from one")
    return data


def _bootstrap_ci(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean; NaN for fewer than two values, where it says nothing."""
    if values.size < 2:
        return np.nan, np.nan
    # Resample in blocks so memory stays bounded for large levels.
    block = max(1, 2_000_000 // values.size)
    means = np.concatenate(
        [
            values[rng.integers(0, values.size, size=(min(block, n_boot - start), values.size))].mean(axis=1)
            for start in range(0, n_boot, block)
        ]
    )
    tail = (1 - CI_LEVEL) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def _estimable_terms(model_data: pd.DataFrame, factors: list[str]) -> list[str]:
    """Main effects then two-way interactions, each kept only if it adds full-rank columns and leaves residual df."""
    varying = [f for f in factors if model_data[f].nunique() > 1]
    candidates = [f"C({f})" for f in varying] + [f"C({a}):C({b})" for a, b in combinations(varying, 2)]
    kept: list[str] = []
    n_columns = 1  # the intercept
    for term in candidates:
        # Built by statsmodels itself, so the check sees the same coding as the final fit.
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


def _level_label(level) -> str:
    return "none" if pd.isna(level) else str(level)


def _mean(values: np.ndarray) -> float:
    """Mean that is NaN (not a warning) for no values."""
    return float(values.mean()) if values.size else np.nan
