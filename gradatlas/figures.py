"""The report's figures: one function each, tables in, a matplotlib Figure out.

Colour-blind-safe palette throughout (seaborn "colorblind", viridis/cividis for heatmaps); every
axis says what it shows and its unit. Large grids stay readable: facets are capped (`MAX_PANELS`)
and cell lists are top-k. `FIGURES` lists every figure of the report with its section, title and
caption; the HTML report and Snakemake's report (workflow/report/<name>.rst) both use them.
"""

from __future__ import annotations

from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

sns.set_theme(style="whitegrid", palette="colorblind", context="notebook")
PALETTE = sns.color_palette("colorblind")
STATUS_COLORS = {"converged": PALETTE[2], "stalled": PALETTE[1], "diverged": PALETTE[3], "unknown": PALETTE[7]}
MAX_PANELS = 16  # facets per figure; beyond it the figure shows the most informative ones and says so
MAX_LEVELS = 8  # lines per panel
FACTORS = ["initializer", "activation", "optimizer", "regularizer"]
KEY_OUTCOMES = {
    "test_accuracy": "test accuracy (0-1)",
    "log10_vanishing_ratio_init": "log10 vanishing ratio at init",
    "saturated_frac_epoch1": "saturated fraction, epoch 1 (0-1)",
    "dead_frac_epoch1": "dead-unit fraction, epoch 1 (0-1)",
}


class FigureSpec(NamedTuple):
    """One figure of the report: file stem, report section (a key of report.SECTIONS), title, caption
    (what it shows, how to read it, units)."""

    name: str
    section: str
    title: str
    caption: str


def _wrap_title(fig, text: str) -> None:
    fig.suptitle(text, fontsize=12)


def _empty(message: str, title: str):
    """A small figure that says why there is nothing to plot (axes still labelled)."""
    fig, ax = plt.subplots(figsize=(6, 1.6))
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("(no data)")
    ax.set_ylabel("")
    ax.set_title(title)
    return fig


def _varying(frame: pd.DataFrame, factors: list[str]) -> list[str]:
    return [f for f in factors if f in frame.columns and frame[f].nunique(dropna=False) > 1] or [
        f for f in factors if f in frame.columns
    ][:1]


def _grid(n: int, ncols: int, width: float, height: float, **kw):
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, **kw)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, axes


def _log10(values: pd.Series) -> pd.Series:
    values = pd.to_numeric(values, errors="coerce")
    return np.log10(values.where(values > 0))


# --- 1. overview ---------------------------------------------------------------------------------
def status_overview(status_counts: pd.DataFrame):
    """Stacked bars: runs per status (converged/stalled/diverged) for each level, one panel per factor."""
    if status_counts.empty:
        return _empty("no runs", "Run status")
    factors = list(dict.fromkeys(status_counts["factor"]))
    statuses = [c for c in status_counts.columns if c not in ("factor", "level", "n")]
    fig, axes = _grid(len(factors), 4, 3.6, 0.35 * status_counts.groupby("factor").size().max() + 1.6)
    for ax, factor in zip(axes.flat, factors):
        sub = status_counts[status_counts["factor"] == factor].set_index("level")[statuses]
        left = np.zeros(len(sub))
        for status in statuses:
            ax.barh(sub.index, sub[status], left=left, color=STATUS_COLORS.get(status, PALETTE[7]), label=status)
            left += sub[status].to_numpy()
        ax.set_title(factor)
        ax.set_xlabel("runs (count)")
        ax.set_ylabel("level")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    _wrap_title(fig, "Run status per factor level")
    fig.tight_layout()
    fig.legend(handles, labels, title="status", loc="upper left", bbox_to_anchor=(1.0, 0.95), fontsize=8)
    return fig


