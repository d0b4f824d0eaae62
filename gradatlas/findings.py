"""The findings' prose: the headline answer per factor and question, the budget line, and the
plain-language findings, each sentence computed from the effect tables' numbers.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from gradatlas.config import FACTORS
from gradatlas.effects import (
    convergence_table,
    gradient_flow_table,
    interaction_table,
    leaderboard,
    paired_deltas,
    paired_differences,
    status_counts,
    variance_decomposition,
)
from gradatlas.outcomes import FLOW_EXPLODING_ABOVE, FLOW_VANISHING_BELOW, HEALTH_CLASSES
from gradatlas.registry import TABLES
from gradatlas.runframe import (
    FLOW_WHEN,
    RELATIVE_TARGET,
    describe_health,
    distinct_at_init,
    health_counts,
    health_frame,
    inert_at_init,
    level_label,
    outcomes_of,
)
from gradatlas.stats import format_estimate, mean as _mean, nan_to, power_of_ten, t_interval, welch_interval


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
    data = outcomes_of(runs)
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
    return pd.DataFrame(rows, columns=list(TABLES["headline"].columns))


def _inert_row(factor: str, levels: list[str]) -> dict:
    sentence = (
        f"Gradients at initialization, {factor}: no effect possible at initialization; its levels "
        f"({', '.join(levels)}) cannot act before the first update, so their runs start from the same "
        "networks (counted once)."
    )
    return {
        "question": QUESTIONS["init"],
        "factor": factor,
        "best": None,
        "runner_up": None,
        "tied": None,
        "measure": None,
        "best_value": np.nan,
        "runner_up_value": np.nan,
        "keeps_alive": None,
        "effect": np.nan,
        "ci_low": np.nan,
        "ci_high": np.nan,
        "n": 0,
        "paired": None,
        "best_summary": "",
        "runner_up_summary": "",
        "sentence": sentence,
    }


def _pairs_unit(paired: bool) -> str:
    return "matched pairs" if paired else "runs, unpaired"


def _flow_row(factor, when, best, second, effect) -> dict:
    diff, low, high, n, paired = effect
    moment = "at initialization" if when == "init" else "after training"
    networks = " (distinct networks)" if when == "init" else ""

    def describe(r):
        counts = {c: int(round(nan_to(r[f"share_{c}"], 0) * int(r["n"]))) for c in HEALTH_CLASSES}
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
    return {
        "question": QUESTIONS[when],
        "factor": factor,
        "best": best["level"],
        "runner_up": second["level"],
        "tied": tied,
        "measure": f"flow_distance_{when}",
        "best_value": best["mean_distance"],
        "runner_up_value": second["mean_distance"],
        "keeps_alive": bool(best["keeps_alive"]),
        "effect": diff,
        "ci_low": low,
        "ci_high": high,
        "n": n,
        "paired": paired,
        "best_summary": describe(best),
        "runner_up_summary": describe(second),
        "sentence": sentence,
    }


def _speed_row(factor, best, second, effect) -> dict:
    diff, low, high, n, paired = effect

    def km(r):
        value = r.get("km_median_epochs_relative", np.nan)
        return f"median {value:g} epochs to the relative target" if np.isfinite(value) else "median not reached"

    def summary(r):
        return (
            f"area {r['mean_val_auc']:.3f}; {km(r)}; {int(r.get('n_reached_relative', 0))} of {int(r['n'])} runs "
            "reach the relative target"
        )

    tied = bool(round(best["mean_val_auc"], 12) == round(second["mean_val_auc"], 12))
    lead = f"a tie between {best['level']} and {second['level']}" if tied else f"{best['level']} learns fastest"
    sentence = (
        f"Convergence speed, {factor}: {lead} (area under the validation curve {best['mean_val_auc']:.3f}, "
        f"{km(best)}; {int(best.get('n_reached_relative', 0))} of {int(best['n'])} runs reach "
        f"{best.get('relative_target', np.nan):.3f}); {'the other' if tied else 'runner-up'} {second['level']} "
        f"({second['mean_val_auc']:.3f}, {km(second)}). Difference in area "
        f"{format_estimate(diff, low, high, n, '+.3f', _pairs_unit(paired))}."
    )
    return {
        "question": QUESTIONS["speed"],
        "factor": factor,
        "best": best["level"],
        "runner_up": second["level"],
        "tied": tied,
        "measure": "val_auc",
        "best_value": best["mean_val_auc"],
        "runner_up_value": second["mean_val_auc"],
        "keeps_alive": None,
        "effect": diff,
        "ci_low": low,
        "ci_high": high,
        "n": n,
        "paired": paired,
        "best_summary": summary(best),
        "runner_up_summary": summary(second),
        "sentence": sentence,
    }


def budget_sentence(settings: dict) -> str:
    """The study's budget and caveats in one line, from `registry.study_settings(config)`."""
    s = {
        k: (", ".join(map(str, v)) if isinstance(v, (list, tuple)) else v)
        for k, v in settings.items()
        if k not in ("nuisance", "grid_learning_rate", "learning_rates")
    } | {k: settings.get(k) for k in ("nuisance", "grid_learning_rate", "learning_rates")}
    tuned = list(s.get("nuisance") or [])
    if "learning_rate" in tuned:
        lr = "learning rate tuned per cell on validation accuracy over " + ", ".join(
            map(str, s.get("grid_learning_rate", []))
        )
    elif s.get("grid_learning_rate"):
        lr = "learning rates untuned (a grid axis: " + ", ".join(map(str, s["grid_learning_rate"])) + ")"
    else:
        rates = s.get("learning_rates", {})
        lr = (
            "learning rates untuned (fixed per optimizer: "
            + ", ".join(f"{k} {v}" for k, v in (rates or {}).items())
            + ")"
        )
    return (
        f"Budget: at most {s.get('epochs')} epochs on {s.get('train_images')} training images, batch "
        f"{s.get('batch_size')}, {lr}; a {s.get('depth')}×{s.get('width')} MLP on MNIST; {s.get('n_seeds')} "
        f"seed(s). Every finding holds for this budget and grid only, not for the techniques in general; "
        f"intervals are 95% t-intervals with their n."
    )


