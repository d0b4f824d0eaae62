"""The report's figures: one function each, tables in, a matplotlib Figure out.

Legible at page width: every figure is at most PAGE_WIDTH_IN wide (legends go below the axes, never
over them nor to the right), with text of at least MIN_FONT_PT, saved at report.DPI.

One colour system: health classes and statuses have fixed semantic colours (CLASS_COLORS,
STATUS_COLORS) that no factor level uses; a level's colour (`level_color`) depends only on its factor
and its name, so it is the same in every figure and every study; each heatmapped quantity has one
colormap (`quantity_cmap`). Runs are pooled robustly: medians with 25-75% bands over runs, log scales
where values span decades, batch-normalized runs apart from the others where BN changes the picture.
Heatmaps carry a colour bar; time axes are optimizer steps on a log scale or labelled probe
categories. Intervals of means are 95% t-intervals (`analysis.t_interval`). The registry of figures
(name, section, title, caption) is `gradatlas.registry.FIGURES`.
"""

from __future__ import annotations

import zlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from gradatlas import analysis, catalog, diagnostics, outcomes  # noqa: E402
from gradatlas.config import FACTORS, NAMED_AXES  # noqa: E402
from gradatlas.outcomes import FLOW_EXPLODING_ABOVE, FLOW_VANISHING_BELOW, HEALTH_CLASSES, STATUSES  # noqa: E402

PAGE_WIDTH_IN = 9.2
MIN_FONT_PT = 9
sns.set_theme(style="whitegrid", palette="colorblind", context="notebook")
plt.rcParams.update(
    {
        "font.size": 10,
        "axes.titlesize": 10,
        "axes.labelsize": 10,
        "xtick.labelsize": 9,
        "ytick.labelsize": 9,
        "legend.fontsize": 9,
        "legend.title_fontsize": 9,
        "figure.titlesize": 11,
    }
)
# semantic colours (Okabe-Ito hues): a class or status means the same colour in every figure
CLASS_COLORS = dict(zip(HEALTH_CLASSES, ("#009E73", "#56B4E9", "#D55E00", "#E69F00", "#666666", "#000000"))) | {
    "no value": "#D9D9D9"
}
STATUS_COLORS = dict(zip(STATUSES, (CLASS_COLORS["healthy"], "#F0E442", CLASS_COLORS["diverged"])))
# level colours: hues the semantic colours do not use (no green, sky blue, vermillion, orange, yellow,
# black or grey), as many as the largest catalog section, so a factor's levels never collide
LEVEL_PALETTE = (
    "#0072B2",
    "#CC79A7",
    "#6A3D9A",
    "#A6611A",
    "#E7298A",
    "#808000",
    "#1A1A6E",
    "#B39DDB",
    "#800000",
    "#4A7C8C",
)
NEUTRAL = ("0.25", "0.6")  # two greys for contrasts that are neither levels nor classes
# one colormap per heatmapped quantity; accuracy-like outcomes share one
QUANTITY_CMAPS = {"test_accuracy": "viridis", "val_auc": "viridis", "delta_rms": "magma", "delta_norm": "magma"}
OTHER_CMAP = "cividis"
MAX_PANELS = 16  # facets per figure; beyond it the figure shows the most informative ones and says so
MAX_LEVELS = 10  # lines per panel
MAX_ROWS = 6  # rows of per-activation panels
KEY_OUTCOMES = {
    "test_accuracy": "test accuracy (0-1)",
    "flow_distance_init": "|log10 delta ratio| at init",
    "val_auc": "area under val. curve (0-1)",
}
DIAGNOSTIC_COLUMNS = set(diagnostics.COLUMNS)  # the columns of diagnostics.parquet (the rest are run keys)
BN, NO_BN = "batch_norm", "no batch_norm"  # the two groups of `bn_groups`
_LEVELS: dict[str, list[str]] = {}


# --- one colour per level, per class, per status, per quantity --------------------------------------
def use_levels(order: dict[str, list[str]]) -> None:
    """Set each factor's level order (config order) for every figure: row/column and legend order, and
    the colours of axes outside the catalog."""
    _LEVELS.clear()
    _LEVELS.update({k: [analysis.level_label(v) for v in vs] for k, vs in order.items()})


def levels_of(factor: str, present) -> list[str]:
    """The levels of `factor` among `present`, in the report's order."""
    present = [analysis.level_label(v) for v in dict.fromkeys(present)]
    known = [v for v in _LEVELS.get(factor, []) if v in present]
    return known + [v for v in present if v not in known]


def _catalog_offsets() -> dict[str, int]:
    """Where each catalog axis starts in LEVEL_PALETTE: after the previous sections, so the first
    initializer, activation, optimizer and regularizer do not all share one colour."""
    offsets, start = {}, 0
    for axis, section in NAMED_AXES.items():
        offsets[axis] = start
        start += len(catalog.CATALOG[section])
    return offsets


_CATALOG_OFFSETS = _catalog_offsets()


def level_color(factor: str, level) -> str:
    """The colour of a level: from its place in the catalog (catalog axes), else in the config's order
    (`use_levels`), else a hash of its name; never from the levels a figure happens to show."""
    level = analysis.level_label(level)
    if factor in NAMED_AXES:
        order, offset = list(catalog.CATALOG[NAMED_AXES[factor]]), _CATALOG_OFFSETS[factor]
    else:
        order, offset = _LEVELS.get(factor, []), 0
    index = order.index(level) if level in order else zlib.crc32(f"{factor}={level}".encode())
    return LEVEL_PALETTE[(offset + index) % len(LEVEL_PALETTE)]


def level_palette(factor: str, levels) -> dict:
    return {lv: level_color(factor, lv) for lv in levels}


def quantity_cmap(quantity: str) -> str:
    """The colormap of a heatmapped quantity, the same in every figure."""
    return QUANTITY_CMAPS.get(quantity, OTHER_CMAP)


# --- robust pooling over runs (pure: what the figures plot) -------------------------------------------
def bn_groups(frame: pd.DataFrame) -> pd.Series:
    """Per row: BN or NO_BN (regularizer batch_norm or not); all NO_BN without a regularizer axis.
    Batch normalization rescales every layer's input, so pooling it with the rest hides both."""
    if "regularizer" not in frame.columns:
        return pd.Series(NO_BN, index=frame.index)
    return frame["regularizer"].map(analysis.level_label).eq(BN).map({True: BN, False: NO_BN})