# --- 2. the atlas ---------------------------------------------------------------------------------
def accuracy_atlas(runs: pd.DataFrame, rows: str = "initializer", cols: str = "activation",
                   facets: tuple[str, str] = ("optimizer", "regularizer")):  # fmt: skip
    """Test accuracy (seed mean) over rows x cols, one panel per facets combination, diverged cells marked.

    At most MAX_PANELS panels: with more, the panels with the highest mean accuracy are shown.
    """
    facets = [f for f in facets if f in runs.columns]
    data = runs.assign(_diverged=runs["status"] == "diverged")
    cells = data.groupby([*facets, rows, cols], as_index=False, dropna=False).agg(
        test_accuracy=("test_accuracy", "mean"), diverged=("_diverged", "sum"), n=("_diverged", "size")
    )
    panel_means = cells.groupby(facets, dropna=False)["test_accuracy"].mean().sort_values(ascending=False)
    panels = list(panel_means.index[:MAX_PANELS]) if facets else [()]
    panels = [p if isinstance(p, tuple) else (p,) for p in panels]
    if facets:  # keep the config's order for the panels shown
        order = cells[facets].drop_duplicates().apply(tuple, axis=1).tolist()
        panels = [p for p in order if p in set(panels)]
    row_levels, col_levels = list(dict.fromkeys(runs[rows])), list(dict.fromkeys(runs[cols]))
    ncols = min(4, len(panels))
    fig, axes = _grid(len(panels), ncols, 0.9 * len(col_levels) + 1.6, 0.55 * len(row_levels) + 1.2)
    for ax, panel in zip(axes.flat, panels):
        sub = cells
        for f, v in zip(facets, panel):
            sub = sub[sub[f] == v]
        grid = sub.pivot(index=rows, columns=cols, values="test_accuracy").reindex(index=row_levels, columns=col_levels)
        sns.heatmap(grid, ax=ax, vmin=0, vmax=1, cmap="viridis", annot=True, fmt=".2f", cbar=False,
                    annot_kws={"fontsize": 8}, linewidths=0.5, linecolor="white")  # fmt: skip
        for _, row in sub[sub["diverged"] > 0].iterrows():
            x, y = col_levels.index(row[cols]) + 0.5, row_levels.index(row[rows]) + 0.82
            ax.text(x, y, f"✕ {int(row['diverged'])}/{int(row['n'])} div.", ha="center", va="center",
                    fontsize=6.5, color="white", fontweight="bold")  # fmt: skip
        ax.set_title(" / ".join(str(v) for v in panel) if panel else "all runs", fontsize=10)
        ax.set_xlabel(cols)
        ax.set_ylabel(rows)
    shown = f" ({len(panels)} of {len(panel_means)} panels, highest mean first)" if len(panel_means) > len(panels) else ""
    _wrap_title(fig, f"Test accuracy, mean over seeds (0-1), panels: {' / '.join(facets) or 'all'}{shown}")
    fig.tight_layout()
    return fig


def interaction_heatmaps(interactions: pd.DataFrame, outcome: str = "test_accuracy",
                         pairs: list[tuple[str, str]] | None = None):  # fmt: skip
    """Two-way tables of `outcome` (mean over all other factors and seeds), one heatmap per factor pair."""
    data = interactions[interactions["outcome"] == outcome]
    if data.empty:
        return _empty("fewer than two factors vary: no two-way tables", f"Interactions: {outcome}")
    available = list(dict.fromkeys(zip(data["factor_a"], data["factor_b"])))
    wanted = pairs or [("initializer", "activation"), ("activation", "regularizer"), ("initializer", "optimizer")]
    chosen = [p for p in available if p in wanted or p[::-1] in wanted] or available[:3]
    chosen += [p for p in available if p not in chosen][: max(0, 3 - len(chosen))]
    fig, axes = _grid(len(chosen), 3, 4.6, 3.6)
    is_fraction = data["mean"].between(0, 1).all()
    for ax, (a, b) in zip(axes.flat, chosen):
        sub = data[(data["factor_a"] == a) & (data["factor_b"] == b)]
        grid = sub.pivot(index="level_a", columns="level_b", values="mean").astype(float).reindex(
            index=list(dict.fromkeys(sub["level_a"])), columns=list(dict.fromkeys(sub["level_b"]))
        )
        sns.heatmap(grid, ax=ax, cmap="cividis", annot=True, fmt=".2f", annot_kws={"fontsize": 8},
                    vmin=0 if is_fraction else None, vmax=1 if is_fraction else None,
                    cbar_kws={"label": outcome})  # fmt: skip
        ax.set_xlabel(b)
        ax.set_ylabel(a)
        ax.set_title(f"{a} × {b}", fontsize=10)
    _wrap_title(fig, f"Two-way interactions: mean {outcome}")
    fig.tight_layout()
    return fig


