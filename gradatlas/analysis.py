"""The study's analysis tables, computed once by `rule analyze` (`study_tables`), and the public names
of the modules that compute them.

Every function is pure: tables in, a new tidy DataFrame (or a list of sentences) out; nothing is read
or written. `factors` always names grid axes (never `seed`). The work is split by job:

- gradatlas.runframe: level labels, nuisance selection and the per-run frame with every derived
  outcome (`outcome_frame`, `convergence_outcomes`, `complete_curves`);
- gradatlas.stats: t-intervals (scipy), Kaplan-Meier (statsmodels), how numbers are printed;
- gradatlas.effects: main effects, paired deltas, interactions, variance decomposition, gradient
  flow and convergence per level, status counts, leaderboard;
- gradatlas.findings: the headline answer, the budget line and the findings in words.

Table names, rows and columns are in gradatlas.registry.TABLES.
"""

from __future__ import annotations

from itertools import combinations

import pandas as pd

from gradatlas.config import FACTORS
from gradatlas.effects import (
    convergence_table,
    gradient_flow_table,
    interaction_table,
    leaderboard,
    main_effects,
    paired_deltas,
    status_counts,
    variance_decomposition,
)
from gradatlas.findings import FINDING_FIGURES, FIRST_SCREEN, QUESTIONS, budget_sentence, findings, headline
from gradatlas.outcomes import STATUSES
from gradatlas.registry import NUISANCE_TABLE, TABLES
from gradatlas.runframe import (
    CHANCE_ACCURACY,
    EPOCH1_FRACTIONS,
    OUTCOMES,
    RELATIVE_TARGET,
    activation_family,
    chosen_rows,
    complete_curves,
    convergence_outcomes,
    label_levels,
    level_label,
    outcome_frame,
    run_keys,
    select_nuisance,
)
from gradatlas.stats import format_ci, format_estimate, kaplan_meier, km_median, power_of_ten, t_interval

LEADERBOARD_OUTCOMES = ("test_accuracy", "val_auc", "flow_distance_init")


def prepare(
    runs: pd.DataFrame, curves: pd.DataFrame | None, factors: list[str], nuisance=(), epochs: int | None = None
):
    """(chosen runs with every outcome, studied axes, nuisance axes, their completed curves or None):
    levels labelled, nuisance axes optimized away on validation accuracy, every outcome derived."""
    nuisance = [a for a in nuisance if a in factors]
    studied = [f for f in factors if f not in nuisance]
    runs = label_levels(runs, factors)
    chosen = select_nuisance(runs, nuisance, studied)
    completed = None
    if curves is not None:
        curves = chosen_rows(label_levels(curves, factors), chosen, studied, nuisance)
        completed = complete_curves(curves, chosen, run_keys(chosen, studied), epochs)
    data = outcome_frame(convergence_outcomes(chosen, completed, studied))
    return data, studied, nuisance, completed