def run_quantiles(frame: pd.DataFrame, value: str, by: list[str]) -> pd.DataFrame:
    """Per `by` group: median, 25th and 75th percentile of `value` over its rows (one row per run)
    and n (finite values); a few extreme runs move neither the line nor the band much."""
    values = frame.assign(_v=pd.to_numeric(frame[value], errors="coerce").astype(float))
    values = values[np.isfinite(values["_v"])]
    grouped = values.groupby(by, dropna=False)["_v"]
    return pd.DataFrame(
        {"median": grouped.median(), "q25": grouped.quantile(0.25), "q75": grouped.quantile(0.75), "n": grouped.size()}
    ).reset_index()


def spans_decades(values, decades: float = 2.0) -> bool:
    """Whether the finite |values| reach `decades` orders of magnitude beyond 1 (a linear axis would
    flatten everything else)."""
    values = np.abs(pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float))
    values = values[np.isfinite(values)]
    return bool(len(values)) and float(values.max()) >= 10.0**decades


def per_step_update(diagnostics: pd.DataFrame) -> pd.Series:
    """update_ratio (‖W(t) − W(previous probe)‖ / ‖W(previous probe)‖) divided by the steps between
    the two probes: a lower bound on the mean per-step update ratio (equal when the steps align)."""
    keys = [*_run_keys(diagnostics), "layer"]
    gap = diagnostics.sort_values("step").groupby(keys, dropna=False)["step"].diff()
    return pd.to_numeric(diagnostics["update_ratio"], errors="coerce") / gap.reindex(diagnostics.index).where(gap > 0)


# --- helpers --------------------------------------------------------------------------------------
def _suptitle(fig, text: str) -> None:
    fig.suptitle(text, fontsize=11)


def _empty(message: str, title: str):
    """A small figure that says why there is nothing to plot (axes still labelled)."""
    fig, ax = plt.subplots(figsize=(6, 1.6))
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("(no data)")
    ax.set_title(title)
    return fig


def _varying(frame: pd.DataFrame, factors: list[str]) -> list[str]:
    return [f for f in factors if f in frame.columns and frame[f].nunique(dropna=False) > 1] or [
        f for f in factors if f in frame.columns
    ][:1]


def _grid(n: int, ncols: int, width: float, height: float, **kw):
    """n panels in rows of at most `ncols`, the whole figure no wider than PAGE_WIDTH_IN."""
    ncols = max(1, min(ncols, n))
    width = min(width, PAGE_WIDTH_IN / ncols)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, **kw)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, axes


def _legend_below(fig, handles, labels, title: str | None = None, ncol: int = 4) -> None:
    if handles:
        fig.legend(
            handles,
            labels,
            title=title,
            loc="upper center",
            bbox_to_anchor=(0.5, 0.0),
            ncol=max(1, min(ncol, len(labels))),
            frameon=False,
        )