# --- 3. main effects and paired deltas -----------------------------------------------------------
def main_effects_plot(effects: pd.DataFrame, outcomes: dict[str, str] | None = None):
    """Mean of each key outcome per factor level with its 95% bootstrap CI: rows = outcomes, cols = factors."""
    outcomes = {o: label for o, label in (outcomes or KEY_OUTCOMES).items() if o in set(effects["outcome"])}
    if not outcomes:
        return _empty("no outcomes to show", "Main effects")
    factors = list(dict.fromkeys(effects["factor"]))
    fig, axes = plt.subplots(len(outcomes), len(factors), figsize=(3.4 * len(factors), 2.5 * len(outcomes)),
                             squeeze=False, sharey="row")  # fmt: skip
    for i, (outcome, label) in enumerate(outcomes.items()):
        for j, factor in enumerate(factors):
            ax = axes[i, j]
            sub = effects[(effects["outcome"] == outcome) & (effects["factor"] == factor)]
            x = np.arange(len(sub))
            low = (sub["mean"] - sub["ci_low"]).clip(lower=0).fillna(0)
            high = (sub["ci_high"] - sub["mean"]).clip(lower=0).fillna(0)
            ax.errorbar(x, sub["mean"], yerr=[low, high], fmt="o", color=PALETTE[j % len(PALETTE)], capsize=4)
            ax.set_xticks(x, sub["level"], rotation=30, ha="right", fontsize=8)
            ax.set_xlabel(factor, fontsize=8 if i < len(outcomes) - 1 else None)
            if j == 0:
                ax.set_ylabel(label, fontsize=9)
            if i == 0:
                ax.set_title(factor)
    _wrap_title(fig, "Main effects: mean per level over all other factors and seeds (bars: 95% bootstrap CI)")
    fig.tight_layout()
    return fig


def paired_delta_forest(deltas: pd.DataFrame, outcomes: dict[str, str] | None = None):
    """Forest plot: each level minus its baseline, paired on the other factors and seed, with 95% CI."""
    outcomes = outcomes or {
        "test_accuracy": "Δ test accuracy (fraction)",
        "log10_vanishing_ratio_init": "Δ log10 vanishing ratio at init",
        "saturated_frac_epoch1": "Δ saturated fraction, epoch 1",
    }
    outcomes = {o: label for o, label in outcomes.items() if o in set(deltas["outcome"])}
    if not outcomes:
        return _empty("no baseline level found in the data: no paired deltas", "Paired deltas")
    first = deltas[deltas["outcome"] == next(iter(outcomes))]
    labels = [f"{r.factor}: {r.level} vs {r.baseline}" for r in first.itertuples()]
    fig, axes = plt.subplots(1, len(outcomes), figsize=(4.2 * len(outcomes) + 1.5, 0.32 * len(labels) + 1.6),
                             squeeze=False, sharey=True)  # fmt: skip
    factor_colors = {f: PALETTE[i % len(PALETTE)] for i, f in enumerate(dict.fromkeys(first["factor"]))}
    for ax, (outcome, label) in zip(axes.flat, outcomes.items()):
        sub = deltas[deltas["outcome"] == outcome].set_index(["factor", "level"]).reindex(
            list(zip(first["factor"], first["level"]))
        )
        y = np.arange(len(sub))[::-1]
        for yi, ((factor, _), row) in zip(y, sub.iterrows()):
            color = factor_colors[factor]
            if np.isfinite(row["ci_low"]):
                ax.plot([row["ci_low"], row["ci_high"]], [yi, yi], color=color, lw=2)
            ax.plot(row["mean_delta"], yi, "o", color=color)
        ax.axvline(0, color="0.3", lw=1, ls="--")
        ax.set_xlabel(label)
        ax.set_yticks(y, labels, fontsize=8)
        ax.set_title(outcome, fontsize=10)
    axes.flat[0].set_ylabel("level vs baseline")
    _wrap_title(fig, "Paired effects against the baseline (dot: mean difference, line: 95% CI; dashed: no effect)")
    fig.tight_layout()
    return fig