def study_tables(
    runs: pd.DataFrame,
    factors: list[str],
    baselines: dict,
    nuisance: list[str] | tuple = (),
    curves: pd.DataFrame | None = None,
    settings: dict | None = None,
    k: int = 5,
) -> dict[str, pd.DataFrame]:
    """Every analysis table of a study, by name (registry.TABLES, which documents their columns).

    `factors` lists every non-seed axis of `runs`; the `nuisance` axes among them are optimized away
    per cell and seed on validation accuracy and every other table describes the chosen runs
    (`chosen_runs`: the per-run frame, derived here once and passed down). `curves` (the curves table)
    gives the convergence outcomes that never come out empty and `completed_curves`; `settings`
    (`registry.study_settings(config)`) gives the target accuracy, the epoch budget and the budget line.
    """
    settings = settings or {}
    target = settings.get("target_accuracy")
    data, studied, nuisance, completed = prepare(runs, curves, factors, nuisance, settings.get("epochs"))
    outcomes = [o for o in OUTCOMES if o in data.columns]
    keys = run_keys(data, studied)

    def stack(frames, name):
        frames = [f for f in frames if len(f)]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(TABLES[name].columns))

    varying = [f for f in studied if data[f].nunique(dropna=False) > 1]
    interactions = []
    for a, b in combinations(varying, 2):
        for outcome in outcomes:
            table = interaction_table(data, a, b, outcome)
            interactions.append(
                pd.DataFrame(
                    {
                        "factor_a": a,
                        "level_a": table[a].map(level_label),
                        "factor_b": b,
                        "level_b": table[b].map(level_label),
                        "outcome": outcome,
                        "mean": pd.to_numeric(table["mean"], errors="coerce").astype(float),
                        "n": table["n"].astype(int),
                    }
                )
            )
    board_columns = ["outcome", "rank_group", "rank", *studied, "mean", "ci_low", "ci_high", "n_seeds", "health"]
    boards = [leaderboard(data, studied, o, k=k) for o in LEADERBOARD_OUTCOMES if o in outcomes]
    board = (
        pd.concat([b for b in boards if len(b)], ignore_index=True)
        if any(len(b) for b in boards)
        else pd.DataFrame(columns=board_columns)
    )
    # computed once: the findings read the headline and test accuracy's ANOVA and paired deltas too
    head = headline(data, studied, target)
    anova = {o: variance_decomposition(data, studied, o) for o in outcomes}
    deltas = {o: paired_deltas(data, studied, o, baselines) for o in outcomes}
    out = {
        "chosen_runs": data.reset_index(drop=True),
        "completed_curves": completed if completed is not None else complete_curves(pd.DataFrame(), data, keys),
        "headline": head,
        "gradient_flow": gradient_flow_table(data, studied),
        "convergence": convergence_table(data, studied, target),
        "main_effects": stack([main_effects(data, studied, o) for o in outcomes], "main_effects"),
        "paired_deltas": stack([deltas[o] for o in outcomes], "paired_deltas"),
        "interactions": stack(interactions, "interactions"),
        "variance_decomposition": stack([anova[o].assign(outcome=o) for o in outcomes], "variance_decomposition")[
            list(TABLES["variance_decomposition"].columns)
        ],
        "status_counts": status_counts(data, studied),
        "leaderboard": board[board_columns],
        "findings": findings(
            data,
            studied,
            baselines,
            settings or None,
            target,
            head=head,
            anova=anova.get("test_accuracy"),
            deltas=deltas.get("test_accuracy"),
        ),
    }
    if nuisance:
        keep = [*studied, "seed", *(f"chosen_{a}" for a in nuisance), "best_val_accuracy", "test_accuracy"]
        out[NUISANCE_TABLE] = data[[c for c in keep if c in data.columns]].reset_index(drop=True)
    return out


__all__ = [
    "CHANCE_ACCURACY",
    "EPOCH1_FRACTIONS",
    "FACTORS",
    "FINDING_FIGURES",
    "FIRST_SCREEN",
    "LEADERBOARD_OUTCOMES",
    "NUISANCE_TABLE",
    "OUTCOMES",
    "QUESTIONS",
    "RELATIVE_TARGET",
    "STATUSES",
    "activation_family",
    "budget_sentence",
    "chosen_rows",
    "complete_curves",
    "convergence_outcomes",
    "convergence_table",
    "findings",
    "format_ci",
    "format_estimate",
    "gradient_flow_table",
    "headline",
    "interaction_table",
    "kaplan_meier",
    "km_median",
    "label_levels",
    "leaderboard",
    "level_label",
    "main_effects",
    "outcome_frame",
    "paired_deltas",
    "power_of_ten",
    "prepare",
    "run_keys",
    "select_nuisance",
    "status_counts",
    "study_tables",
    "t_interval",
    "variance_decomposition",
]  # the public names: figures, report and the tests use them as analysis.<name>