def _legend_under(ax, title: str, ncol: int = 3) -> None:
    """The panel's legend below its x-axis label, so it never covers a curve."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(
            handles,
            labels,
            title=title,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.2),
            ncol=max(1, min(ncol, len(labels))),
            frameon=False,
        )


def _log10(values) -> pd.Series:
    values = pd.to_numeric(pd.Series(values), errors="coerce").astype(float)
    return np.log10(values.where(values > 0))


def _t_band(values):
    """seaborn errorbar: the 95% t-interval of the mean."""
    return analysis.t_interval(values)


def _run_keys(frame: pd.DataFrame) -> list[str]:
    """The columns of a diagnostics table that identify its run (grid axes and seed)."""
    return [c for c in frame.columns if c not in DIAGNOSTIC_COLUMNS]


def _steps_axis(ax) -> None:
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("optimizer steps + 1 (log)")


def _panel_layers(diagnostics: pd.DataFrame) -> list[int]:
    """Up to four layers to show: first, middle and last hidden, and the output layer."""
    hidden = sorted(diagnostics.loc[diagnostics["layer_kind"] == "hidden", "layer"].unique())
    output = sorted(diagnostics.loc[diagnostics["layer_kind"] == "output", "layer"].unique())
    picked = list(
        dict.fromkeys([*hidden[:1], *hidden[len(hidden) // 2 : len(hidden) // 2 + 1], *hidden[-1:], *output[-1:]])
    )
    return [int(x) for x in picked]


def _needs(frame: pd.DataFrame, columns, title: str):
    missing = [c for c in columns if c not in frame.columns]
    if frame.empty:
        return _empty("no diagnostics", title)
    if missing:
        return _empty(f"the diagnostics lack {', '.join(missing)} (recorded by the current engine)", title)
    return None


# --- overview ---------------------------------------------------------------------------------------
def status_overview(status_counts: pd.DataFrame):
    """Stacked bars: runs per status for each level, one panel per factor."""
    if status_counts.empty:
        return _empty("no runs", "Run status")
    factors = list(dict.fromkeys(status_counts["factor"]))
    statuses = [c for c in status_counts.columns if c not in ("factor", "level", "n")]
    fig, axes = _grid(len(factors), 2, 4.7, 0.32 * status_counts.groupby("factor").size().max() + 1.3)
    for ax, factor in zip(axes.flat, factors):
        sub = status_counts[status_counts["factor"] == factor].set_index("level")
        sub = sub.loc[levels_of(factor, sub.index)[::-1], statuses]
        left = np.zeros(len(sub))
        for status in statuses:
            ax.barh(
                sub.index,
                sub[status],
                left=left,
                color=STATUS_COLORS.get(status, CLASS_COLORS["no value"]),
                label=status,
            )
            left += sub[status].to_numpy()
        ax.set_title(factor)
        ax.set_xlabel("runs (count)")
        ax.set_ylabel("level")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    _suptitle(fig, "Run status per factor level")
    fig.tight_layout()
    _legend_below(fig, handles, labels, "status")
    return fig


# --- gradient flow ----------------------------------------------------------------------------------
def flow_classes(flow: pd.DataFrame):
    """Share of runs in each gradient-health class per level, at init and at the last probe: every
    class of HEALTH_CLASSES that the table has a share_<class> column for."""
    if flow.empty:
        return _empty("no delta ratios (vanishing_ratio_init / _final) in the runs table", "Gradient-health classes")
    factors = list(dict.fromkeys(flow["factor"]))
    whens = list(dict.fromkeys(flow["when"]))
    classes = [c for c in HEALTH_CLASSES if f"share_{c}" in flow.columns]
    height = 0.3 * flow.groupby(["when", "factor"]).size().max() + 1.0
    fig, axes = plt.subplots(len(factors), len(whens), figsize=(PAGE_WIDTH_IN, height * len(factors)), squeeze=False)
    for i, factor in enumerate(factors):
        for j, when in enumerate(whens):
            ax = axes[i, j]
            sub = flow[(flow["factor"] == factor) & (flow["when"] == when)].set_index("level")
            if sub.empty:  # at init: no level of this factor can act before the first update
                ax.text(
                    0.5,
                    0.5,
                    f"{factor}: no effect possible at initialization\n(its levels start from the same networks)",
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                    fontsize=9,
                )
                ax.set_axis_off()
                continue
            sub = sub.loc[levels_of(factor, sub.index)[::-1]]
            left = np.zeros(len(sub))
            for cls in classes:
                share = sub[f"share_{cls}"].fillna(0).to_numpy()
                ax.barh(sub.index, share, left=left, color=CLASS_COLORS[cls], label=cls)
                left += share
            ax.barh(sub.index, 1 - left, left=left, color=CLASS_COLORS["no value"], label="no value")
            for y, (level, r) in enumerate(sub.iterrows()):
                ax.text(1.01, y, f"n={int(r['n'])}", va="center", fontsize=9)
            ax.set_xlim(0, 1)
            ax.set_title(f"{factor}, {'at init' if when == 'init' else 'after training'}")
            ax.set_xlabel("share of distinct networks (0-1)" if when == "init" else "share of runs (0-1)")
            ax.set_ylabel("level" if j == 0 else "")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    _suptitle(fig, "Gradient-health class of the runs, per level")
    fig.tight_layout()
    _legend_below(fig, handles, labels, "class", ncol=len(labels))
    return fig


def _probe_at(diagnostics: pd.DataFrame, when: str) -> pd.DataFrame:
    """Rows of the probe at init (step 0) or at the end of epoch 1 (first 'epoch' probe of each run)."""
    if when == "init":
        return diagnostics[diagnostics["step"] == 0]
    epochs = diagnostics[diagnostics["phase"] == "epoch"]
    first = epochs.groupby(_run_keys(epochs), dropna=False)["step"].transform("min")
    return epochs[epochs["step"] == first]


def _delta_column(diagnostics: pd.DataFrame) -> str:
    return (
        "delta_rms" if "delta_rms" in diagnostics.columns and diagnostics["delta_rms"].notna().any() else "delta_norm"
    )


def gradient_flow(diagnostics: pd.DataFrame, rows: str = "activation", hue: str = "initializer"):
    """log10 delta_rms and grad_w_norm against layer at init and after epoch 1, one row per activation,
    one line per initializer; band: 95% t-interval of the mean over runs."""
    if diagnostics.empty:
        return _empty("no diagnostics", "Gradient flow")
    delta = _delta_column(diagnostics)
    columns = [(delta, "init"), (delta, "epoch 1"), ("grad_w_norm", "init"), ("grad_w_norm", "epoch 1")]
    row_levels = levels_of(rows, diagnostics[rows])[:MAX_ROWS]
    hue_levels = levels_of(hue, diagnostics[hue])[:MAX_LEVELS]
    frames = {w: _probe_at(diagnostics, "init" if w == "init" else "epoch1") for w in ("init", "epoch 1")}
    fig, axes = plt.subplots(
        len(row_levels), 4, figsize=(PAGE_WIDTH_IN, 2.3 * len(row_levels) + 0.8), squeeze=False, sharex=True
    )
    layers = sorted(diagnostics["layer"].unique())
    for i, level in enumerate(row_levels):
        for j, (metric, when) in enumerate(columns):
            ax = axes[i, j]
            sub = frames[when]
            sub = sub[(sub[rows] == level) & sub[hue].isin(hue_levels)].assign(
                value=lambda d: _log10(d[metric]).to_numpy()
            )
            sns.lineplot(
                sub,
                x="layer",
                y="value",
                hue=hue,
                hue_order=hue_levels,
                palette=level_palette(hue, hue_levels),
                errorbar=_t_band,
                marker="o",
                ax=ax,
                legend=False,
            )
            ax.set_title(f"{level}: {'δ' if metric == delta else '∇W'}, {when}")
            ax.set_xlabel("layer (1 = input)" if i == len(row_levels) - 1 else "")
            ax.set_ylabel(f"log10 {metric}" if j in (0, 2) else "")
            ax.set_xticks(layers)
    handles = [plt.Line2D([], [], color=level_color(hue, lv), marker="o") for lv in hue_levels]
    _suptitle(fig, f"Gradient flow: log10 {delta} and weight-gradient norm per layer, rows: {rows}")
    fig.tight_layout()
    _legend_below(fig, handles, hue_levels, hue)
    return fig


# --- convergence ------------------------------------------------------------------------------------
def epochs_to_threshold(curves: pd.DataFrame, threshold: float, axes) -> pd.DataFrame:
    """Per run (its grid `axes` and seed): the first epoch whose validation accuracy >= threshold (NaN:
    never) and the epochs it ran. The run keys come from the axes: a grid axis may share its name with
    a history column (learning_rate)."""
    keys = analysis.run_keys(curves, axes)
    hit = curves.assign(_e=curves["epoch"].where(curves["val_accuracy"] >= threshold))
    return hit.groupby(keys, dropna=False).agg(epochs=("_e", "min"), epochs_run=("epoch", "max")).reset_index()


def convergence_ecdf(curves: pd.DataFrame, thresholds, factors: list[str] | None = None):
    """Share of runs at each validation-accuracy threshold by epoch, per factor level (misses count).

    `thresholds`: (label, value) pairs, or plain values; `factors`: the grid axes (default FACTORS),
    which identify a run with its seed.
    """
    if curves is None or curves.empty:
        return _empty("no learning curves", "Convergence")
    thresholds = [t if isinstance(t, tuple) else (f"target {t:g}", t) for t in thresholds]
    grid_axes = factors or FACTORS
    factors = _varying(curves, grid_axes)
    panels = [(label, value, f) for label, value in thresholds for f in factors]
    fig, axes = _grid(len(panels), 2, 4.75, 3.9, sharey=True)
    max_epoch = int(curves["epoch"].max())
    epochs = np.arange(0, max_epoch + 1)
    per_threshold = {value: epochs_to_threshold(curves, value, grid_axes) for _, value, _ in panels}
    for ax, (label, value, factor) in zip(axes.flat, panels):
        per_run = per_threshold[value]
        for level in levels_of(factor, per_run[factor])[:MAX_LEVELS]:
            reached = per_run.loc[per_run[factor] == level, "epochs"]
            share = [(reached <= e).sum() / len(reached) for e in epochs]
            ax.step(
                np.append(epochs, max_epoch + 0.5),
                [*share, share[-1]],
                where="post",
                lw=2,
                color=level_color(factor, level),
                label=f"{level} ({int(reached.notna().sum())}/{len(reached)})",
            )
        ax.set_ylim(-0.03, 1.03)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("share of runs reached")
        ax.set_title(f"by {factor}: {label}")
        _legend_under(ax, "level (reached/runs)", ncol=2)
    _suptitle(fig, "Convergence: share of runs at the threshold by epoch (misses stay in the denominator)")
    fig.tight_layout()
    return fig


# --- atlas and interactions ---------------------------------------------------------------------------
def accuracy_atlas(
    runs: pd.DataFrame,
    rows: str = "initializer",
    cols: str = "activation",
    facets: tuple[str, ...] = ("optimizer", "regularizer"),
):
    """Test accuracy (seed mean) over rows x cols, one panel per facets combination, diverged cells
    marked, one colour bar. At most MAX_PANELS panels (with more, the highest mean accuracy)."""
    facets = [f for f in facets if f in runs.columns]
    data = runs.assign(_diverged=runs["status"] == "diverged")
    cells = data.groupby([*facets, rows, cols], as_index=False, dropna=False).agg(
        test_accuracy=("test_accuracy", "mean"), diverged=("_diverged", "sum"), n=("_diverged", "size")
    )
    panel_means = (
        cells.groupby(facets, dropna=False)["test_accuracy"].mean().sort_values(ascending=False)
        if facets
        else pd.Series([0.0])
    )
    panels = [p if isinstance(p, tuple) else (p,) for p in panel_means.index[:MAX_PANELS]] if facets else [()]
    if facets:  # the report's level order for the panels shown
        order = cells[facets].drop_duplicates().apply(tuple, axis=1).tolist()
        rank = {f: levels_of(f, cells[f]) for f in facets}
        order.sort(key=lambda p: tuple(rank[f].index(analysis.level_label(v)) for f, v in zip(facets, p)))
        panels = [p for p in order if p in set(panels)]
    row_levels, col_levels = levels_of(rows, runs[rows]), levels_of(cols, runs[cols])
    panel_w = 0.62 * len(col_levels) + 1.7
    fig, axes = _grid(len(panels), 3, panel_w, 0.42 * len(row_levels) + 1.5)
    for ax, panel in zip(axes.flat, panels):
        sub = cells
        for f, v in zip(facets, panel):
            sub = sub[sub[f] == v]
        grid = sub.pivot(index=rows, columns=cols, values="test_accuracy").reindex(index=row_levels, columns=col_levels)
        sns.heatmap(
            grid.astype(float),
            ax=ax,
            vmin=0,
            vmax=1,
            cmap=quantity_cmap("test_accuracy"),
            annot=True,
            fmt=".2f",
            cbar=False,
            annot_kws={"fontsize": 9},
            linewidths=0.5,
            linecolor="white",
        )
        for _, row in sub[sub["diverged"] > 0].iterrows():
            x, y = col_levels.index(row[cols]) + 0.5, row_levels.index(row[rows]) + 0.85
            ax.text(
                x,
                y,
                f"✕{int(row['diverged'])}/{int(row['n'])}",
                ha="center",
                va="center",
                fontsize=9,
                color="white",
                fontweight="bold",
            )
        ax.set_title(" / ".join(str(v) for v in panel) if panel else "all runs")
        ax.set_xlabel(cols)
        ax.set_ylabel(rows)
        ax.tick_params(axis="x", rotation=45)
        ax.tick_params(axis="y", rotation=0)
    fig.tight_layout(rect=(0, 0, 0.93, 0.97))
    cax = fig.add_axes((0.945, 0.2, 0.015, 0.6))
    fig.colorbar(
        plt.cm.ScalarMappable(norm=plt.Normalize(0, 1), cmap=quantity_cmap("test_accuracy")),
        cax=cax,
        label="test accuracy (0-1)",
    )
    shown = f" ({len(panels)} of {len(panel_means)} panels, best first)" if len(panel_means) > len(panels) else ""
    _suptitle(
        fig,
        f"Test accuracy (mean over seeds); ✕k/n: k of n seeds diverged; panels {' / '.join(facets) or 'all'}{shown}",
    )
    return fig


def interaction_heatmaps(interactions: pd.DataFrame, outcome: str = "test_accuracy"):
    """Two-way tables of `outcome` for every factor pair, rows and columns in the report's level order."""
    data = interactions[interactions["outcome"] == outcome]
    if data.empty:
        return _empty("fewer than two factors vary: no two-way tables", f"Interactions: {outcome}")
    pairs = list(dict.fromkeys(zip(data["factor_a"], data["factor_b"])))
    fig, axes = _grid(len(pairs), 2, 4.75, 3.4)
    is_fraction = data["mean"].dropna().between(0, 1).all()
    for ax, (a, b) in zip(axes.flat, pairs):
        sub = data[(data["factor_a"] == a) & (data["factor_b"] == b)]
        grid = (
            sub.pivot(index="level_a", columns="level_b", values="mean")
            .astype(float)
            .reindex(index=levels_of(a, sub["level_a"]), columns=levels_of(b, sub["level_b"]))
        )
        sns.heatmap(
            grid,
            ax=ax,
            cmap=quantity_cmap(outcome),
            annot=grid.size <= 64,
            fmt=".2f",
            annot_kws={"fontsize": 9},
            vmin=0 if is_fraction else None,
            vmax=1 if is_fraction else None,
            cbar_kws={"label": "mean " + outcome.replace("_", " ")},
        )
        ax.set_xlabel(b)
        ax.set_ylabel(a)
        ax.set_title(f"{a} × {b}")
        ax.tick_params(axis="x", rotation=45)
        ax.tick_params(axis="y", rotation=0)
    _suptitle(fig, f"Two-way interactions, every factor pair: mean {outcome.replace('_', ' ')}")
    fig.tight_layout()
    return fig