# --- 4. variance decomposition ---------------------------------------------------------------------
def variance_bars(variance: pd.DataFrame, outcomes: list[str] | None = None, top: int = 8):
    """η² of each main effect and two-way interaction (top terms), one panel per outcome."""
    effects = variance[variance["term"] != "Residual"].dropna(subset=["eta_sq"])
    outcomes = [o for o in (outcomes or list(dict.fromkeys(effects["outcome"]))) if o in set(effects["outcome"])]
    if not outcomes:
        return _empty("too few runs or levels for an ANOVA", "Variance decomposition")
    fig, axes = _grid(len(outcomes), 3, 4.4, 0.3 * top + 1.4)
    for ax, outcome in zip(axes.flat, outcomes):
        sub = effects[effects["outcome"] == outcome].nlargest(top, "eta_sq")
        terms = sub["term"].str.replace(r"C\((\w+)\)", r"\1", regex=True).str.replace(":", " × ")
        colors = [PALETTE[0] if ":" not in t else PALETTE[1] for t in sub["term"]]
        ax.barh(terms[::-1], sub["eta_sq"][::-1], color=colors[::-1])
        ax.set_xlim(0, 1)
        ax.set_xlabel("η² (share of variance explained)")
        ax.set_ylabel("term")
        ax.set_title(outcome, fontsize=10)
        ax.tick_params(axis="y", labelsize=8)
    _wrap_title(fig, "Which technique matters most: η² per term (blue: main effect, orange: interaction)")
    fig.tight_layout()
    return fig


# --- 5.-7. gradient health ------------------------------------------------------------------------
def _probe_at(diagnostics: pd.DataFrame, when: str) -> pd.DataFrame:
    """Rows of the probe at init (step 0) or at the end of epoch 1 (first 'epoch' probe of each run)."""
    if when == "init":
        return diagnostics[diagnostics["step"] == 0]
    epochs = diagnostics[diagnostics["phase"] == "epoch"]
    first = epochs.groupby(_run_keys(epochs), dropna=False)["step"].transform("min")
    return epochs[epochs["step"] == first]


DIAGNOSTIC_COLUMNS = {
    "step", "epoch", "phase", "layer", "layer_kind", "units", "grad_w_norm", "delta_norm", "delta_rms",
    "weight_norm", "update_ratio", "act_mean", "act_std", "saturated_frac", "dead_frac",
}  # fmt: skip


def _run_keys(frame: pd.DataFrame) -> list[str]:
    """The columns of a diagnostics table that identify its run (grid axes and seed)."""
    return [c for c in frame.columns if c not in DIAGNOSTIC_COLUMNS]