# --- findings -----------------------------------------------------------------------------------
# the figure that shows each kind of finding (the report links the sentence to it)
FINDING_FIGURES = {
    "budget": None,
    "caveat": "learning_curves",
    "gradients": "flow_classes",
    "recipe": "atlas",
    "interaction": "interactions",
    "headline": "flow_classes",
    "variance": "variance",
    "paired_effect": "paired_deltas",
    "best_level": "paired_deltas",
    "extremes": "gradient_flow",
    "divergence": "status",
    "speed": "convergence",
}
FIRST_SCREEN = ("gradients", "recipe", "interaction", "caveat")  # the kinds the answer opens with


def findings(
    runs: pd.DataFrame,
    factors: list[str],
    baselines: dict,
    settings: dict | None = None,
    target: float | None = None,
    head: pd.DataFrame | None = None,
    anova: pd.DataFrame | None = None,
    deltas: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Plain-language sentences computed from the numbers, one row each: kind, sentence, figure.

    kinds (FINDING_FIGURES): budget, gradients (what keeps gradients alive and what kills them),
    recipe (what converges best and fastest), interaction (the largest one), caveat (batch-norm runs
    too short for their moving averages), headline (per factor), variance, paired_effect,
    best_level, extremes, divergence, speed. `runs` should come from `convergence_outcomes`; a
    finding whose data is absent is skipped. `figure` names the figure that shows it (or None).
    `head`, `anova`, `deltas`: the headline table and test accuracy's variance decomposition and
    paired deltas where the caller has them (analysis.study_tables), else computed here.
    """
    data = outcomes_of(runs)
    settings = settings or {}
    rows: list[tuple[str, str]] = []
    if settings:
        rows.append(("budget", budget_sentence(settings)))
    rows += [("gradients", s) for s in _gradient_answer(data, factors)]
    if "test_accuracy" in data.columns:  # the ANOVA and the paired deltas, once for every finding that reads them
        if anova is None:
            anova = variance_decomposition(data, factors, "test_accuracy")
        if deltas is None:
            deltas = paired_deltas(data, factors, "test_accuracy", baselines)
        deltas = deltas.dropna(subset=["mean_delta"])
        rows += [("recipe", s) for s in _recipe_finding(data, factors)]
        rows += [("interaction", s) for s in _interaction_finding(data, anova, baselines)]
    rows += [("caveat", s) for s in _bn_caveat(data, settings)]
    if head is None:
        head = headline(data, factors, target)
    rows += [("headline", s) for s in head["sentence"]]
    if "test_accuracy" in data.columns:
        rows += [("variance", s) for s in _variance_finding(anova)]
        rows += [("paired_effect", s) for s in _delta_finding(deltas)]
        rows += [("best_level", s) for s in _best_level_findings(deltas)]
    for when in FLOW_WHEN:
        if f"health_{when}" in data.columns:
            rows += [("extremes", s) for s in _flow_extremes(data, factors, when)]
    if "status" in data.columns:
        rows += [("divergence", s) for s in _divergence_finding(data, factors)]
    if {"epochs_to_target", "epochs_run"} <= set(data.columns):
        rows += [("speed", s) for s in _speed_finding(data, factors, target)]
    # a headline sentence shows in the figure of its question
    questions = iter(head["question"])
    figure = [
        ("convergence" if next(questions) == QUESTIONS["speed"] else "flow_classes")
        if kind == "headline"
        else FINDING_FIGURES[kind]
        for kind, _ in rows
    ]
    return pd.DataFrame(
        {"kind": [k for k, _ in rows], "sentence": [s for _, s in rows], "figure": figure},
        columns=["kind", "sentence", "figure"],
    )


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
            out.append(
                f"At initialization {describe_health(total)} distinct networks; healthy in "
                f"{len(by_class['healthy'])} of {cells} cells ({' × '.join(acting) or 'one cell'}). "
                + (f"Killed: {'; '.join(killed)}." if killed else "None is killed.")
            )
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
    match = (
        np.logical_and.reduce([data[f].map(level_label) == v for f, v in cell.items()])
        if cell
        else np.ones(len(data), bool)
    )
    epochs = (
        pd.to_numeric(data.loc[match, "epochs_to_relative_target"], errors="coerce")
        if "epochs_to_relative_target" in data
        else pd.Series(dtype=float)
    )
    median = epochs.median()
    speed = (
        f"; it reaches the relative target ({data['relative_target'].iloc[0]:.3f}) in a median {median:g} "
        f"epoch{'' if median == 1 else 's'}"
        if epochs.notna().any()
        else ""
    )
    within = board.iloc[1:][board["mean"].iloc[1:] >= (top["ci_low"] if np.isfinite(top["ci_low"]) else top["mean"])]
    others = (
        f" Within its interval: {len(within)} more cell(s), e.g. "
        + "; ".join(f"{_cell_name({f: r[f] for f in varying})} {r['mean']:.3f}" for _, r in within.head(3).iterrows())
        + "."
        if len(within)
        else ""
    )
    return [
        f"Best recipe: {_cell_name(cell) or 'the only cell'}, test accuracy "
        f"{format_estimate(top['mean'], top['ci_low'], top['ci_high'], top['n_seeds'], '.3f', 'seeds')}{speed}."
        + others
    ]


def _interaction_finding(data: pd.DataFrame, anova: pd.DataFrame, baselines: dict) -> list[str]:
    """The two-way interaction with the largest share of test-accuracy variance (`anova`), in words:
    how the effect of one factor's level changes across the other factor's levels."""
    terms = anova[anova["term"].str.contains(":") & anova["eta_sq"].notna()]
    if terms.empty:
        return []
    term = terms.iloc[0]
    a, b = re.findall(r"C\((\w+)\)", term["term"])
    best = None
    for x, y in ((a, b), (b, a)):
        means = interaction_table(data, x, y, "test_accuracy").assign(
            **{x: lambda t: t[x].map(level_label), y: lambda t: t[y].map(level_label)}
        )
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
    return [
        f"Largest interaction ({_term_label(term['term'])}, {term['eta_sq']:.0%} of the variance in test accuracy): "
        f"{x} {level} instead of {base} changes test accuracy by {effect[hi]:+.3f} with {y} {hi} "
        f"({grid.loc[base, hi]:.3f} → {grid.loc[level, hi]:.3f}) but by {effect[lo]:+.3f} with {y} {lo} "
        f"({grid.loc[base, lo]:.3f} → {grid.loc[level, lo]:.3f}); means over the other factors and seeds."
    ]


def _bn_caveat(data: pd.DataFrame, settings: dict) -> list[str]:
    """Batch-norm runs evaluated before their moving averages settled (outcomes.BN_UNSETTLED_ABOVE)."""
    from gradatlas.outcomes import bn_moving_average_left, bn_steps_needed

    momentum = settings.get("bn_momentum")
    if (
        momentum is None
        or "regularizer" not in data.columns
        or not {"steps_per_epoch", "epochs_run"} <= set(data.columns)
    ):
        return []
    bn = data[data["regularizer"].map(level_label) == "batch_norm"]
    steps = (
        pd.to_numeric(bn["steps_per_epoch"], errors="coerce") * pd.to_numeric(bn["epochs_run"], errors="coerce")
    ).dropna()
    needed = bn_steps_needed(momentum)
    short = steps[steps < needed]
    if short.empty:
        return []
    left = bn_moving_average_left(momentum, int(short.min()))
    return [
        f"Caveat: {len(short)} of {len(steps)} batch-norm runs trained fewer than {needed} steps (the fewest "
        f"{int(short.min())}), so with momentum {momentum:g} their moving averages still hold up to {left:.0%} of "
        "their initial mean 0 and variance 1; these runs are evaluated on statistics that are not yet their own, "
        "and their validation and test accuracy may understate them. Lower techniques.batch_norm.momentum "
        f"(e.g. 0.9 settles in {bn_steps_needed(0.9)} steps) or train more steps."
    ]


def _variance_finding(anova: pd.DataFrame) -> list[str]:
    effects = anova[anova["term"] != "Residual"].dropna(subset=["eta_sq"])
    if effects.empty:
        return []
    top = effects.iloc[0]
    sentence = (
        f"In this study, {_term_label(top['term'])} explains {top['eta_sq']:.0%} of the variance in test accuracy"
    )
    if len(effects) > 1:
        runner_up = effects.iloc[1]
        sentence += f" (next: {_term_label(runner_up['term'])}, {runner_up['eta_sq']:.0%})"
    return [sentence + f"; n={int(anova['df'].sum()) + 1} runs, a share of this grid's variance, not a general truth."]


def _delta_finding(deltas: pd.DataFrame) -> list[str]:
    if deltas.empty:
        return []
    top = deltas.loc[deltas["mean_delta"].abs().idxmax()]
    ci_known = np.isfinite(top["ci_low"])
    verdict = (
        ("the CI excludes 0" if top["ci_low"] > 0 or top["ci_high"] < 0 else "the CI includes 0")
        if ci_known
        else "no interval"
    )
    return [
        f"The largest paired effect on test accuracy: {top['factor']}={top['level']} instead of {top['baseline']} "
        "changes it by "
        f"{format_estimate(top['mean_delta'], top['ci_low'], top['ci_high'], top['n_pairs'], unit='pairs')}; "
        f"{verdict}."
    ]


def _best_level_findings(deltas: pd.DataFrame) -> list[str]:
    sentences = []
    for factor, group in deltas.groupby("factor", sort=False):
        top = group.loc[group["mean_delta"].idxmax()]
        estimate = format_estimate(top["mean_delta"], top["ci_low"], top["ci_high"], top["n_pairs"], unit="pairs")
        numbers = f"{estimate} test accuracy"
        if top["mean_delta"] > 0 and top["ci_low"] > 0:
            sentences.append(f"Best {factor} against the baseline {top['baseline']}: {top['level']}, {numbers}.")
        elif top["mean_delta"] > 0:
            sentences.append(
                f"No {factor} clearly beats the baseline {top['baseline']}: the best, {top['level']}, gives "
                f"{numbers}, and its interval includes 0 or is unavailable."
            )
        else:
            sentences.append(
                f"No {factor} beats the baseline {top['baseline']}: the closest, {top['level']}, gives {numbers}."
            )
    return sentences


def _flow_extremes(data: pd.DataFrame, factors: list[str], when: str) -> list[str]:
    """The healthiest, the most vanishing and the most exploding cell (at init: distinct networks),
    each by the mean log10 delta ratio of its runs, with their verdicts."""
    frame = health_frame(data, factors, when)
    column = f"log10_vanishing_ratio_{when}"
    groups = frame.groupby(factors, dropna=False, sort=False)
    cells = (
        groups[column]
        .agg(["mean", "count"])
        .join(groups[f"health_{when}"].agg(lambda v: describe_health(health_counts(v))).rename("health"))
    )
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
        out.append(
            f"Healthiest cell {moment}: {describe(cell)}, "
            f"delta ratio {power_of_ten(cells.loc[[cell], 'mean'].iloc[0])} "
            f"({cells.loc[[cell], 'health'].iloc[0]})."
        )
    for name, pick, beyond in (
        ("vanishing", "idxmin", np.log10(FLOW_VANISHING_BELOW)),
        ("exploding", "idxmax", np.log10(FLOW_EXPLODING_ABOVE)),
    ):
        side = cells[cells["mean"] < beyond] if name == "vanishing" else cells[cells["mean"] > beyond]
        if len(side):
            cell = getattr(side["mean"], pick)()
            out.append(
                f"Most {name} cell {moment}: {describe(cell)}, {power_of_ten(side.loc[[cell], 'mean'].iloc[0])} "
                f"({cells.loc[[cell], 'health'].iloc[0]}); {len(side)} of {len(cells)} cells have a mean delta ratio "
                f"{'<' if name == 'vanishing' else '>'} {10**beyond:g}."
            )
        else:
            out.append(
                f"No cell has a mean delta ratio {'<' if name == 'vanishing' else '>'} {10**beyond:g} {moment} "
                f"({len(cells)} cells)."
            )
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
        out.append(
            f"The relative target is {RELATIVE_TARGET:.0%} of the study's best validation accuracy "
            f"({data['relative_target'].iloc[0]:.3f}); {int(rel.sum())} of {len(data)} runs reached it."
        )
    return out


def _term_label(term: str) -> str:
    """`C(a):C(b)` -> `a × b`, for sentences."""
    return " × ".join(re.findall(r"C\((\w+)\)", term))