# --- effects ------------------------------------------------------------------------------------------
def main_effects_plot(effects: pd.DataFrame, outcomes: dict[str, str] | None = None):
    """Mean of each key outcome per level with its 95% t-interval and n: rows = factors, cols = outcomes."""
    outcomes = {o: label for o, label in (outcomes or KEY_OUTCOMES).items() if o in set(effects["outcome"])}
    if not outcomes:
        return _empty("no outcomes to show", "Main effects")
    factors = list(dict.fromkeys(effects["factor"]))
    fig, axes = plt.subplots(
        len(factors), len(outcomes), figsize=(PAGE_WIDTH_IN, 2.3 * len(factors) + 0.8), squeeze=False
    )
    for i, factor in enumerate(factors):
        for j, (outcome, label) in enumerate(outcomes.items()):
            ax = axes[i, j]
            sub = effects[(effects["outcome"] == outcome) & (effects["factor"] == factor)].set_index("level")
            sub = sub.loc[levels_of(factor, sub.index)]
            y = np.arange(len(sub))[::-1]
            for yi, (level, r) in zip(y, sub.iterrows()):
                color = level_color(factor, level)
                if np.isfinite(r["ci_low"]):
                    ax.plot([r["ci_low"], r["ci_high"]], [yi, yi], color=color, lw=2)
                ax.plot(r["mean"], yi, "o", color=color)
                ax.annotate(
                    f"n={int(r['n'])}",
                    (1.0, yi),
                    xycoords=("axes fraction", "data"),
                    xytext=(3, 0),
                    textcoords="offset points",
                    va="center",
                    fontsize=9,
                )
            ax.set_yticks(y, sub.index if j == 0 else [""] * len(sub))
            ax.set_ylabel(factor if j == 0 else "")
            ax.set_xlabel(label)
    _suptitle(fig, "Main effects: mean per level over the other factors and seeds (line: 95% t-interval)")
    fig.tight_layout()
    return fig


