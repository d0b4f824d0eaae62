"""The report's lists, defined once: the analysis tables (with their rows and columns), the report's
sections, figures and their captions.

Light on purpose (no pandas, no matplotlib): the Snakefile's rules (analysis.smk, report.smk) import
it at parse time, and gradatlas.analysis, gradatlas.figures and gradatlas.report read the same lists.
"""

from __future__ import annotations

from typing import NamedTuple

from gradatlas import catalog
from gradatlas.outcomes import HEALTH_CLASSES, HEALTH_RULES


# The tables `rule analyze` writes to results/tables/ (parquet + csv), in this order, each with what a
# row is and what every column means (docs/report.md says the same; a test checks it names every
# column). `nuisance_choices` only with report.nuisance axes.
class Table(NamedTuple):
    row: str  # one row per ...
    columns: dict[str, str]  # column -> meaning; '<...>' names a family of columns


NUISANCE_TABLE = "nuisance_choices"
_LEVEL = "level of the factor, as a string (a missing value, e.g. clipnorm null, reads 'none')"
_CI = "lower end of the 95% t-interval (NaN, printed n/a, with fewer than 2 values)"
TABLES: dict[str, Table] = {
    "chosen_runs": Table(
        "run the other tables describe (after report.nuisance selection: one per cell × seed)",
        {
            "<runs columns>": "every column of the runs table (README, Tables), grid axes as level labels",
            "chosen_<nuisance axis>": "in place of a nuisance axis: the value kept for this cell and seed",
            "log10_vanishing_ratio_init": "log10 of vanishing_ratio_init (NaN where missing or not positive)",
            "flow_distance_init": "its absolute value: distance from healthy gradient flow at init (0 = ideal)",
            "log10_vanishing_ratio_final": "log10 of vanishing_ratio_final",
            "flow_distance_final": "its absolute value, after training",
            "relative_target": "95% of the study's best validation accuracy (with curves)",
            "val_auc": "area under the completed validation curve: its mean over the epoch budget (with curves)",
            "epochs_to_relative_target": "first epoch at or above relative_target (NaN: never; with curves)",
            "steps_to_target": "epochs_to_target x steps_per_epoch",
            "steps_to_relative_target": "epochs_to_relative_target x steps_per_epoch (with curves)",
        },
    ),
    "completed_curves": Table(
        "chosen run × epoch of the epoch budget (no run drops out)",
        {
            "<axes>": "one column per studied grid axis: the run's cell",
            "seed": "the seed",
            "epoch": "1 to train.epochs",
            "val_accuracy": "validation accuracy; after an early stop the run's best so far (its restored "
            "weights), at and after a divergence chance (0.1)",
            "filled": "observed, early_stop or diverged: where val_accuracy comes from",
        },
    ),
    "headline": Table(
        "question × factor (factors with two or more levels)",
        {
            "question": "'gradient health init', 'gradient health final' or 'convergence speed' (analysis.QUESTIONS)",
            "factor": "grid axis",
            "best": "the level that answers the question best (see gradient_flow.rank / convergence.mean_val_auc); "
            "empty where the factor cannot act at initialization",
            "runner_up": "the second level",
            "tied": "True when best and runner-up are equal on the ranking (a tie, not a win)",
            "measure": "outcome behind the comparison (flow_distance_<when> lower is better; val_auc higher)",
            "best_value": "the best level's mean of the measure",
            "runner_up_value": "the runner-up's mean",
            "keeps_alive": (
                "gradient health: True when the best level is untied and more than half its runs are healthy"
            ),
            "effect": "best minus runner-up on the measure, paired on every other axis and the seed when possible",
            "ci_low": _CI,
            "ci_high": "upper end of that interval",
            "n": "matched pairs (paired) or runs (unpaired) behind the interval; at init, pairs of distinct networks",
            "paired": "True when the effect is paired, False for a Welch comparison of unpaired runs",
            "best_summary": (
                "the best level in numbers (runs per verdict and median delta ratio as 10^x; or area and speed)"
            ),
            "runner_up_summary": "the same for the runner-up",
            "sentence": "the row in words, as the report shows it",
        },
    ),
    "gradient_flow": Table(
        "init/final × factor with two or more levels × level",
        {
            "when": "init (first probe, before any update) or final (last probe)",
            "factor": "grid axis with two or more levels (at init: levels that can act before the first update)",
            "level": _LEVEL + "; at init, levels that cannot act yet are joined ('none = l2 = dropout')",
            "n": "runs with a verdict (at init: distinct networks, each counted once)",
            "n_missing": "runs without one",
            **{f"share_{c}": f"share of those runs whose verdict is {c} ({HEALTH_RULES[c]})" for c in HEALTH_CLASSES},
            "median_log10_ratio": "median log10 delta ratio (layer-1 delta_rms / output-layer delta_rms)",
            "mean_distance": (
                "mean |log10 ratio|: distance from healthy flow, vanishing and exploding alike (0 = ideal)"
            ),
            "ci_low": _CI,
            "ci_high": "upper end of that interval",
            "rank": (
                "1 = keeps gradients alive best: most healthy runs first, then smallest mean distance "
                "(ties share a rank)"
            ),
            "tied": "True when another level of the factor has the same rank",
            "keeps_alive": "True for an untied rank-1 level with more than half its runs healthy",
        },
    ),
    "convergence": Table(
        "factor × level",
        {
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
    ),
    "main_effects": Table(
        "outcome × factor × level",
        {
            "factor": "grid axis (initializer, activation, optimizer, regularizer, or an optional axis)",
            "level": _LEVEL,
            "outcome": "outcome name (see analysis.OUTCOMES)",
            "mean": "mean of the outcome over every run at this level (other factors and seeds pooled)",
            "ci_low": _CI,
            "ci_high": "upper end of that interval",
            "n": "runs at this level with a value of the outcome",
            "share_nonmissing": "n / runs at this level (below 1 where e.g. diverged runs lack the outcome)",
        },
    ),
    "paired_deltas": Table(
        "outcome × factor × non-baseline level",
        {
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
    ),
    "interactions": Table(
        "outcome × factor pair × level pair (every pair of varying factors)",
        {
            "factor_a": "first grid axis of the pair",
            "level_a": "its level",
            "factor_b": "second grid axis of the pair",
            "level_b": "its level",
            "outcome": "outcome name",
            "mean": "mean of the outcome over the runs of this (level_a, level_b) cell",
            "n": "runs of the cell with a value",
        },
    ),
    "variance_decomposition": Table(
        "outcome × ANOVA term",
        {
            "outcome": "outcome name",
            "term": "C(f) for a main effect, C(f):C(g) for a two-way interaction, Residual",
            "sum_sq": "type-II sum of squares of the term",
            "df": "degrees of freedom",
            "eta_sq": "share of the total variance the term explains (sum_sq / total sum of squares)",
            "partial_eta_sq": "sum_sq / (sum_sq + residual sum_sq); NaN for Residual",
            "F": "F statistic",
            "p": "p-value of the F test",
        },
    ),
    "status_counts": Table(
        "factor × level",
        {
            "factor": "grid axis",
            "level": _LEVEL,
            "n": "runs at this level",
            "converged": "runs that trained normally",
            "stalled": "runs whose best validation accuracy stayed below train.stall_accuracy",
            "diverged": "runs stopped by a non-finite loss",
        },
    ),
    "leaderboard": Table(
        "outcome × ranked cell",
        {
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
    ),
    "findings": Table(
        "sentence",
        {
            "kind": "budget, gradients, recipe, interaction, caveat, headline, variance, paired_effect, best_level, "
            "extremes, divergence or speed (analysis.FINDING_FIGURES)",
            "sentence": "the finding in words, computed from the numbers",
            "figure": "the report figure that shows it (registry.FIGURES name), or empty",
        },
    ),
    NUISANCE_TABLE: Table(
        "cell × seed (only with `report.nuisance`)",
        {
            "<axes>": "one column per studied (non-nuisance) grid axis",
            "seed": "the seed",
            "chosen_<nuisance axis>": "the nuisance value kept for this cell and seed (best validation accuracy)",
            "best_val_accuracy": "the validation accuracy that chose it",
            "test_accuracy": "the test accuracy of the chosen run (never used for the choice)",
        },
    ),
}
ANALYSIS_TABLES = tuple(name for name in TABLES if name != NUISANCE_TABLE)


# Tables registered in Snakemake's own report (`snakemake --report`), with their section key.
REPORT_TABLES = {
    "headline": "overview",
    "gradient_flow": "gradient-flow",
    "convergence": "convergence",
    "paired_deltas": "effects",
    "variance_decomposition": "variance",
    "leaderboard": "leaderboard",
}


def report_table_entry(path: str) -> dict | None:
    """Snakemake `report()` arguments for an analysis table's file: its CSV goes into the report when the
    table is in REPORT_TABLES (caption workflow/report/table_<name>.rst, its section); None otherwise."""
    name, _, ext = path.rsplit("/", 1)[-1].partition(".")
    if ext != "csv" or name not in REPORT_TABLES:
        return None
    return {
        "caption": f"../report/table_{name}.rst",
        "category": SECTION_TITLES[REPORT_TABLES[name]],
        "subcategory": "tables",
        "labels": {"table": name},
    }


def analysis_table_names(nuisance) -> list[str]:
    """The tables `rule analyze` writes for a study with these nuisance axes."""
    return list(ANALYSIS_TABLES) + ([NUISANCE_TABLE] if nuisance else [])


class Section(NamedTuple):
    key: str  # HTML id
    title: str  # numbered, zero-padded so "10" sorts after "09" in Snakemake's report


SECTIONS: tuple[Section, ...] = (
    Section("overview", "01. The answer, the budget and provenance"),
    Section("gradient-flow", "02. Gradient flow: which level keeps gradients alive"),
    Section("convergence", "03. Convergence speed"),
    Section("atlas", "04. The atlas and all two-way interactions"),
    Section("effects", "05. Main effects and paired deltas"),
    Section("variance", "06. Which technique matters most"),
    Section("delta-time", "07. Error signal over layers and time"),
    Section("activations", "08. Activations, saturation and dead units"),
    Section("learning-curves", "09. Learning and loss curves"),
    Section("leaderboard", "10. Leaderboard and all findings"),
)
SECTION_TITLES = {s.key: s.title for s in SECTIONS}


class FigureSpec(NamedTuple):
    """One figure of the report: file stem, section key, title, caption (what it shows, how to read it,
    units). The HTML report and Snakemake's report (workflow/report/<name>.rst) both use them."""

    name: str
    section: str
    title: str
    caption: str


FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec(
        "status",
        "overview",
        "Run status per factor level",
        "Stacked horizontal bars: for each level of each factor, how many runs converged, stalled (best "
        "validation accuracy below train.stall_accuracy) or diverged (a non-finite loss stopped them). Units: "
        "runs. A long 'diverged' or 'stalled' segment flags a level that breaks training.",
    ),
    FigureSpec(
        "flow_classes",
        "gradient-flow",
        "Gradient-health class per level",
        "For each level of each factor, the share of runs (0-1) in each gradient-health class (healthy, "
        "vanishing, exploding, saturated, dead, diverged: the rules are given above the tables), at "
        "initialization (left) and at the last probe (right); 'no value': runs without a verdict. Classes are "
        "counted apart, never averaged together. Each class and status has a fixed colour that no factor "
        "level uses.",
    ),
    FigureSpec(
        "gradient_flow",
        "gradient-flow",
        "Error signal and weight gradient through the layers",
        "log10 of the RMS per-sample error signal δ (delta_rms) and of the weight-gradient norm ‖∂L/∂W‖ per "
        "Dense layer (1 = next to the input, last = output layer), at initialization and after epoch 1; one "
        "row per activation, one line per initializer; band: 95% t-interval of the mean over runs. A line "
        "that falls toward layer 1 is a vanishing gradient, one that rises is exploding, flat is healthy.",
    ),
    FigureSpec(
        "convergence",
        "convergence",
        "Share of runs at the target by epoch",
        "Performance profile: the share of runs (0-1) whose validation accuracy has reached a threshold by "
        "epoch e, per factor level; runs that never reach it stay in the denominator (legend: reached/runs). "
        "Top row: the configured train.target_accuracy; bottom row: a target relative to the study's best "
        "run (a share of its best validation accuracy), which some runs always reach. Higher and further "
        "left is faster.",
    ),
    FigureSpec(
        "atlas",
        "atlas",
        "Test accuracy atlas",
        "Heatmaps of test accuracy (fraction correct, 0-1; mean over seeds; colour bar on the right) with "
        "initializers as rows and activations as columns in the config's order, one panel per optimizer / "
        "regularizer combination (at most 16 panels; with more, the best-scoring ones); accuracy has the same colormap "
        "here and in the interactions. Cells marked "
        "'✕ k/n div.' had k of their n seeds diverge (their accuracy is that of the diverged model).",
    ),
    FigureSpec(
        "interactions",
        "atlas",
        "Two-way interactions, every factor pair",
        "Mean test accuracy (0-1, colour bar per panel) for each pair of levels of two factors, over every "
        "other factor and seed, for every pair of varying factors; rows and columns in the config's order, as "
        "in the atlas, and the atlas's colormap for accuracy. Rows that are not parallel show an interaction: "
        "a technique that helps only together "
        "with another.",
    ),
    FigureSpec(
        "main_effects",
        "effects",
        "Main effects with 95% t-intervals",
        "Each panel: the mean of one outcome (row) per level of one factor (column), over all other factors "
        "and seeds; bars are 95% t-intervals (n beside each point). Outcomes: test accuracy (0-1), distance "
        "from healthy gradient flow at init (|log10 delta ratio|, 0 = no loss or gain), area under the "
        "validation-accuracy curve (0-1). One colour per level throughout the report.",
    ),
    FigureSpec(
        "paired_deltas",
        "effects",
        "Paired effects against the baselines",
        "Forest plot: each row is one level compared with its factor's baseline (config report.baselines), "
        "paired on every other factor and the seed; the dot is the mean difference (level minus baseline), "
        "the line its 95% t-interval over pairs (n pairs in the table), both in neutral grey. A line that does not "
        "cross the dashed zero line is a clear effect. Units as in the x-axis labels.",
    ),
    FigureSpec(
        "variance",
        "variance",
        "Variance decomposition (η²)",
        "For the key outcomes (test accuracy, distance from healthy flow at init and after training, area under "
        "the validation curve; every outcome is in the variance_decomposition table), the share of its variance "
        "across runs explained by each factor and each two-way "
        "interaction, from a two-way ANOVA with type-II sums of squares (η², 0-1). It describes this study's "
        "grid and budget only: the share depends on which levels were chosen.",
    ),
    FigureSpec(
        "delta_heatmaps",
        "delta-time",
        "δ over layers and time",
        "For contrasting cells (the best and worst by test accuracy, the most vanishing and the most "
        "exploding at init), log10 delta_rms (colour, one common scale with a colour bar) per layer (rows, "
        "input side at the bottom) at each probe (columns, labelled: init, early steps, epoch ends). The "
        "colour scale is clipped at the 2nd-98th percentile: arrow ends on the colour bar and the title say "
        "so; hatched cells are probes where the network had diverged (no finite value).",
    ),
    FigureSpec(
        "delta_percentiles",
        "delta-time",
        "Distribution of the error signal per layer over training",
        "Each run's 5th, 50th and 95th percentiles of |per-sample error signal| over the probe batch and units "
        "(delta_p05/p50/p95, same scale as delta_rms; log axis), per layer (columns) and activation (rows) "
        "against optimizer steps (log scale; step 0 drawn at 1), pooled over runs by medians: line, the "
        "median over runs of the run medians; band, their 25th-75th percentile over runs; dotted, the "
        "medians over runs of the 5th and 95th percentiles. Runs with batch_norm are drawn apart (the "
        "batch_norm level's colour) from the others (grey), so a few extreme runs or BN do not set the "
        "picture.",
    ),
    FigureSpec(
        "activation_percentiles",
        "activations",
        "Distribution of activations per layer over training",
        "Each run's 5th, 50th and 95th percentiles of each block's output over probe samples and units "
        "(act_p05/p50/p95), per layer (columns) and activation (rows) against optimizer steps (log scale; "
        "step 0 drawn at 1), pooled over runs by medians: line, the median over runs of the run medians; "
        "band, their 25th-75th percentile over runs; dotted, the medians over runs of the 5th and 95th "
        "percentiles. Runs with batch_norm (the batch_norm level's colour) are drawn apart from the others "
        "(grey). A panel whose values pass 100 uses a symlog axis (linear within ±1, log beyond). Lines "
        "collapsing onto the activation's flat region show saturation.",
    ),
    FigureSpec(
        "saturation",
        "activations",
        "Saturated, inactive and dead units",
        "One row per activation. Left panels: for saturating activations (sigmoid, tanh, elu, selu, gelu) the "
        "share of (sample, unit) pairs whose derivative is below 5% of its maximum (saturated_frac); for ReLU "
        "and leaky ReLU the share with negative input (inactive_frac): different measures, never on one "
        "panel. Right panels: share of units whose derivative is ~0 for every probe sample (dead_frac). Each "
        "run's share is its mean over the hidden layers, as the gradient-health verdict reads it; lines are "
        "the median over runs per initializer (colour), bands the 25th-75th percentile, against optimizer "
        "steps (log scale). Dashed: the verdict's threshold (saturated at 20%, dead at 50%). Runs with "
        "batch_norm have panels of their own (pooled, BN hides the saturated cells); probes of diverged "
        "networks add no value.",
    ),
    FigureSpec(
        "update_ratio",
        "activations",
        "Relative weight updates per layer",
        "Update ratio per step: ‖W(t) − W(previous probe)‖ / ‖W(previous probe)‖ divided by the optimizer "
        "steps between the two probes (1 to a few hundred), per Dense layer (colour) against optimizer steps "
        "(log scale), one panel per activation; median over runs (line), 25th-75th percentile (band), log "
        "axis. It is a lower bound on the mean single-step ratio (equal when the steps point the same way), "
        "so a value below the common 10^-3-per-step rule of thumb does not by itself mean a layer that does "
        "not learn; a value falling by decades does.",
    ),
    FigureSpec(
        "learning_curves",
        "learning-curves",
        "Validation learning curves",
        "Validation accuracy (0-1) after each epoch, one panel per factor, one line per level (mean over every "
        "run at that level; band: 95% t-interval). No run drops out: after early stopping a run keeps its "
        "best validation accuracy (its restored weights), after divergence it counts at chance (0.1); the "
        "title gives how many were carried.",
    ),
    FigureSpec(
        "loss_curves",
        "learning-curves",
        "Training-loss curves",
        "Training loss (mean cross-entropy, log scale) per epoch, one panel per factor, one line per level "
        "(geometric mean over runs with a finite loss). Diverged runs have no finite loss after divergence; "
        "the title gives how many runs were left out from that epoch on.",
    ),
    FigureSpec(
        "leaderboard",
        "leaderboard",
        "Best and worst cells",
        "The best and worst grid cells by mean test accuracy (0-1) over seeds; the line is the 95% t-interval "
        "over seeds (absent with a single seed, n beside each cell). '#r' is the cell's rank among all cells.",
    ),
)
FIGURE_NAMES = tuple(spec.name for spec in FIGURES)


def rst_text(text: str) -> str:
    """Plain text safe in RST: '|' (substitution syntax) and '*' escaped."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*")


def caption_rst(spec: FigureSpec) -> str:
    """The RST caption of a figure for Snakemake's report (workflow/report/<name>.rst)."""
    return f"**{rst_text(spec.title)}.** {rst_text(spec.caption)}\n"


def study_settings(config: dict) -> dict:
    """The config values the report and the analysis show or depend on (a rule's tracked `params:`)."""
    grid, train, data, model = (
        config.get("grid", {}),
        config.get("train", {}),
        config.get("data", {}),
        config.get("model", {}),
    )
    subset = data.get("train_subset") or 60000
    optimizers = grid.get("optimizer", [])
    rates = train.get("learning_rate", {})
    return {
        "study": config.get("study", ""),
        "epochs": train.get("epochs"),
        "target_accuracy": train.get("target_accuracy"),
        "stall_accuracy": train.get("stall_accuracy"),
        "batch_size": grid.get("batch_size", train.get("batch_size")),
        "train_images": subset - int(data.get("validation_size", 0) or 0),
        "validation_images": data.get("validation_size"),
        "learning_rates": {o: rates.get(o) for o in optimizers if o in rates},
        "grid_learning_rate": grid.get("learning_rate", []),
        "lr_schedule": grid.get("lr_schedule", train.get("lr_schedule")),
        "depth": grid.get("depth", model.get("depth")),
        "width": grid.get("width", model.get("width")),
        "n_seeds": len(config.get("seeds", [])),
        "seeds": list(config.get("seeds", [])),
        "grid": {axis: list(values) for axis, values in grid.items()},
        "baselines": dict(config.get("report", {}).get("baselines", {})),
        "nuisance": list(config.get("report", {}).get("nuisance", [])),
        "backend": train.get("backend"),
        "results": config.get("results", "results"),
        "bn_momentum": catalog.params("regularizer", "batch_norm", config.get("techniques", {}).get("batch_norm"))[
            "momentum"
        ],
    }
