"""Figures on planted data: what they plot (medians and bands over runs, BN apart), one colour system,
legends that cover nothing, and run keys taken from the grid axes."""

from __future__ import annotations

from itertools import product

import matplotlib.colors
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from gradatlas import catalog, figures, report
from gradatlas.config import FACTORS, NAMED_AXES
from gradatlas.outcomes import HEALTH_CLASSES, STATUSES


def probes(runs: pd.DataFrame, steps=(0, 1, 10), layers=(1, 2)) -> pd.DataFrame:
    """One diagnostics row per run x step x layer (layer 2 = output), values from `runs`' columns."""
    rows = [
        run
        | {
            "step": step,
            "epoch": step / 10,
            "phase": "init" if step == 0 else "early",
            "layer": layer,
            "layer_kind": "output" if layer == layers[-1] else "hidden",
        }
        for run, step, layer in product(runs.to_dict("records"), steps, layers)
    ]
    return pd.DataFrame(rows)


def hex_colors(values) -> set[str]:
    return {matplotlib.colors.to_hex(v) for v in values}


# --- what is plotted -----------------------------------------------------------------------------------
def test_four_exploding_runs_move_neither_the_median_nor_the_band():
    runs = pd.DataFrame(
        {
            "initializer": "he_normal",
            "activation": "relu",
            "optimizer": "adam",
            "regularizer": "none",
            "seed": range(48),
        }
    )
    runs["act_p05"], runs["act_p50"], runs["act_p95"] = 0.0, 0.5, 1.6
    runs.loc[:3, ["act_p50", "act_p95"]] = [1e7, 2.9e8]  # four exploding runs
    series = figures.percentile_series(probes(runs), "act")
    assert len(series) == 3 * 2 and (series["n"] == 48).all()
    assert series["median"].tolist() == pytest.approx([0.5] * 6)
    assert series["q75"].tolist() == pytest.approx([0.5] * 6)
    assert series["p95"].tolist() == pytest.approx([1.6] * 6)
    assert runs["act_p95"].mean() > 1e7  # what the old mean line showed
    fig = figures.activation_percentiles(probes(runs))
    assert all(ax.get_yscale() == "linear" for ax in fig.axes)  # nothing passes 100 once pooled by medians
    plt.close(fig)


def test_symlog_only_where_values_span_decades():
    assert not figures.spans_decades([0.0, 0.5, 1.6, 99])
    assert figures.spans_decades([0.5, -250.0])
    assert not figures.spans_decades([np.nan, np.inf])
    runs = pd.DataFrame(
        {"activation": "relu", "regularizer": "none", "seed": range(4), "act_p05": 0.0, "act_p50": 1e4, "act_p95": 1e6}
    )
    fig = figures.activation_percentiles(probes(runs))
    assert {ax.get_yscale() for ax in fig.axes if ax.get_title()} == {"symlog"}
    plt.close(fig)


def test_saturation_of_bn_and_other_runs_are_separate_series():
    runs = pd.DataFrame(list(product(["none", "dropout", "batch_norm"], range(4))), columns=["regularizer", "seed"])
    runs = runs.assign(
        activation="sigmoid",
        initializer="random_normal",
        saturated_frac=np.where(runs["regularizer"] == "batch_norm", 0.05, 0.45),
        dead_frac=0.0,
    )
    data = probes(runs)
    hidden = data[data["layer_kind"] == "hidden"]
    pooled = figures.pooled(hidden, "saturated_frac", ["activation", "layer"])
    medians = pooled.groupby("bn")["median"].unique().map(list).to_dict()
    assert medians == {figures.BN: [pytest.approx(0.05)], figures.NO_BN: [pytest.approx(0.45)]}
    assert set(pooled.loc[pooled["bn"] == figures.NO_BN, "n"]) == {8}
    fig = figures.saturation_dead(data)
    titles = {ax.get_title() for ax in fig.axes}
    saturated = "sigmoid: saturated (f' < 5% max)"
    assert {f"{saturated}\nno batch_norm", f"{saturated}\nbatch_norm"} <= titles
    no_bn = next(ax for ax in fig.axes if ax.get_title() == f"{saturated}\nno batch_norm")
    assert no_bn.lines[0].get_ydata() == pytest.approx([0.45] * 3)  # not the BN-diluted 0.3
    plt.close(fig)