def paired_delta_forest(deltas: pd.DataFrame, outcomes: dict[str, str] | None = None):
    """Forest plot: each level minus its baseline, paired on the other factors and seed, 95% t-interval."""
    outcomes = outcomes or {
        "test_accuracy": "Δ test accuracy",
        "flow_distance_init": "Δ |log10 delta ratio| at init",
        "val_auc": "Δ area under val. curve",
    }
    outcomes = {o: label for o, label in outcomes.items() if o in set(deltas["outcome"])}
    if not outcomes:
        return _empty("no baseline level found in the data: no paired deltas", "Paired deltas")
    first = deltas[deltas["outcome"] == next(iter(outcomes))]
    labels = [f"{r.factor}: {r.level} vs {r.baseline}" for r in first.itertuples()]
    fig, axes = plt.subplots(
        1, len(outcomes), figsize=(PAGE_WIDTH_IN, 0.3 * len(labels) + 1.6), squeeze=False, sharey=True
    )
    for ax, (outcome, label) in zip(axes.flat, outcomes.items()):
        sub = (
            deltas[deltas["outcome"] == outcome]
            .set_index(["factor", "level"])
            .reindex(list(zip(first["factor"], first["level"])))
        )
        y = np.arange(len(sub))[::-1]
        for yi, (_, row) in zip(y, sub.iterrows()):  # neutral: a colour would read as good or bad
            if np.isfinite(row["ci_low"]):
                ax.plot([row["ci_low"], row["ci_high"]], [yi, yi], color=NEUTRAL[0], lw=2)
            ax.plot(row["mean_delta"], yi, "o", color=NEUTRAL[0])
        ax.axvline(0, color="0.3", lw=1, ls="--")
        ax.set_xlabel(label)
        ax.set_yticks(y, labels)
    axes.flat[0].set_ylabel("level vs baseline")
    _suptitle(fig, "Paired effects against the baseline (dot: mean difference, line: 95% t-interval)")
    fig.tight_layout()
    return fig


def variance_bars(variance: pd.DataFrame, outcomes: list[str] | None = None, top: int = 8):
    """η² of each main effect and two-way interaction (top terms), one panel per outcome."""
    effects = variance[variance["term"] != "Residual"].dropna(subset=["eta_sq"])
    default = [*KEY_OUTCOMES, "flow_distance_final"]  # the rest are in the variance_decomposition table
    outcomes = [o for o in (outcomes or default) if o in set(effects["outcome"])]
    if not outcomes:
        return _empty("too few runs or levels for an ANOVA", "Variance decomposition")
    fig, axes = _grid(len(outcomes), 2, 4.75, 0.3 * top + 1.4)
    for ax, outcome in zip(axes.flat, outcomes):
        sub = effects[effects["outcome"] == outcome].nlargest(top, "eta_sq")
        terms = sub["term"].str.replace(r"C\((\w+)\)", r"\1", regex=True).str.replace(":", " × ")
        colors = [NEUTRAL[0] if ":" not in t else NEUTRAL[1] for t in sub["term"]]
        ax.barh(terms[::-1], sub["eta_sq"][::-1], color=colors[::-1])
        ax.set_xlim(0, 1)
        ax.set_xlabel("η² (share of variance)")
        ax.set_ylabel("term")
        ax.set_title(outcome.replace("_", " "))
    handles = [Patch(color=NEUTRAL[0]), Patch(color=NEUTRAL[1])]
    _suptitle(fig, "Which technique matters most in this study: η² per term")
    fig.tight_layout()
    _legend_below(fig, handles, ["main effect", "two-way interaction"])
    return fig


# --- error signal over layers and time --------------------------------------------------------------
def contrasting_cells(runs: pd.DataFrame, factors: list[str], k: int = 2) -> list[tuple[str, dict]]:
    """Up to 2k+2 contrasting cells: the k best and k worst by test accuracy, the most vanishing and the
    most exploding at init (each direction on its own)."""
    data = analysis.outcome_frame(runs)
    agg = {"test_accuracy": ("test_accuracy", "mean")}
    if "log10_vanishing_ratio_init" in data:
        agg["ratio"] = ("log10_vanishing_ratio_init", "mean")
    cells = data.groupby(factors, as_index=False, dropna=False).agg(**agg)
    cells = cells.sort_values("test_accuracy", ascending=False, na_position="last", kind="stable")
    picked: list[tuple[str, dict]] = []

    def add(label, row):
        cell = {f: row[f] for f in factors}
        for i, (old, c) in enumerate(picked):
            if c == cell:
                picked[i] = (f"{old}; {label}", c)
                return
        picked.append((label, cell))

    for i, (_, row) in enumerate(cells.head(k).iterrows()):
        add(f"best #{i + 1} (acc {row['test_accuracy']:.2f})", row)
    for i, (_, row) in enumerate(cells.tail(k)[::-1].iterrows()):
        add(f"worst #{i + 1} (acc {row['test_accuracy']:.2f})", row)
    if "ratio" in cells and cells["ratio"].notna().any():
        low = cells.loc[cells["ratio"].idxmin()]
        if low["ratio"] < np.log10(FLOW_VANISHING_BELOW):
            add(f"most vanishing (10^{low['ratio']:.1f})", low)
        high = cells.loc[cells["ratio"].idxmax()]
        if high["ratio"] > np.log10(FLOW_EXPLODING_ABOVE):
            add(f"most exploding (10^{high['ratio']:+.1f})", high)
    return picked