def gradient_flow(diagnostics: pd.DataFrame, rows: str = "activation", hue: str = "initializer"):
    """log10 delta_norm and grad_w_norm against layer depth at init and after epoch 1.

    One row of panels per activation, one line per initializer; the band is the 95% CI of the mean
    of log10 (a geometric mean) over runs: seeds, and the other factors' levels.
    """
    if diagnostics.empty:
        return _empty("no diagnostics", "Gradient flow")
    columns = [("delta_norm", "init"), ("delta_norm", "epoch 1"), ("grad_w_norm", "init"), ("grad_w_norm", "epoch 1")]
    row_levels = list(dict.fromkeys(diagnostics[rows]))[:MAX_PANELS // 2]
    hue_levels = list(dict.fromkeys(diagnostics[hue]))[:MAX_LEVELS]
    frames = {w: _probe_at(diagnostics, "init" if w == "init" else "epoch1") for w in ("init", "epoch 1")}
    fig, axes = plt.subplots(len(row_levels), 4, figsize=(14, 2.7 * len(row_levels) + 0.8), squeeze=False,
                             sharex=True)  # fmt: skip
    for i, level in enumerate(row_levels):
        for j, (metric, when) in enumerate(columns):
            ax = axes[i, j]
            sub = frames[when]
            sub = sub[(sub[rows] == level) & sub[hue].isin(hue_levels)].assign(value=lambda d: _log10(d[metric]))
            sns.lineplot(sub, x="layer", y="value", hue=hue, hue_order=hue_levels, errorbar=("ci", 95),
                         marker="o", ax=ax, legend=(i == 0 and j == 3), n_boot=200, seed=0)  # fmt: skip
            ax.set_title(f"{rows}={level}: {metric}, {when}", fontsize=9)
            ax.set_xlabel("layer (1 = input, last = output)", fontsize=9)
            ax.set_ylabel(f"log10 {metric}" if j in (0, 2) else "")
            layers = sorted(diagnostics["layer"].unique())
            ax.set_xticks(layers)
    if axes[0, 3].get_legend():
        sns.move_legend(axes[0, 3], "upper left", bbox_to_anchor=(1.02, 1), title=hue)
    _wrap_title(fig, "Gradient flow: error signal δ and weight gradient per layer (log10; band: 95% CI over runs)")
    fig.tight_layout()
    return fig


def contrasting_cells(runs: pd.DataFrame, factors: list[str], k: int = 2) -> list[tuple[str, dict]]:
    """Up to 2k+1 contrasting cells: the k best and k worst by test accuracy, plus the most vanishing one."""
    cells = runs.groupby(factors, as_index=False, dropna=False).agg(
        test_accuracy=("test_accuracy", "mean"),
        ratio=("vanishing_ratio_init", lambda s: _log10(s).mean()),
    )
    cells = cells.sort_values("test_accuracy", ascending=False, na_position="last", kind="stable")
    picked: list[tuple[str, dict]] = []

    def add(label, row):
        cell = {f: row[f] for f in factors}
        if all(c != cell for _, c in picked):
            picked.append((label, cell))

    for i, (_, row) in enumerate(cells.head(k).iterrows()):
        add(f"best #{i + 1} (acc {row['test_accuracy']:.2f})", row)
    for i, (_, row) in enumerate(cells.tail(k)[::-1].iterrows()):
        add(f"worst #{i + 1} (acc {row['test_accuracy']:.2f})", row)
    if cells["ratio"].notna().any():
        row = cells.loc[cells["ratio"].idxmin()]
        add(f"most vanishing (ratio 10^{row['ratio']:.1f})", row)
    return picked


def delta_heatmaps(diagnostics: pd.DataFrame, cells: list[tuple[str, dict]]):
    """Layer x time heatmap of log10 delta_norm (mean over seeds) for each contrasting cell."""
    if not cells or diagnostics.empty:
        return _empty("no cells to contrast", "δ over layers and time")
    all_values = _log10(diagnostics["delta_norm"])
    vmin, vmax = np.nanpercentile(all_values, [2, 98]) if all_values.notna().any() else (-6, 1)
    fig, axes = _grid(len(cells), min(3, len(cells)), 4.8, 3.4)
    for ax, (label, cell) in zip(axes.flat, cells):
        sub = diagnostics
        for f, v in cell.items():
            sub = sub[sub[f] == v]
        sub = sub.assign(value=_log10(sub["delta_norm"]))
        grid = sub.groupby(["layer", "epoch"])["value"].mean().unstack("epoch").sort_index(ascending=False)
        sns.heatmap(grid, ax=ax, cmap="viridis", vmin=vmin, vmax=vmax, cbar_kws={"label": "log10 delta_norm"})
        ax.set_xticks(np.arange(grid.shape[1]) + 0.5, [f"{e:.2g}" for e in grid.columns], rotation=90, fontsize=7)
        ax.set_xlabel("time (epochs; 0 = init)")
        ax.set_ylabel("layer (1 = input side)")
        ax.set_title(label + "\n" + ", ".join(str(v) for v in cell.values()), fontsize=8)
    _wrap_title(fig, "Error signal δ per layer over training, contrasting cells (log10; dark = vanished)")
    fig.tight_layout()
    return fig


def saturation_dead(diagnostics: pd.DataFrame, by: str = "activation"):
    """Saturated and dead-unit fraction per hidden layer over the epochs, one column per activation."""
    hidden = diagnostics[(diagnostics["layer_kind"] == "hidden")]
    if hidden.empty:
        return _empty("no hidden-layer diagnostics", "Saturation and dead units")
    levels = list(dict.fromkeys(hidden[by]))[:MAX_PANELS // 2]
    fig, axes = plt.subplots(2, len(levels), figsize=(3.6 * len(levels) + 1.5, 6), squeeze=False, sharey=True)
    layers = sorted(hidden["layer"].unique())
    palette = dict(zip(layers, sns.color_palette("colorblind", len(layers))))
    for j, level in enumerate(levels):
        sub = hidden[hidden[by] == level]
        for i, metric in enumerate(["saturated_frac", "dead_frac"]):
            ax = axes[i, j]
            sns.lineplot(sub, x="epoch", y=metric, hue="layer", palette=palette, errorbar=None, marker=".",
                         ax=ax, legend=(i == 0 and j == len(levels) - 1))  # fmt: skip
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(f"{by}={level}: {metric.replace('_frac', '')}", fontsize=9)
            ax.set_xlabel("epoch (0 = init)")
            ax.set_ylabel(f"{metric} (fraction)" if j == 0 else "")
    if axes[0, -1].get_legend():
        sns.move_legend(axes[0, -1], "upper left", bbox_to_anchor=(1.02, 1), title="layer")
    _wrap_title(fig, "Saturated (derivative < 5% of max) and dead units per hidden layer, mean over runs")
    fig.tight_layout()
    return fig


# --- 8.-9. training speed ------------------------------------------------------------------------
def learning_curves(curves: pd.DataFrame, factors: list[str] | None = None):
    """Validation accuracy per epoch, one panel per factor, one line per level, band = 95% CI over runs."""
    factors = _varying(curves, factors or FACTORS)
    fig, axes = _grid(len(factors), 4, 4.0, 3.4, sharey=True)
    for ax, factor in zip(axes.flat, factors):
        levels = list(dict.fromkeys(curves[factor]))[:MAX_LEVELS]
        sns.lineplot(curves[curves[factor].isin(levels)], x="epoch", y="val_accuracy", hue=factor, hue_order=levels,
                     errorbar=("ci", 95), marker="o", ax=ax, n_boot=200, seed=0)  # fmt: skip
        ax.set_xlabel("epoch (passes over the training set)")
        ax.set_ylabel("validation accuracy (0-1)")
        ax.set_title(f"by {factor}")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, title=factor, title_fontsize=8)
    _wrap_title(fig, "Learning curves (mean over runs; band: 95% CI)")
    fig.tight_layout()
    return fig


def epochs_to_threshold(curves: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Per run: the first epoch whose validation accuracy >= threshold (NaN: never) and the epochs it ran."""
    keys = [c for c in curves.columns if c not in
            {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"}]  # fmt: skip
    hit = curves.assign(_hit=curves["val_accuracy"] >= threshold, _e=curves["epoch"].where(curves["val_accuracy"] >= threshold))
    return hit.groupby(keys, dropna=False).agg(epochs=("_e", "min"), epochs_run=("epoch", "max")).reset_index()


def convergence_ecdf(curves: pd.DataFrame, thresholds: list[float], factors: list[str] | None = None):
    """Share of runs that reached each validation-accuracy threshold by epoch e, per factor level.

    A performance profile: misses are counted in the denominator, so a curve that ends below 1
    says how many runs never got there. One row per threshold, one panel per factor.
    """
    factors = _varying(curves, factors or FACTORS)
    fig, axes = plt.subplots(len(thresholds), len(factors), figsize=(4.0 * len(factors), 3.2 * len(thresholds)),
                             squeeze=False, sharey=True)  # fmt: skip
    max_epoch = int(curves["epoch"].max()) if len(curves) else 1
    epochs = np.arange(0, max_epoch + 1)
    for i, threshold in enumerate(thresholds):
        per_run = epochs_to_threshold(curves, threshold)
        for j, factor in enumerate(factors):
            ax = axes[i, j]
            for k, level in enumerate(list(dict.fromkeys(per_run[factor]))[:MAX_LEVELS]):
                reached = per_run.loc[per_run[factor] == level, "epochs"]
                share = [(reached <= e).sum() / len(reached) for e in epochs]
                # extend the last step half an epoch so a jump at the final epoch stays visible
                ax.step(np.append(epochs, max_epoch + 0.5), [*share, share[-1]], where="post", color=PALETTE[k % len(PALETTE)], lw=2,
                        label=f"{level} ({int(reached.notna().sum())}/{len(reached)})")  # fmt: skip
            ax.set_ylim(-0.03, 1.03)
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
            ax.set_xlabel("epoch")
            ax.set_ylabel(f"share of runs at val acc ≥ {threshold:g}" if j == 0 else "")
            ax.set_title(f"by {factor}, target {threshold:g}", fontsize=10)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, title="level (reached/runs)", title_fontsize=7)
    _wrap_title(fig, "Convergence speed: share of runs at the target validation accuracy by epoch (misses count)")
    fig.tight_layout()
    return fig


# --- 10. leaderboard ------------------------------------------------------------------------------
def leaderboard_plot(board: pd.DataFrame, outcome: str = "test_accuracy"):
    """Best and worst cells by mean `outcome` with 95% bootstrap CI over seeds."""
    sub = board[board["outcome"] == outcome] if "outcome" in board.columns else board
    if sub.empty:
        return _empty("no cells", "Leaderboard")
    axes_cols = [c for c in sub.columns
                 if c not in {"outcome", "rank_group", "rank", "mean", "ci_low", "ci_high", "n_seeds"}]  # fmt: skip
    labels = [f"#{int(r['rank'])} " + " / ".join(str(r[c]) for c in axes_cols) for _, r in sub.iterrows()]
    fig, ax = plt.subplots(figsize=(8, 0.36 * len(sub) + 1.4))
    y = np.arange(len(sub))[::-1]
    for yi, (_, row) in zip(y, sub.iterrows()):
        color = PALETTE[0] if row["rank_group"] == "best" else PALETTE[3]
        if np.isfinite(row["ci_low"]):
            ax.plot([row["ci_low"], row["ci_high"]], [yi, yi], color=color, lw=2)
        ax.plot(row["mean"], yi, "o", color=color)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel(f"{outcome} (mean over seeds; line: 95% CI)")
    ax.set_ylabel("cell (" + " / ".join(axes_cols) + ")")
    ax.set_title("Best (blue) and worst (red) cells")
    fig.tight_layout()
    return fig


# --- the registry ---------------------------------------------------------------------------------
FIGURES: list[FigureSpec] = [
    FigureSpec("status", "overview", "Run status per factor level",
               "Stacked horizontal bars: for each level of each factor, how many runs converged (green), stalled "
               "(orange: best validation accuracy below train.stall_accuracy) or diverged (red: a non-finite loss "
               "stopped them). Units: runs. A long red or orange segment flags a level that breaks training."),
    FigureSpec("atlas", "atlas", "Test accuracy atlas",
               "Heatmaps of test accuracy (fraction correct, 0-1; mean over seeds) with initializers as rows and "
               "activations as columns, one panel per optimizer / regularizer combination (at most 16 panels; with "
               "more, the best-scoring ones). Bright is good, dark is bad; cells marked '✕ k/n div.' had k of their "
               "n seeds diverge (their accuracy is that of the diverged model)."),
    FigureSpec("interactions", "atlas", "Two-way interactions",
               "Mean test accuracy (0-1) for each pair of levels of two factors (initializer × activation, "
               "activation × regularizer, initializer × optimizer), averaged over every other factor and seed. An "
               "interaction shows as rows that are not parallel: a technique that helps only together with another."),
    FigureSpec("main_effects", "effects", "Main effects with 95% CIs",
               "Each panel: the mean of one outcome (row) for each level of one factor (column), over all other "
               "factors and seeds; bars are 95% percentile-bootstrap confidence intervals. Outcomes: test accuracy "
               "(0-1), log10 vanishing ratio at init (δ at layer 1 over δ at the last hidden layer; 0 = no loss, "
               "-3 = a thousandfold shrink), saturated and dead fractions of hidden units after epoch 1 (0-1)."),
    FigureSpec("paired_deltas", "effects", "Paired effects against the baselines",
               "Forest plot: each row is one level compared with its factor's baseline (config report.baselines), "
               "paired on every other factor and the seed; the dot is the mean difference (level minus baseline), "
               "the line its 95% bootstrap CI over pairs. A line that does not cross the dashed zero line is a "
               "clear effect. Units as in the x-axis labels."),
    FigureSpec("variance", "variance", "Variance decomposition (η²)",
               "For each outcome, the share of its variance across runs explained by each factor (blue) and each "
               "two-way interaction (orange), from a two-way ANOVA with type-II sums of squares (η², 0-1). The "
               "longest bar is the technique that matters most for that outcome; what is left is seed noise and "
               "higher-order interactions."),
    FigureSpec("gradient_flow", "gradient-flow", "Gradient flow through the layers",
               "log10 of the error-signal norm δ (‖mean ∂L/∂z‖) and of the weight-gradient norm ‖∂L/∂W‖ per Dense "
               "layer (1 = next to the input, last = output layer), at initialization and after epoch 1; one row "
               "per activation, one line per initializer; the band is the 95% CI over runs (seeds and other "
               "factors). A line that falls toward layer 1 means vanishing gradients; a flat line is healthy "
               "(the Glorot and He picture)."),
    FigureSpec("delta_heatmaps", "delta-time", "δ over layers and time",
               "For contrasting cells (the best and worst by test accuracy, and the one with the most vanishing "
               "gradient at init), the log10 error-signal norm δ (colour, common scale) per layer (rows, input side "
               "at the bottom) at each probe (columns: init, early steps, then each epoch end, in epochs). Dark "
               "bottom rows mean the first layers receive almost no gradient."),
    FigureSpec("saturation", "saturation", "Saturated and dead units",
               "Top row: share of (sample, unit) pairs whose activation derivative is below 5% of its maximum "
               "(for the ReLU family: inactive units); bottom row: share of units whose derivative is ~0 for every "
               "probe sample (dead units). Per hidden layer (colour) over training time (epochs, 0 = init), mean "
               "over runs, one column per activation. Both are fractions 0-1; high values mean units that do not learn."),
    FigureSpec("learning_curves", "learning-curves", "Learning curves",
               "Validation accuracy (0-1) after each epoch, one panel per factor, one line per level (mean over "
               "every run at that level; band: 95% CI). Steeper and higher is better; a flat line near 0.1 is a "
               "network that does not learn."),
    FigureSpec("convergence", "convergence", "Epochs to target",
               "Performance profile: the share of runs (0-1) whose validation accuracy has reached the target by "
               "epoch e, per factor level; runs that never reach it stay in the denominator, so a curve that ends "
               "below 1 counts the misses (legend: reached/runs). Higher and further left is faster. A second "
               "row, when shown, uses a lower threshold reached by about half the runs, for studies too short to hit "
               "the configured target."),
    FigureSpec("leaderboard", "leaderboard", "Best and worst cells",
               "The best (blue) and worst (red) grid cells by mean test accuracy (0-1) over seeds; the line is the "
               "95% bootstrap CI over seeds (absent with a single seed). '#r' is the cell's rank among all cells."),
]