def test_update_ratio_is_divided_by_the_steps_between_probes():
    runs = pd.DataFrame({"activation": ["relu", "relu"], "seed": [0, 1]})
    data = probes(runs, steps=(0, 1, 10, 210)).assign(update_ratio=lambda d: np.where(d["step"] == 0, np.nan, 0.2))
    per_step = figures.per_step_update(data.sample(frac=1, random_state=0))  # any row order
    by_step = per_step.groupby(data["step"]).unique().map(list).to_dict()
    assert by_step[1] == pytest.approx([0.2]) and by_step[10] == pytest.approx([0.2 / 9])
    assert by_step[210] == pytest.approx([0.2 / 200]) and np.isnan(by_step[0]).all()


# --- one colour system -------------------------------------------------------------------------------
def test_a_level_keeps_its_colour_whatever_the_other_levels():
    figures.use_levels({"activation": ["relu", "sigmoid"], "learning_rate": ["0.1", "0.01"]})
    before = {lv: figures.level_color("activation", lv) for lv in ("relu", "sigmoid")}
    figures.use_levels({"activation": ["tanh", "gelu", "sigmoid", "relu"]})
    assert {lv: figures.level_color("activation", lv) for lv in before} == before
    assert figures.level_color("learning_rate", "0.01") == figures.level_color("learning_rate", "0.01")
    figures.use_levels({})


def test_level_colours_are_distinct_within_a_factor_and_never_a_class_or_status_colour():
    semantic = hex_colors([*figures.CLASS_COLORS.values(), *figures.STATUS_COLORS.values()])
    assert set(figures.CLASS_COLORS) == {*HEALTH_CLASSES, "no value"} and set(figures.STATUS_COLORS) == set(STATUSES)
    assert len(hex_colors(figures.CLASS_COLORS.values())) == len(figures.CLASS_COLORS)
    assert not hex_colors(figures.LEVEL_PALETTE) & semantic
    for axis, section in NAMED_AXES.items():
        colors = [figures.level_color(axis, name) for name in catalog.CATALOG[section]]
        assert len(set(colors)) == len(colors), axis
    firsts = {figures.level_color(f, next(iter(catalog.CATALOG[NAMED_AXES[f]]))) for f in FACTORS}
    assert len(firsts) == len(FACTORS)  # random_normal, sigmoid, sgd, none: four colours, not one
    assert figures.level_color("width", "unseen") in figures.LEVEL_PALETTE


def test_class_bars_use_the_class_colours_for_every_class_in_the_table():
    shares = {f"share_{c}": 1 / len(HEALTH_CLASSES) for c in HEALTH_CLASSES}
    flow = pd.DataFrame(
        [{"when": "init", "factor": "activation", "level": lv, "n": 4} | shares for lv in ("relu", "sigmoid")]
    )
    fig = figures.flow_classes(flow)
    bars = hex_colors(p.get_facecolor() for p in fig.axes[0].patches)
    assert bars == hex_colors(figures.CLASS_COLORS.values())
    plt.close(fig)
    old = flow.drop(columns=["share_saturated", "share_dead", "share_diverged"])  # the table before the verdicts
    fig = figures.flow_classes(old)
    assert hex_colors(p.get_facecolor() for p in fig.axes[0].patches) == hex_colors(
        [figures.CLASS_COLORS[c] for c in ("healthy", "vanishing", "exploding", "no value")]
    )
    plt.close(fig)