def _probe_label(step: int, phase: str, epoch: float) -> str:
    if phase == "init" or step == 0:
        return "init"
    if phase == "epoch":
        return f"ep {epoch:g}"
    return f"step {int(step)}"


def delta_heatmaps(diagnostics: pd.DataFrame, cells: list[tuple[str, dict]]):
    """Layer x probe heatmap of log10 delta_rms (mean over seeds) per contrasting cell; labelled probe
    columns; a common colour scale clipped at the 2nd-98th percentile and marked as such."""
    if not cells or diagnostics.empty:
        return _empty("no cells to contrast", "δ over layers and time")
    metric = _delta_column(diagnostics)
    all_values = _log10(diagnostics[metric])
    finite = all_values[np.isfinite(all_values)]
    vmin, vmax = np.percentile(finite, [2, 98]) if len(finite) else (-6.0, 1.0)
    below, above = bool((finite < vmin).any()), bool((finite > vmax).any())
    extend = {(True, True): "both", (True, False): "min", (False, True): "max"}.get((below, above), "neither")
    fig, axes = _grid(len(cells), 2, 4.75, 3.3)
    for ax, (label, cell) in zip(axes.flat, cells):
        sub = diagnostics
        for f, v in cell.items():
            sub = sub[sub[f] == v]
        sub = sub.assign(value=_log10(sub[metric]).to_numpy())
        probes = sub[["step", "phase", "epoch"]].drop_duplicates("step").sort_values("step")
        names = {r.step: _probe_label(r.step, r.phase, r.epoch) for r in probes.itertuples()}
        grid = sub.groupby(["layer", "step"])["value"].mean().unstack("step").sort_index(ascending=False)
        ax.patch.set_hatch("//")
        ax.patch.set_edgecolor("0.6")
        sns.heatmap(grid, ax=ax, cmap=quantity_cmap(metric), vmin=vmin, vmax=vmax, cbar=False)
        ax.set_xticks(np.arange(grid.shape[1]) + 0.5, [names[s] for s in grid.columns], rotation=90)
        ax.set_xlabel("probe (labelled; not to scale)")
        ax.set_ylabel("layer (1 = input)")
        ax.tick_params(axis="y", rotation=0)
        ax.set_title(label + "\n" + ", ".join(str(v) for v in cell.values()), fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.92, 0.95))
    cax = fig.add_axes((0.935, 0.2, 0.015, 0.6))
    fig.colorbar(
        plt.cm.ScalarMappable(norm=plt.Normalize(vmin, vmax), cmap=quantity_cmap(metric)),
        cax=cax,
        extend=extend,
        label=f"log10 {metric}",
    )
    clipped = " (colour scale clipped at the 2nd-98th percentile: arrow ends)" if extend != "neither" else ""
    _suptitle(fig, f"Error signal per layer over training; hatched: diverged, no value{clipped}")
    return fig


def pooled(diagnostics: pd.DataFrame, value: str, by: list[str]) -> pd.DataFrame:
    """`run_quantiles` of `value` per `by`, BN group (column bn) and step: each row of `diagnostics`
    is one run's probe, so the quantiles are over runs, batch-normalized runs apart."""
    return run_quantiles(diagnostics.assign(bn=bn_groups(diagnostics)), value, [*by, "bn", "step"])


