"""The report's lists, defined once: analysis table names, report sections, figures and their captions.

Light on purpose (no pandas, no matplotlib): the Snakefile's rules (analysis.smk, report.smk) import
it at parse time, and gradatlas.analysis, gradatlas.figures and gradatlas.report read the same lists.
"""

from __future__ import annotations

from typing import NamedTuple

from gradatlas import catalog

# Tables `rule analyze` writes to results/tables/ (parquet + csv); `nuisance_choices` only with
# report.nuisance axes. Their columns are documented in gradatlas.analysis.TABLE_COLUMNS.
ANALYSIS_TABLES = (
    "headline",
    "gradient_flow",
    "convergence",
    "main_effects",
    "paired_deltas",
    "interactions",
    "variance_decomposition",
    "status_counts",
    "leaderboard",
    "findings",
)
NUISANCE_TABLE = "nuisance_choices"

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
    return {"caption": f"../report/table_{name}.rst", "category": SECTION_TITLES[REPORT_TABLES[name]],
            "subcategory": "tables", "labels": {"table": name}}  # fmt: skip


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
    FigureSpec("status", "overview", "Run status per factor level",
               "Stacked horizontal bars: for each level of each factor, how many runs converged, stalled (best "
               "validation accuracy below train.stall_accuracy) or diverged (a non-finite loss stopped them). Units: "
               "runs. A long 'diverged' or 'stalled' segment flags a level that breaks training."),
    FigureSpec("flow_classes", "gradient-flow", "Gradient-health class per level",
               "For each level of each factor, the share of runs (0-1) in each gradient-health class (healthy, "
               "vanishing, exploding, saturated, dead, diverged: the rules are given above the tables), at "
               "initialization (left) and at the last probe (right); 'no value': runs without a verdict. Classes are "
               "counted apart, never averaged together. Each class and status has a fixed colour that no factor "
               "level uses."),
    FigureSpec("gradient_flow", "gradient-flow", "Error signal and weight gradient through the layers",
               "log10 of the RMS per-sample error signal δ (delta_rms) and of the weight-gradient norm ‖∂L/∂W‖ per "
               "Dense layer (1 = next to the input, last = output layer), at initialization and after epoch 1; one "
               "row per activation, one line per initializer; band: 95% t-interval of the mean over runs. A line "
               "that falls toward layer 1 is a vanishing gradient, one that rises is exploding, flat is healthy."),
    FigureSpec("convergence", "convergence", "Share of runs at the target by epoch",
               "Performance profile: the share of runs (0-1) whose validation accuracy has reached a threshold by "
               "epoch e, per factor level; runs that never reach it stay in the denominator (legend: reached/runs). "
               "Top row: the configured train.target_accuracy; bottom row: a target relative to the study's best "
               "run (a share of its best validation accuracy), which some runs always reach. Higher and further "
               "left is faster."),
    FigureSpec("atlas", "atlas", "Test accuracy atlas",
               "Heatmaps of test accuracy (fraction correct, 0-1; mean over seeds; colour bar on the right) with "
               "initializers as rows and activations as columns in the config's order, one panel per optimizer / "
               "regularizer combination (at most 16 panels; with more, the best-scoring ones); accuracy has the same colormap "
               "here and in the interactions. Cells marked "
               "'✕ k/n div.' had k of their n seeds diverge (their accuracy is that of the diverged model)."),
    FigureSpec("interactions", "atlas", "Two-way interactions, every factor pair",
               "Mean test accuracy (0-1, colour bar per panel) for each pair of levels of two factors, over every "
               "other factor and seed, for every pair of varying factors; rows and columns in the config's order, as "
               "in the atlas, and the atlas's colormap for accuracy. Rows that are not parallel show an interaction: a technique that helps only together "
               "with another."),
    FigureSpec("main_effects", "effects", "Main effects with 95% t-intervals",
               "Each panel: the mean of one outcome (row) per level of one factor (column), over all other factors "
               "and seeds; bars are 95% t-intervals (n beside each point). Outcomes: test accuracy (0-1), distance "
               "from healthy gradient flow at init (|log10 delta ratio|, 0 = no loss or gain), area under the "
               "validation-accuracy curve (0-1). One colour per level throughout the report."),
    FigureSpec("paired_deltas", "effects", "Paired effects against the baselines",
               "Forest plot: each row is one level compared with its factor's baseline (config report.baselines), "
               "paired on every other factor and the seed; the dot is the mean difference (level minus baseline), "
               "the line its 95% t-interval over pairs (n pairs in the table), both in neutral grey. A line that does not "
               "cross the dashed zero line is a clear effect. Units as in the x-axis labels."),
    FigureSpec("variance", "variance", "Variance decomposition (η²)",
               "For the key outcomes (test accuracy, distance from healthy flow at init and after training, area under "
               "the validation curve; every outcome is in the variance_decomposition table), the share of its variance "
               "across runs explained by each factor and each two-way "
               "interaction, from a two-way ANOVA with type-II sums of squares (η², 0-1). It describes this study's "
               "grid and budget only: the share depends on which levels were chosen."),
    FigureSpec("delta_heatmaps", "delta-time", "δ over layers and time",
               "For contrasting cells (the best and worst by test accuracy, the most vanishing and the most "
               "exploding at init), log10 delta_rms (colour, one common scale with a colour bar) per layer (rows, "
               "input side at the bottom) at each probe (columns, labelled: init, early steps, epoch ends). The "
               "colour scale is clipped at the 2nd-98th percentile: arrow ends on the colour bar and the title say "
               "so; hatched cells are probes where the network had diverged (no finite value)."),
    FigureSpec("delta_percentiles", "delta-time", "Distribution of the error signal per layer over training",
               "Each run's 5th, 50th and 95th percentiles of |per-sample error signal| over the probe batch and units "
               "(delta_p05/p50/p95, same scale as delta_rms; log axis), per layer (columns) and activation (rows) "
               "against optimizer steps (log scale; step 0 drawn at 1), pooled over runs by medians: line, the "
               "median over runs of the run medians; band, their 25th-75th percentile over runs; dotted, the "
               "medians over runs of the 5th and 95th percentiles. Runs with batch_norm are drawn apart (the "
               "batch_norm level's colour) from the others (grey), so a few extreme runs or BN do not set the "
               "picture."),
    FigureSpec("activation_percentiles", "activations", "Distribution of activations per layer over training",
               "Each run's 5th, 50th and 95th percentiles of each block's output over probe samples and units "
               "(act_p05/p50/p95), per layer (columns) and activation (rows) against optimizer steps (log scale; "
               "step 0 drawn at 1), pooled over runs by medians: line, the median over runs of the run medians; "
               "band, their 25th-75th percentile over runs; dotted, the medians over runs of the 5th and 95th "
               "percentiles. Runs with batch_norm (the batch_norm level's colour) are drawn apart from the others "
               "(grey). A panel whose values pass 100 uses a symlog axis (linear within ±1, log beyond). Lines "
               "collapsing onto the activation's flat region show saturation."),
    FigureSpec("saturation", "activations", "Saturated, inactive and dead units",
               "One row per activation. Left panels: for saturating activations (sigmoid, tanh, elu, selu, gelu) the "
               "share of (sample, unit) pairs whose derivative is below 5% of its maximum (saturated_frac); for ReLU "
               "and leaky ReLU the share with negative input (inactive_frac): different measures, never on one "
               "panel. Right panels: share of units whose derivative is ~0 for every probe sample (dead_frac). Each "
               "run's share is its mean over the hidden layers, as the gradient-health verdict reads it; lines are "
               "the median over runs per initializer (colour), bands the 25th-75th percentile, against optimizer "
               "steps (log scale). Dashed: the verdict's threshold (saturated at 20%, dead at 50%). Runs with "
               "batch_norm have panels of their own (pooled, BN hides the saturated cells); probes of diverged "
               "networks add no value."),
    FigureSpec("update_ratio", "activations", "Relative weight updates per layer",
               "Update ratio per step: ‖W(t) − W(previous probe)‖ / ‖W(previous probe)‖ divided by the optimizer "
               "steps between the two probes (1 to a few hundred), per Dense layer (colour) against optimizer steps "
               "(log scale), one panel per activation; median over runs (line), 25th-75th percentile (band), log "
               "axis. It is a lower bound on the mean single-step ratio (equal when the steps point the same way), "
               "so a value below the common 10^-3-per-step rule of thumb does not by itself mean a layer that does "
               "not learn; a value falling by decades does."),
    FigureSpec("learning_curves", "learning-curves", "Validation learning curves",
               "Validation accuracy (0-1) after each epoch, one panel per factor, one line per level (mean over every "
               "run at that level; band: 95% t-interval). No run drops out: after early stopping a run keeps its "
               "best validation accuracy (its restored weights), after divergence it counts at chance (0.1); the "
               "title gives how many were carried."),
    FigureSpec("loss_curves", "learning-curves", "Training-loss curves",
               "Training loss (mean cross-entropy, log scale) per epoch, one panel per factor, one line per level "
               "(geometric mean over runs with a finite loss). Diverged runs have no finite loss after divergence; "
               "the title gives how many runs were left out from that epoch on."),
    FigureSpec("leaderboard", "leaderboard", "Best and worst cells",
               "The best and worst grid cells by mean test accuracy (0-1) over seeds; the line is the 95% t-interval "
               "over seeds (absent with a single seed, n beside each cell). '#r' is the cell's rank among all cells."),
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
    grid, train, data, model = config.get("grid", {}), config.get("train", {}), config.get("data", {}), config.get("model", {})
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
        "bn_momentum": catalog.params("regularizer", "batch_norm", config.get("techniques", {}).get("batch_norm"))["momentum"],
    }