def test_accuracy_has_one_colormap_in_the_atlas_and_the_interactions():
    runs = pd.DataFrame(
        list(product(["glorot_uniform", "he_normal"], ["relu", "sigmoid"], [0, 1])),
        columns=["initializer", "activation", "seed"],
    ).assign(test_accuracy=0.8, status="converged")
    inter = pd.DataFrame(
        {
            "factor_a": "initializer",
            "level_a": ["he_normal", "he_normal"],
            "factor_b": "activation",
            "level_b": ["relu", "sigmoid"],
            "outcome": "test_accuracy",
            "mean": [0.9, 0.5],
            "n": 2,
        }
    )
    atlas, pairs = figures.accuracy_atlas(runs, facets=()), figures.interaction_heatmaps(inter)
    cmaps = {ax.collections[0].cmap.name for fig in (atlas, pairs) for ax in fig.axes if ax.get_title()}
    assert cmaps == {figures.quantity_cmap("test_accuracy")}
    assert figures.quantity_cmap("delta_rms") != figures.quantity_cmap("test_accuracy")
    plt.close("all")


def test_forest_dots_are_neutral():
    deltas = pd.DataFrame(
        {
            "factor": "activation",
            "level": ["sigmoid", "tanh"],
            "baseline": "relu",
            "outcome": "test_accuracy",
            "mean_delta": [-0.3, 0.1],
            "ci_low": [-0.4, 0.0],
            "ci_high": [-0.2, 0.2],
            "n_pairs": 4,
        }
    )
    fig = figures.paired_delta_forest(deltas)
    assert hex_colors(line.get_color() for line in fig.axes[0].lines if line.get_linestyle() != "--") == hex_colors(
        [figures.NEUTRAL[0]]
    )
    plt.close(fig)


# --- layout --------------------------------------------------------------------------------------------
def curves_over(grid: dict, seeds=(0, 1), epochs=3) -> pd.DataFrame:
    """Learning curves of every grid cell x seed: the first level of each axis learns fastest."""
    cells = pd.DataFrame(list(product(*grid.values(), seeds)), columns=[*grid, "seed"])
    rows = []
    for cell in cells.to_dict("records"):
        slow = sum(str(cell[a]) != str(vs[0]) for a, vs in grid.items())
        rows += [
            cell | {"epoch": e, "val_accuracy": 0.95 * e / (epochs + slow), "loss": 1.0 / e}
            for e in range(1, epochs + 1)
        ]
    return pd.DataFrame(rows)


def test_convergence_legends_cover_no_curve():
    fig = figures.convergence_ecdf(
        curves_over({"initializer": ["he_normal", "glorot_uniform"], "activation": ["relu", "sigmoid", "tanh"]}), [0.5]
    )
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    panels = [ax for ax in fig.axes if ax.get_legend()]
    assert len(panels) == 2
    for ax in panels:
        assert not ax.get_legend().get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))
    plt.close(fig)


# --- run keys from the grid axes (issue #18) -------------------------------------------------------------
def test_a_learning_rate_axis_keeps_its_runs_apart():
    grid = {"optimizer": ["sgd"], "learning_rate": ["0.1", "0.01"]}  # labelled, as the report's curves are
    curves = curves_over(grid)
    per_run = figures.epochs_to_threshold(curves, 0.5, list(grid))
    assert len(per_run) == 4 and set(per_run["learning_rate"]) == {"0.1", "0.01"}
    assert per_run.groupby("learning_rate")["epochs"].first().to_dict() == {"0.01": 3.0, "0.1": 2.0}
    fig = figures.convergence_ecdf(curves, [0.5], list(grid))
    legend = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert sorted(legend) == ["0.01 (2/2)", "0.1 (2/2)"]
    plt.close(fig)


# --- report views --------------------------------------------------------------------------------------
def test_convergence_view_hides_all_empty_columns():
    conv = pd.DataFrame(
        {
            "factor": "activation",
            "level": ["relu", "sigmoid"],
            "n": 4,
            "target": 0.9,
            "n_reached": 0,
            "km_median_epochs": np.nan,
            "mean_val_auc": [0.8, 0.5],
            "ci_low": [0.7, 0.4],
            "ci_high": [0.9, 0.6],
            "n_auc": 4,
        }
    )
    view = report.convergence_view(conv)
    assert "km_median_epochs" not in view and "n_reached" in view and "95% CI" in view