def percentile_series(diagnostics: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """What the percentile figures plot per activation, layer, BN group and step: over runs, the median
    and 25-75% band of each run's median (`<prefix>_p50`: median, q25, q75, n), and the medians over
    runs of each run's 5th and 95th percentiles (p05, p95)."""
    by = ["activation", "layer"]
    keys = [*by, "bn", "step"]
    tails = [pooled(diagnostics, f"{prefix}_{p}", by).set_index(keys)["median"].rename(p) for p in ("p05", "p95")]
    return pooled(diagnostics, f"{prefix}_p50", by).set_index(keys).join(tails).reset_index()


def _bn_style(group: str) -> str:
    """batch_norm runs in the regularizer level's colour, the others in neutral grey."""
    return level_color("regularizer", BN) if group == BN else NEUTRAL[0]


def _percentile_panels(diagnostics: pd.DataFrame, prefix: str, log: bool, title: str):
    layers = _panel_layers(diagnostics)
    acts = levels_of("activation", diagnostics["activation"])[:MAX_ROWS]
    fig, axes = plt.subplots(
        len(acts), len(layers), figsize=(PAGE_WIDTH_IN, 2.1 * len(acts) + 0.9), squeeze=False, sharex=True
    )
    floor = None
    if log:  # |δ| is exactly 0 for inactive ReLU units: draw zeros at a floor below the smallest positive value
        cols = [f"{prefix}_p05", f"{prefix}_p50", f"{prefix}_p95"]
        values = pd.to_numeric(diagnostics[cols].stack(), errors="coerce")
        positive = values[values > 0]
        floor = 10.0 ** (np.floor(np.log10(positive.min())) - 1) if len(positive) else 1e-12
        diagnostics = diagnostics.assign(
            **{c: pd.to_numeric(diagnostics[c], errors="coerce").where(lambda v: ~(v == 0), floor) for c in cols}
        )
    series = percentile_series(diagnostics, prefix)
    groups = [g for g in (NO_BN, BN) if g in set(series["bn"])]
    for i, act in enumerate(acts):
        for j, layer in enumerate(layers):
            ax = axes[i, j]
            at = series[(series["activation"] == act) & (series["layer"] == layer)]
            for group in groups:
                m = at[at["bn"] == group].sort_values("step")
                x, color = m["step"].to_numpy(dtype=float) + 1, _bn_style(group)
                ax.fill_between(x, m["q25"], m["q75"], color=color, alpha=0.25, lw=0)
                ax.plot(x, m["median"], color=color, lw=2)
                ax.plot(x, m["p05"], color=color, ls=":", lw=1)
                ax.plot(x, m["p95"], color=color, ls=":", lw=1)
            _steps_axis(ax)
            if log:
                ax.set_yscale("log")
            elif spans_decades(at[["q25", "q75", "p05", "p95"]].to_numpy().ravel()):
                ax.set_yscale("symlog", linthresh=1.0)  # linear within ±1, log beyond: exploding runs
            kind = diagnostics.loc[diagnostics["layer"] == layer, "layer_kind"]
            ax.set_title(
                f"{act}, layer {layer}{' (output)' if len(kind) and kind.iloc[0] == 'output' else ''}", fontsize=9
            )
            ax.set_xlabel("steps + 1 (log)" if i == len(acts) - 1 else "")
            scale = ax.get_yscale()
            ax.set_ylabel(prefix + (f" ({scale})" if scale != "linear" else "") if j == 0 else "")
    handles = [plt.Line2D([], [], color=_bn_style(g), lw=2) for g in groups]
    handles.append(plt.Line2D([], [], color=NEUTRAL[0], ls=":", lw=1))
    labels = [f"{g}: median of the run medians (band: 25-75% of runs)" for g in groups]
    labels.append("median of the runs' 5th / 95th percentiles")
    _suptitle(fig, title + (f"; zeros drawn at 10^{np.log10(floor):.0f}" if floor else ""))
    fig.tight_layout()
    _legend_below(fig, handles, labels, ncol=1)
    return fig


def delta_percentiles(diagnostics: pd.DataFrame):
    """|per-sample δ| per layer and activation over training (log): over runs, the median and 25-75%
    band of each run's median, and the medians of its 5th/95th percentiles; BN runs apart."""
    empty = _needs(diagnostics, ["delta_p05", "delta_p50", "delta_p95"], "δ percentiles")
    return empty or _percentile_panels(
        diagnostics, "delta", True, "|δ| per layer over training, pooled over runs by medians"
    )


def activation_percentiles(diagnostics: pd.DataFrame):
    """Each block's output per layer and activation over training: over runs, the median and 25-75% band
    of each run's median, and the medians of its 5th/95th percentiles; BN runs apart; symlog where
    values pass 100."""
    empty = _needs(diagnostics, ["act_p05", "act_p50", "act_p95"], "Activation percentiles")
    return empty or _percentile_panels(
        diagnostics, "act", False, "Activations per layer over training, pooled over runs by medians"
    )


def unit_shares(hidden: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per run and probe, the mean of `metric` over the hidden layers (what the verdict reads), then
    its median and 25-75% band over runs per initializer, BN group and step (`pooled`)."""
    keys = [*_run_keys(hidden), "step"]
    per_run = hidden.groupby(keys, dropna=False)[metric].mean().reset_index()
    by = ["initializer"] if "initializer" in per_run.columns else []
    return pooled(per_run, metric, by)


def saturation_dead(diagnostics: pd.DataFrame):
    """Per activation: its family's measure (saturated_frac or inactive_frac, never both on one panel)
    and dead_frac, as the verdicts read them (mean over hidden layers per run), over optimizer steps
    (log): median over runs with a 25-75% band, one line per initializer (the factor that sets
    saturation at init), batch-normalized runs in panels of their own; diverged probes add nothing."""
    hidden = diagnostics[diagnostics["layer_kind"] == "hidden"] if len(diagnostics) else diagnostics
    if hidden.empty:
        return _empty("no hidden-layer diagnostics", "Saturation and dead units")
    acts = levels_of("activation", hidden["activation"])[:MAX_ROWS]
    inits = levels_of("initializer", hidden["initializer"]) if "initializer" in hidden.columns else [None]
    groups = [g for g in (NO_BN, BN) if g in set(bn_groups(hidden))]
    panels = [(kind, g) for kind in ("measure", "dead_frac") for g in groups]
    fig, axes = plt.subplots(
        len(acts), len(panels), figsize=(PAGE_WIDTH_IN, 2.2 * len(acts) + 0.9), squeeze=False, sharex=True
    )
    for i, act in enumerate(acts):
        sub = hidden[hidden["activation"] == act]
        measure = "inactive_frac" if analysis.activation_family(act) == "relu" else "saturated_frac"
        for j, (kind, group) in enumerate(panels):
            ax = axes[i, j]
            metric = measure if kind == "measure" else kind
            m = unit_shares(sub, metric)
            m = m[m["bn"] == group]
            for init, line in m.groupby("initializer") if "initializer" in m.columns else [(None, m)]:
                x = line["step"].to_numpy(dtype=float) + 1
                color = level_color("initializer", init) if init is not None else NEUTRAL[0]
                ax.fill_between(x, line["q25"], line["q75"], color=color, alpha=0.15, lw=0)
                ax.plot(x, line["median"], marker=".", color=color)
            if metric in ("saturated_frac", "dead_frac"):  # the verdict's threshold for this measure
                limit = outcomes.SATURATED_AT_LEAST if metric == "saturated_frac" else outcomes.DEAD_AT_LEAST
                ax.axhline(limit, color=NEUTRAL[1], lw=1, ls="--")
            _steps_axis(ax)
            ax.set_ylim(-0.02, 1.02)
            name = {
                "inactive_frac": "inactive (u < 0)",
                "saturated_frac": "saturated (f' < 5% max)",
                "dead_frac": "dead units",
            }[metric]
            ax.set_title(f"{act}: {name}" + (f"\n{group}" if len(groups) > 1 else ""), fontsize=9)
            ax.set_ylabel(f"{metric} (0-1)" if j == 0 or kind != panels[j - 1][0] else "")
            if i < len(acts) - 1:
                ax.set_xlabel("")
    handles = [
        plt.Line2D([], [], color=level_color("initializer", init), marker=".") for init in inits if init is not None
    ]
    handles.append(plt.Line2D([], [], color=NEUTRAL[1], ls="--"))
    labels = [str(init) for init in inits if init is not None] + ["verdict threshold (saturated / dead)"]
    _suptitle(
        fig, "Saturated or inactive, and dead units (mean over hidden layers per run): median over runs, band 25-75%"
    )
    fig.tight_layout()
    _legend_below(fig, handles, labels, "initializer", ncol=5)
    return fig


def update_ratio(diagnostics: pd.DataFrame):
    """Update ratio per step (`per_step_update`) per layer over steps (log-log), one panel per
    activation, median over runs with a 25-75% band."""
    empty = _needs(diagnostics, ["update_ratio"], "Update ratio")
    if empty:
        return empty
    data = diagnostics[diagnostics["step"] > 0].assign(per_step=per_step_update(diagnostics))
    acts = levels_of("activation", data["activation"])[:MAX_PANELS]
    layers = sorted(data["layer"].unique())
    colors = dict(zip(layers, sns.color_palette("viridis", len(layers))))
    fig, axes = _grid(len(acts), 3, PAGE_WIDTH_IN / min(3, max(2, len(acts))), 2.8, sharey=True)
    m = run_quantiles(data[data["per_step"] > 0], "per_step", ["activation", "layer", "step"])
    for ax, act in zip(axes.flat, acts):
        for layer, line in m[m["activation"] == act].groupby("layer"):
            x = line["step"].to_numpy(dtype=float) + 1
            ax.fill_between(x, line["q25"], line["q75"], color=colors[layer], alpha=0.15, lw=0)
            ax.plot(x, line["median"], marker=".", color=colors[layer])
        _steps_axis(ax)
        ax.set_yscale("log")
        ax.set_title(act)
        ax.set_ylabel("update ratio per step (log)")
    handles = [plt.Line2D([], [], color=colors[layer], marker=".") for layer in layers]
    _suptitle(fig, "‖ΔW‖/‖W‖ between probes ÷ steps between them, per layer: median over runs, band 25-75%")
    fig.tight_layout()
    _legend_below(fig, handles, [f"layer {layer}" for layer in layers], "layer", ncol=7)
    return fig


# --- learning and loss curves -----------------------------------------------------------------------
def learning_curves(full_curves: pd.DataFrame, factors: list[str] | None = None):
    """Validation accuracy per epoch, one panel per factor, one line per level (t-interval band); the
    curves come from `analysis.complete_curves`, so no run drops out (the title counts the carried)."""
    if full_curves is None or full_curves.empty:
        return _empty("no learning curves", "Learning curves")
    factors = _varying(full_curves, factors or FACTORS)
    fig, axes = _grid(len(factors), 2, 4.75, 3.8, sharey=True)
    for ax, factor in zip(axes.flat, factors):
        levels = levels_of(factor, full_curves[factor])[:MAX_LEVELS]
        sns.lineplot(
            full_curves[full_curves[factor].isin(levels)],
            x="epoch",
            y="val_accuracy",
            hue=factor,
            hue_order=levels,
            palette=level_palette(factor, levels),
            errorbar=_t_band,
            marker="o",
            ax=ax,
        )
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation accuracy (0-1)")
        ax.set_title(f"by {factor}")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        _legend_under(ax, factor)
    keys = [c for c in full_curves.columns if c not in ("epoch", "val_accuracy", "filled")]
    per_run = full_curves.groupby(keys, dropna=False)["filled"].agg(set)
    n_stop = int(per_run.map(lambda s: "early_stop" in s).sum())
    n_div = int(per_run.map(lambda s: "diverged" in s).sum())
    _suptitle(
        fig,
        f"Validation accuracy (mean, 95% t-band) over {len(per_run)} runs; carried: {n_stop} early-stopped "
        f"at their best, {n_div} diverged at chance",
    )
    fig.tight_layout()
    return fig


def loss_curves(curves: pd.DataFrame, factors: list[str] | None = None):
    """Training loss per epoch (log), one panel per factor, one line per level (geometric mean over runs
    with a finite loss); the title counts runs without a finite loss from some epoch on."""
    if curves is None or curves.empty or "loss" not in curves.columns:
        return _empty("no training losses", "Training-loss curves")
    factors = _varying(curves, factors or FACTORS)
    data = curves.assign(log_loss=_log10(curves["loss"]).to_numpy())
    keys = [k for k in dict.fromkeys([*factors, "seed"]) if k in curves.columns]
    last = int(curves["epoch"].max())
    per_run = data.groupby(keys, dropna=False).agg(
        finite=("log_loss", lambda s: np.isfinite(s).all()), epochs=("epoch", "max")
    )
    n_lost = int((~per_run["finite"]).sum())
    n_short = int((per_run["epochs"] < last).sum())
    fig, axes = _grid(len(factors), 2, 4.75, 3.8, sharey=True)
    for ax, factor in zip(axes.flat, factors):
        levels = levels_of(factor, data[factor])[:MAX_LEVELS]
        finite = data[np.isfinite(data["log_loss"]) & data[factor].isin(levels)]
        m = finite.groupby([factor, "epoch"])["log_loss"].mean().unstack(factor)
        for level in levels:
            if level in m.columns:
                ax.plot(m.index, 10 ** m[level], marker="o", color=level_color(factor, level), label=level)
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss (log)")
        ax.set_title(f"by {factor}")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        _legend_under(ax, factor)
    _suptitle(
        fig,
        f"Training loss (geometric mean); left out: {n_lost} runs from their non-finite epoch, "
        f"{n_short} runs stopped early after their last epoch",
    )
    fig.tight_layout()
    return fig


# --- leaderboard --------------------------------------------------------------------------------------
def leaderboard_plot(board: pd.DataFrame, outcome: str = "test_accuracy"):
    """Best and worst cells by mean `outcome` with 95% t-intervals over seeds and n."""
    sub = board[board["outcome"] == outcome] if "outcome" in board.columns else board
    if sub.empty:
        return _empty("no cells", "Leaderboard")
    grid_axescols = [
        c
        for c in sub.columns
        if c not in {"outcome", "rank_group", "rank", "mean", "ci_low", "ci_high", "n_seeds", "health"}
    ]
    labels = [
        f"#{int(r['rank'])} " + " / ".join(str(r[c]) for c in grid_axescols) + f" (n={int(r['n_seeds'])})"
        for _, r in sub.iterrows()
    ]
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH_IN, 0.34 * len(sub) + 1.4))
    y = np.arange(len(sub))[::-1]
    for yi, (_, row) in zip(y, sub.iterrows()):
        color = NEUTRAL[0] if row["rank_group"] == "best" else NEUTRAL[1]
        if np.isfinite(row["ci_low"]):
            ax.plot([row["ci_low"], row["ci_high"]], [yi, yi], color=color, lw=2)
        ax.plot(row["mean"], yi, "o", color=color)
    ax.set_yticks(y, labels)
    ax.set_xlabel(f"{outcome} (mean over seeds; line: 95% t-interval)")
    ax.set_ylabel("cell")
    ax.set_title("Best (dark grey) and worst (light grey) cells")
    fig.tight_layout()
    return fig
