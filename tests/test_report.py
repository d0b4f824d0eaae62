"""Tests of the figures, the HTML report and the report rules.

Unit tests use small synthetic tables shaped like results/tables/*; the integration test runs the
real pipeline (the `small_study` fixture) and Snakemake's own report; the browser test renders a
report in headless Chromium (skipped when Chromium is absent, unless GRADATLAS_REQUIRE_CHROMIUM=1).
"""

from __future__ import annotations

import html
import io
import json
import os
import re
import shutil
import subprocess
import zipfile
from itertools import combinations, product
from pathlib import Path

import matplotlib
import matplotlib.colors
import matplotlib.pyplot as plt
import matplotlib.text
import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO, run_snakemake
from gradatlas import aggregate, analysis, diagnostics, figures, outcomes, registry, report
from gradatlas.config import FACTORS  # noqa: E402

BASELINES = {"initializer": "glorot_uniform", "activation": "relu", "optimizer": "adam", "regularizer": "none"}
CONFIG = {
    "study": "synthetic",
    "data": {"validation_size": 500, "train_subset": 3000},
    "model": {"depth": 3, "width": 8},
    "train": {"epochs": 3, "target_accuracy": 0.9, "batch_size": 128, "learning_rate": {"adam": 0.001, "sgd": 0.01}},
    "grid": {
        "initializer": ["glorot_uniform", "he_normal"],
        "activation": ["relu", "sigmoid"],
        "optimizer": ["adam", "sgd"],
        "regularizer": ["none", "dropout"],
    },
    "seeds": [0, 1],
    "report": {"baselines": BASELINES, "nuisance": []},
}
SECTION_PATTERNS = {  # what /work/shared/checks/report looks for, plus the section list
    "answer": r"keeps (them|gradients) alive",
    "budget": r"budget: at most",
    "convergence": r"converge",
    "main effects": r"main effect",
    "variance decomposition": r"variance|η²",
    "gradient flow": r"gradient flow",
    "saturation": r"saturat",
    "dead units": r"dead",
    "learning curves": r"learning curve",
    "epochs to target": r"epochs?[- ]to[- ]target",
    "leaderboard": r"leaderboard",
    "provenance": r"commit",
    "atlas": r"atlas",
    "findings": r"findings",
}


def synthetic_tables(extra_axis: dict | None = None, rng_seed: int = 0) -> dict[str, pd.DataFrame]:
    """runs, curves and diagnostics tables of a fake 2x2x2x2 study x 2 seeds (3 epochs, 3+1 layers),
    with the engine contract's columns.

    sigmoid vanishes (δ shrinks 4x per layer) and learns slowly; he_normal+relu explodes (δ grows 5x
    per layer toward the input); one sgd+sigmoid+he_normal run diverges after epoch 1 (NaN probes).
    `extra_axis` ({name: [values]}) adds a grid axis (e.g. a nuisance learning_rate).
    """
    rng = np.random.default_rng(rng_seed)
    axes = dict(CONFIG["grid"]) | (extra_axis or {})
    cells = pd.DataFrame(list(product(*axes.values(), [0, 1])), columns=[*axes, "seed"])
    runs, curves, diags = [], [], []
    for row in cells.to_dict("records"):
        sigmoid = row["activation"] == "sigmoid"
        exploding = row["activation"] == "relu" and row["initializer"] == "he_normal"
        final = (0.6 if sigmoid else 0.93) + rng.normal(0, 0.01) + 0.02 * (row["optimizer"] == "adam")
        diverged = sigmoid and row["optimizer"] == "sgd" and row["seed"] == 1 and row["initializer"] == "he_normal"
        val = [final * (1 - 0.5**e) + 0.1 * 0.5**e for e in (1, 2, 3)]
        if diverged:
            val = [val[0], np.nan]
        reached = next((e for e, v in zip((1, 2, 3), val) if v >= 0.9), None)
        per_layer = 0.25 if sigmoid else (5.0 if exploding else 0.95)
        ratio = per_layer**3
        runs.append(
            row
            | {
                "status": "diverged" if diverged else ("converged" if final > 0.5 else "stalled"),
                "test_accuracy": 0.1 if diverged else final,
                "test_loss": 1 - final,
                "best_val_accuracy": np.nanmax(val),
                "best_epoch": 3,
                "epochs_run": len(val),
                "epochs_to_target": reached,
                "train_seconds": 2.0,
                "samples_per_second": 1000.0,
                "vanishing_ratio_init": ratio,
                "vanishing_ratio_final": np.nan if diverged else ratio,
                "health_init": "saturated" if sigmoid else ("exploding" if exploding else "healthy"),
                "health_final": "diverged"
                if diverged
                else ("saturated" if sigmoid else ("exploding" if exploding else "healthy")),
                "saturated_frac_epoch1": 0.3 if sigmoid else np.nan,
                "inactive_frac_epoch1": np.nan if sigmoid else 0.5,
                "dead_frac_epoch1": 0.0 if sigmoid else 0.05,
                "steps_per_epoch": 10.0,
                "probe_seconds": 0.1,
            }
        )
        for e, v in enumerate(val, start=1):
            curves.append(
                row
                | {
                    "epoch": e,
                    "loss": (1 - v) if np.isfinite(v) else np.nan,
                    "accuracy": v,
                    "val_loss": 1 - v,
                    "val_accuracy": v,
                    "lr": 0.01,
                    "seconds": 0.5,
                }
            )
        for step, epoch, phase in [
            (0, 0.0, "init"),
            (1, 0.1, "early"),
            (10, 1.0, "epoch"),
            (20, 2.0, "epoch"),
            (30, 3.0, "epoch"),
        ]:
            dead_net = diverged and step >= 20
            for layer in range(1, 5):
                shrink = per_layer ** (4 - layer)
                stats = {
                    "grad_w_norm": shrink * (1 + rng.random()),
                    "delta_norm": shrink * (1 + rng.random()),
                    "delta_rms": shrink,
                    "weight_norm": 3.0,
                    "update_ratio": np.nan if step == 0 else 0.01,
                    "act_mean": 0.5,
                    "act_std": 0.2,
                    "act_p05": 0.1,
                    "act_p50": 0.5,
                    "act_p95": 0.9,
                    "delta_p05": shrink / 10,
                    "delta_p50": shrink / 2,
                    "delta_p95": shrink * 2,
                    "saturated_frac": np.nan if layer == 4 or not sigmoid else 0.3,
                    "inactive_frac": np.nan if layer == 4 or sigmoid else 0.5,
                    "dead_frac": np.nan if layer == 4 else (0.0 if sigmoid else 0.05 * epoch),
                }
                if dead_net:
                    stats = {k: np.nan for k in stats}
                diags.append(
                    row
                    | {
                        "step": step,
                        "epoch": epoch,
                        "phase": phase,
                        "layer": layer,
                        "layer_kind": "output" if layer == 4 else "hidden",
                        "units": 8 if layer < 4 else 10,
                    }
                    | stats
                )
    runs = pd.DataFrame(runs)
    runs["epochs_to_target"] = runs["epochs_to_target"].astype("Float64")
    return {"runs": runs, "curves": pd.DataFrame(curves), "diagnostics": pd.DataFrame(diags)}


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    base = synthetic_tables()
    figures.use_levels(CONFIG["grid"])
    settings = registry.study_settings(CONFIG)
    return base | analysis.study_tables(base["runs"], FACTORS, BASELINES, curves=base["curves"], settings=settings)


def _assert_labelled(fig) -> None:
    """The figure has at least one visible axes, and every visible axes with data has both labels."""
    visible = [ax for ax in fig.axes if ax.axison and ax.get_label() != "<colorbar>"]
    assert visible, "figure has no visible axes"
    plotted = [ax for ax in visible if ax.lines or ax.collections or ax.patches or ax.images]
    assert plotted, "figure draws nothing"
    # shared axes label only their outer panels: require a label on each row/column, checked per figure
    assert any(ax.get_xlabel() for ax in plotted) and any(ax.get_ylabel() for ax in plotted)
    for ax in plotted:
        assert ax.get_xlabel() or ax.get_ylabel() or ax.get_title(), "an axes with neither labels nor title"
    plt.close(fig)


# --- figures ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def study(tables) -> report.Study:
    return report.Study(tables, CONFIG)


@pytest.fixture(scope="module")
def makers(study):
    return report.make_figures(study)


@pytest.mark.parametrize("name", registry.FIGURE_NAMES)
def test_every_figure_is_labelled_and_legible_at_page_width(makers, name):
    """>= 110 dpi, no wider than the page (legends below), and every text >= 9 pt once the PNG is
    scaled to the page's width."""
    assert report.DPI >= 110
    fig = makers[name]()
    texts = [t for t in fig.findobj(matplotlib.text.Text) if t.get_visible() and t.get_text().strip()]
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=report.DPI, bbox_inches="tight")
    width_px = plt.imread(io.BytesIO(png.getvalue())).shape[1]
    scale = min(1.0, report.PAGE_WIDTH_PX / width_px)
    small = sorted(
        {(round(t.get_fontsize() * scale, 1), t.get_text()[:30]) for t in texts if t.get_fontsize() * scale < 9}
    )
    assert not small, f"{name}: text below 9 pt at page width ({width_px} px wide): {small[:5]}"
    _assert_labelled(fig)


def test_accuracy_atlas_marks_diverged_cells_and_has_a_colour_bar(study):
    fig = figures.accuracy_atlas(study.runs)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any(t.startswith("✕") for t in texts), "the diverged sgd+sigmoid+he_normal cell is not marked"
    assert any(ax.get_ylabel() == "test accuracy (0-1)" for ax in fig.axes), "no colour bar"
    plt.close(fig)


def test_accuracy_atlas_caps_panels():
    many = pd.DataFrame(
        list(product(["a", "b"], ["x", "y"], [f"o{i}" for i in range(5)], [f"r{i}" for i in range(5)], [0])),
        columns=[*FACTORS, "seed"],
    ).assign(test_accuracy=0.5, status="converged")
    fig = figures.accuracy_atlas(many)
    assert len([ax for ax in fig.axes if ax.axison and ax.get_title()]) == figures.MAX_PANELS
    assert "16 of 25 panels" in fig._suptitle.get_text()
    plt.close(fig)


def test_interactions_cover_every_factor_pair_in_config_order(tables):
    fig = figures.interaction_heatmaps(tables["interactions"])
    titles = {ax.get_title() for ax in fig.axes}
    assert {f"{a} × {b}" for a, b in combinations(FACTORS, 2)} <= titles
    first = next(ax for ax in fig.axes if ax.get_title() == "initializer × activation")
    assert [t.get_text() for t in first.get_yticklabels()] == CONFIG["grid"]["initializer"]
    plt.close(fig)


def test_one_colour_per_level_across_figures(study, tables):
    curves = figures.learning_curves(study.full_curves, FACTORS)
    effects = figures.main_effects_plot(tables["main_effects"])
    sigmoid = matplotlib.colors.to_hex(figures.level_color("activation", "sigmoid"))
    line_colors = {matplotlib.colors.to_hex(line.get_color()) for ax in curves.axes for line in ax.lines}
    dot_colors = {matplotlib.colors.to_hex(line.get_color()) for ax in effects.axes for line in ax.lines}
    assert sigmoid in line_colors and sigmoid in dot_colors
    assert figures.level_color("activation", "sigmoid") != figures.level_color("activation", "relu")
    plt.close("all")


def test_delta_heatmaps_mark_the_clipped_scale_and_use_labelled_probes(study):
    cells = figures.contrasting_cells(study.runs, FACTORS)
    labels = [label for label, _ in cells]
    assert labels[0].startswith("best #1") and any(label.startswith("worst") for label in labels)
    assert any("most vanishing" in label for label in labels)
    assert any("most exploding" in label for label in labels)
    fig = figures.delta_heatmaps(study.diagnostics, cells)
    assert "clipped" not in fig._suptitle.get_text()  # few distinct values: nothing beyond the 2nd-98th
    plt.close(fig)
    outlier = study.diagnostics.copy()
    outlier.loc[outlier.index[:5], "delta_rms"] = 1e6
    fig = figures.delta_heatmaps(outlier, cells)
    assert "clipped at the 2nd-98th percentile" in fig._suptitle.get_text()
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert ticks[:3] == ["init", "step 1", "ep 1"]
    plt.close(fig)


def test_saturated_and_inactive_never_share_a_panel(study):
    fig = figures.saturation_dead(study.diagnostics)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert "relu: inactive (u < 0)" in titles and "sigmoid: saturated (f' < 5% max)" in titles
    assert not any("inactive" in t and "saturated" in t for t in titles)
    plt.close(fig)


def test_learning_curves_carry_diverged_runs_and_say_so(study):
    fig = figures.learning_curves(study.full_curves, FACTORS)
    assert "2 diverged at chance" in fig._suptitle.get_text()  # sgd+sigmoid+he_normal seed 1, both regularizers
    per_epoch = study.full_curves.groupby("epoch").size()
    assert per_epoch.nunique() == 1  # every run present at every epoch
    plt.close(fig)
    loss = figures.loss_curves(study.curves, FACTORS)
    assert "left out: 2 runs" in loss._suptitle.get_text()
    plt.close(loss)


def test_convergence_ecdf_counts_misses(tables):
    per_run = figures.epochs_to_threshold(tables["curves"], 0.9, FACTORS)
    sigmoid = per_run[per_run["activation"] == "sigmoid"]
    assert sigmoid["epochs"].isna().all() and len(sigmoid) == 16
    fig = figures.convergence_ecdf(tables["curves"], [0.9, 0.5], FACTORS)
    legend = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert "sigmoid (0/16)" in legend
    _assert_labelled(fig)


def test_figure_functions_survive_empty_tables(tables):
    for fig in [
        figures.status_overview(tables["status_counts"].iloc[:0]),
        figures.interaction_heatmaps(tables["interactions"].iloc[:0]),
        figures.paired_delta_forest(tables["paired_deltas"].iloc[:0]),
        figures.variance_bars(tables["variance_decomposition"].iloc[:0]),
        figures.leaderboard_plot(tables["leaderboard"].iloc[:0]),
        figures.flow_classes(tables["gradient_flow"].iloc[:0]),
        figures.delta_percentiles(tables["diagnostics"].drop(columns=["delta_p05"])),
    ]:
        assert fig.axes[0].get_title()
        plt.close(fig)


# --- aggregation -------------------------------------------------------------------------------------
def test_a_broken_run_json_names_its_file(tmp_path):
    run = tmp_path / "runs" / "initializer~x" / "seed~0"
    run.mkdir(parents=True)
    (run / "run.json").write_text('{"cell": garbage\n')
    with pytest.raises(aggregate.BrokenRunError, match=re.escape(str(run / "run.json"))):
        aggregate.read_run(run, {})
    (run / "run.json").write_text('{"cell": {}}')
    with pytest.raises(aggregate.BrokenRunError, match="lacks spec, summary"):
        aggregate.read_run(run, {})


def test_a_diverged_probe_gives_no_unit_fractions(tables):
    one = tables["diagnostics"].query(
        "initializer == 'he_normal' and activation == 'relu' and optimizer == 'adam' "
        "and regularizer == 'none' and seed == 0"
    )[sorted(figures.DIAGNOSTIC_COLUMNS)]
    nan_net = one.copy()
    later = nan_net["step"] >= 20
    nan_net.loc[later, ["grad_w_norm", "delta_rms", "act_std"]] = np.nan
    measures = diagnostics.run_measures(nan_net, diverged=True)
    assert np.isnan(measures["dead_frac_final"]) and measures["health_final"] == "diverged"
    assert measures["dead_frac_epoch1"] == pytest.approx(0.05) and np.isnan(measures["saturated_frac_epoch1"])
    assert measures["inactive_frac_epoch1"] == pytest.approx(0.5)
    assert aggregate.steps_per_epoch(one) == 10


# --- registry, captions, Snakemake report wiring ---------------------------------------------------
def test_figure_registry_matches_rules_and_captions():
    smk = (REPO / "workflow/rules/report.smk").read_text()
    analysis_smk = (REPO / "workflow/rules/analysis.smk").read_text()
    assert "registry.FIGURES" in smk and "registry.REPORT_TABLES" in analysis_smk  # one list, no copy in a rule
    assert "registry.analysis_table_names" in analysis_smk
    for spec in registry.FIGURES:
        assert spec.section in registry.SECTION_TITLES
        rst = REPO / "workflow/report" / f"{spec.name}.rst"
        assert rst.read_text() == registry.caption_rst(spec), f"{rst} is out of date: run report.write_captions"
        assert "(" in spec.caption and len(spec.caption) > 120, f"caption of {spec.name} lacks units or reading help"
    for name in registry.REPORT_TABLES:
        rst = REPO / "workflow/report" / f"table_{name}.rst"
        assert rst.read_text() == report.table_caption_rst(name), f"{rst} is out of date: run report.write_captions"
    titles = [s.title for s in registry.SECTIONS]
    assert titles == sorted(titles), "section titles must sort in page order (zero-padded numbers)"
    assert (REPO / "workflow/report/workflow.rst").exists()


def test_table_columns_are_documented(tables):
    for name, table in registry.TABLES.items():
        documented = table.columns
        if name not in tables:
            continue
        generic = {c for c in documented if c.startswith("<") or "<" in c}
        plain = [c for c in documented if c not in generic]
        assert set(plain) <= set(tables[name].columns), name
        extra = set(tables[name].columns) - set(plain)
        assert not extra or generic, f"{name}: undocumented columns {extra}"


# --- the HTML page ---------------------------------------------------------------------------------
def _write_tables(tables: dict[str, pd.DataFrame], folder: Path, config: dict) -> Path:
    """The base tables and, as rule analyze writes them, the analysis tables."""
    studied, nuisance = report.study_factors(config, tables["runs"])
    tables = tables | analysis.study_tables(
        tables["runs"],
        studied + nuisance,
        config["report"]["baselines"],
        nuisance,
        curves=tables.get("curves"),
        settings=registry.study_settings(config),
    )
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        frame.to_parquet(folder / f"{name}.parquet", index=False)
    return folder


def _check_page(page: str) -> None:
    text = re.sub(r"<[^>]+>", " ", page).lower()
    missing = [name for name, pattern in SECTION_PATTERNS.items() if not re.search(pattern, text)]
    assert not missing, f"report lacks sections {missing}"
    for key, _ in report.SECTIONS:
        body = re.search(rf'<section id="{key}">(.*?)</section>', page, flags=re.S)
        assert body, f"section {key} missing"
        content = re.sub(r"<h2>.*?</h2>", "", body.group(1), flags=re.S)
        assert len(re.sub(r"<[^>]+>|\s", "", content)) > 50 or "<img" in content, f"section {key} is empty"
    answer = re.search(r'<div class="answer" id="answer">(.*?)<p class="caveat">', page, flags=re.S)
    assert answer and "At initialization" in answer.group(1) and "Best recipe" in answer.group(1), "no answer"
    assert "Gradients at initialization (distinct networks)" in page and 'href="#fig-' in answer.group(1)
    assert page.index('id="answer"') < page.index('id="fig-'), "the answer must come before the figures"
    assert "Budget: at most" in page
    assert "nan to" not in text and "+nan" not in text
    for spec in registry.FIGURES:
        assert f'id="fig-{spec.name}"' in page, f"figure {spec.name} missing"
    images = re.findall(r'<img[^>]+src="([^"]+)"', page)
    assert len(images) == len(registry.FIGURES)
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert page.lower().count("<script") == 1 and "table.sortable" in page  # only the per-run table's sorting
    assert '<table class="sortable">' in page  # every run, readable without the script
    assert "<details>" in page and "Configuration used" in page


@pytest.fixture(scope="module")
def synthetic_report(tmp_path_factory) -> Path:
    """The report of the synthetic study, built once (from the base tables only: analysis computed)."""
    where = tmp_path_factory.mktemp("synthetic-report")
    run_json = where / "run.json"
    run_json.write_text('{"provenance": {"git_commit": "abc1234", "device": "CPU", "versions": {"keras": "3"}}}')
    out = where / "report" / "index.html"
    report.build(_write_tables(synthetic_tables(), where / "tables", CONFIG), CONFIG, out, run_jsons=[run_json])
    return out


def test_report_from_synthetic_tables(synthetic_report):
    out = synthetic_report
    page = out.read_text(encoding="utf-8")
    _check_page(page)
    assert "abc1234" in page and "keras 3" in page
    assert "sigmoid" in page and "95% CI" in page
    answer = re.search(r'<div class="answer" id="answer">(.*?)<p class="caveat">', page, flags=re.S).group(1)
    # relu: healthy with glorot_uniform, exploding with he_normal (half and half): not "alive", and never mixed
    said = re.search(
        r"Gradients at initialization, activation: no level keeps most runs healthy; the closest is relu "
        r"\((\d+) of (\d+) healthy, (\d+) exploding; median",
        html.unescape(page),
    )
    healthy, n, exploding = map(int, said.groups())
    assert healthy == exploding and n == 2 * healthy  # distinct networks only: the optimizer cannot act yet
    assert "Budget: at most 3 epochs on 2500 training images, batch 128" in page
    assert "Convergence speed, activation: relu learns fastest" in html.unescape(page) and "Best recipe" in answer
    assert "Most exploding cell at initialization" in page
    assert sorted(p.stem for p in (out.parent / "figures").glob("*.png")) == sorted(s.name for s in registry.FIGURES)


def test_report_with_nuisance_axis_shows_chosen_values(tmp_path):
    base = synthetic_tables(extra_axis={"learning_rate": [0.1, 0.01]})
    # the larger learning rate validates better, but tests worse: the choice must follow validation
    lr01 = base["runs"]["learning_rate"] == 0.1
    base["runs"].loc[lr01, "best_val_accuracy"] += 0.1
    base["runs"].loc[lr01, "test_accuracy"] -= 0.1
    config = CONFIG | {
        "grid": CONFIG["grid"] | {"learning_rate": [0.1, 0.01]},
        "report": CONFIG["report"] | {"nuisance": ["learning_rate"]},
    }
    tables_dir = _write_tables(base, tmp_path / "tables", config)
    out = tmp_path / "index.html"
    report.build(tables_dir, config, out)
    page = out.read_text(encoding="utf-8")
    _check_page(page)
    assert "Nuisance axes (learning_rate)" in page and "0.1 (32×)" in page
    chosen = analysis.study_tables(base["runs"], [*FACTORS, "learning_rate"], BASELINES, ["learning_rate"])
    assert (chosen["nuisance_choices"]["chosen_learning_rate"] == "0.1").all()


@pytest.mark.integration  # not a pipeline run, but slow (about a minute): 1152 synthetic runs
def test_report_size_stays_small_for_the_default_grid(tmp_path):
    """The full default grid (4 x 6 x 4 x 4 cells x 3 seeds, 10 epochs, 5+1 layers) stays far below 15 MB."""
    default = yaml.safe_load((REPO / "config.yaml").read_text())
    grid = default["grid"]
    rng = np.random.default_rng(1)
    keys = pd.DataFrame(list(product(*grid.values(), default["seeds"])), columns=[*grid, "seed"])
    n = len(keys)
    acc = rng.uniform(0.1, 0.98, n)
    runs = keys.assign(
        status=np.where(acc < 0.5, "stalled", "converged"),
        test_accuracy=acc,
        test_loss=1 - acc,
        best_val_accuracy=acc,
        best_epoch=5.0,
        epochs_run=10,
        epochs_to_target=pd.array(np.where(acc > 0.95, 4, np.nan), dtype="Float64"),
        train_seconds=60.0,
        samples_per_second=3000.0,
        vanishing_ratio_init=10 ** rng.normal(-1, 1, n),
        vanishing_ratio_final=10 ** rng.normal(-1, 1, n),
        saturated_frac_epoch1=rng.random(n),
        inactive_frac_epoch1=rng.random(n),
        dead_frac_epoch1=rng.random(n) / 5,
        probe_seconds=1.0,
        steps_per_epoch=430,
        health_init=rng.choice(outcomes.HEALTH_CLASSES, n),
        health_final=rng.choice(outcomes.HEALTH_CLASSES, n),
    )
    epochs = np.arange(1, 11)
    curves = keys.loc[keys.index.repeat(10)].assign(
        epoch=np.tile(epochs, n), val_accuracy=rng.random(n * 10), loss=rng.random(n * 10)
    )
    probes = [(0, 0.0, "init"), (1, 0.0, "early"), (10, 0.02, "early"), (100, 0.2, "early")] + [
        (430 * e, float(e), "epoch") for e in epochs
    ]
    layers = np.arange(1, 7)
    d = keys.loc[keys.index.repeat(len(probes) * 6)].reset_index(drop=True)
    m = len(d)
    d = d.assign(
        step=np.tile(np.repeat([p[0] for p in probes], 6), n),
        epoch=np.tile(np.repeat([p[1] for p in probes], 6), n),
        phase=np.tile(np.repeat([p[2] for p in probes], 6), n),
        layer=np.tile(layers, n * len(probes)),
        layer_kind=np.tile(["hidden"] * 5 + ["output"], n * len(probes)),
        grad_w_norm=10 ** rng.normal(-1, 1, m),
        delta_norm=10 ** rng.normal(-1, 1, m),
        saturated_frac=rng.random(m),
        dead_frac=rng.random(m) / 5,
        delta_rms=10 ** rng.normal(-1, 1, m),
        update_ratio=10 ** rng.normal(-3, 1, m),
        act_mean=rng.random(m),
        act_std=rng.random(m),
        act_p05=rng.random(m),
        act_p50=rng.random(m),
        act_p95=rng.random(m),
        delta_p05=rng.random(m),
        delta_p50=rng.random(m),
        delta_p95=rng.random(m),
        inactive_frac=rng.random(m),
    )
    config = default | {"report": default["report"]}
    tables_dir = _write_tables({"runs": runs, "curves": curves, "diagnostics": d}, tmp_path / "tables", config)
    out = tmp_path / "index.html"
    report.build(tables_dir, config, out)
    size_mb = out.stat().st_size / 1e6
    print(f"default-grid report: {n} runs, {size_mb:.1f} MB")
    assert size_mb < 15
    _check_page(out.read_text(encoding="utf-8"))


# --- headless Chromium -----------------------------------------------------------------------------
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1200,3000",
    "--enable-logging=stderr",
    "--v=0",
]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not found:
        message = (
            "headless Chromium not found: install it with "
            "`apt-get update && apt-get install -y --no-install-recommends chromium`"
        )
        if os.environ.get("GRADATLAS_REQUIRE_CHROMIUM") == "1":
            pytest.fail(message + " (GRADATLAS_REQUIRE_CHROMIUM=1)")
        pytest.skip(message)
    return found


def screenshot(page: Path, png: Path, profile: Path) -> str:
    """Render `page` to `png` in headless Chromium; returns its log, fails on a page error."""
    proc = subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={png}", page.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=180,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    # the console, network and renderer errors of the page (dbus/GPU noise of the headless host is not)
    page_errors = [line for line in log.splitlines() if re.search(r"CONSOLE|Uncaught|net::ERR_|Failed to load", line)]
    assert not page_errors, "\n".join(page_errors)
    assert png.exists() and png.stat().st_size > 10_000, log[-2000:]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return log


def test_report_renders_in_headless_chromium(synthetic_report, tmp_path):
    binary = chromium()
    png = tmp_path / "screenshot.png"
    screenshot(synthetic_report, png, tmp_path / "chromium-profile")
    # a page that is mostly one colour would mean nothing rendered: the PNG of a rendered report is large
    assert png.stat().st_size > 50_000, f"{binary} rendered an almost empty page"


# --- the real pipeline -----------------------------------------------------------------------------
@pytest.mark.integration
def test_small_study_report_and_snakemake_report(small_study):
    ws = small_study
    page = (ws / "results/report/index.html").read_text(encoding="utf-8")
    _check_page(page)
    assert (ws / "results/report/index.html").stat().st_size < 15e6
    for name in registry.ANALYSIS_TABLES:
        frame = pd.read_parquet(ws / f"results/tables/{name}.parquet")
        assert (ws / f"results/tables/{name}.csv").exists()
        plain = [c for c in registry.TABLES[name].columns if "<" not in c]
        assert set(plain) <= set(frame.columns), f"{name}: missing documented columns"
        assert len(frame), f"{name} is empty"
    for spec in registry.FIGURES:
        assert (ws / f"results/report/figures/{spec.name}.png").stat().st_size > 1000
    effects = pd.read_parquet(ws / "results/tables/main_effects.parquet")
    acc = effects[(effects.outcome == "test_accuracy") & (effects.factor == "optimizer")].set_index("level")["mean"]
    assert acc["adam"] > acc["sgd"], "adam should beat plain sgd after 2 epochs"
    run_snakemake(ws, "--cores", "1", "--configfile", "test.yaml", "--report", "report.zip", timeout=600)
    # every config value the report shows is a tracked param: renaming the study rebuilds the report
    plan = run_snakemake(ws, "-n", "--configfile", "test.yaml", "--config", "study=renamed", timeout=600).stdout
    assert re.search(r"^report\s+1$", plan, flags=re.M) and "Params have changed" in plan, plan[-2000:]
    with zipfile.ZipFile(ws / "report.zip") as archive:
        names = archive.namelist()
    assert sum(name.endswith(".png") for name in names) >= len(registry.FIGURES), names[:20]
    assert sum(name.endswith(".csv") for name in names) >= len(registry.REPORT_TABLES), names
    assert any(name.endswith("findings.html") for name in names), names


# --- the study presets' pages share the HTML layer -----------------------------------------------------
def test_study_preset_page_uses_the_shared_autoescaped_layer(tmp_path, monkeypatch):
    from gradatlas import page
    from gradatlas.studies import report as study_report

    def section(config, inputs):
        body = page.render(
            "<p>What was run: {{ what }}</p>{{ table }}",
            what="<script>x</script> & more",
            table=page.table(pd.DataFrame({"a": [np.float64(0.123456), np.nan]})),
        )
        return body, {"reproduced": np.bool_(True), "ratio": np.float64(2.5), "rows": pd.DataFrame({"k": [1]})}

    monkeypatch.setitem(study_report.SECTIONS, "depth_init", ("Init at depth <He>", section))
    config = {"study": "s<1>", "seeds": [0], "preset": {"name": "depth_init"}}
    monkeypatch.setattr(study_report, "settings", lambda c: {"name": "depth_init"})
    out, verdict = tmp_path / "study.html", tmp_path / "study.json"
    study_report.render(config, {}, out, verdict)
    text = out.read_text()
    assert "<script>x" not in text and "&lt;script&gt;x&lt;/script&gt; &amp; more" in text
    assert "Study preset: Init at depth &lt;He&gt;" in text and "<code>s&lt;1&gt;</code>" in text
    assert "<tr><td>0.123</td></tr><tr><td>–</td></tr>" in text.replace("\n", "")  # NaN reads –
    record = json.loads(verdict.read_text())
    assert record["ratio"] == 2.5 and record["rows"] == [{"k": 1}] and record["verdict"]


def test_docs_name_every_analysis_column_and_section():
    doc = (REPO / "docs/report.md").read_text()
    readme = (REPO / "README.md").read_text()
    for name, table in registry.TABLES.items():
        assert f"`{name}`" in doc and f"`{name}`" in readme, name
        for column in table.columns:
            assert f"`{column}`" in doc, f"docs/report.md does not describe {name}.{column}"
    for section in registry.SECTIONS:
        assert section.title.split(". ", 1)[1].split(":")[0].lower() in doc.lower(), section.title
    for outcome in analysis.OUTCOMES:
        assert f"`{outcome}`" in doc, outcome


@pytest.mark.integration
def test_a_study_over_optional_axes_with_nulls_and_a_nuisance_axis_reports_end_to_end(tmp_path, mnist_dir):
    """The reported crash (KeyError (..., 'inverse_time', nan)): learning_rate, lr_schedule and clipnorm
    with a null value, learning_rate as nuisance, through training, analysis and report."""
    from conftest import make_workspace, write_config

    ws = make_workspace(tmp_path / "optional")
    overlay = {
        "study": "optional-axes",
        "data": {"source": "idx", "path": str(mnist_dir), "validation_size": 500, "train_subset": 2000},
        "model": {"depth": 2, "width": 16},
        "train": {"epochs": 2, "threads": 1},
        "diagnostics": {"probe_size": 200, "early_steps": [1]},
        "grid": {
            "initializer": ["he_normal"],
            "activation": ["sigmoid", "relu"],
            "optimizer": ["sgd"],
            "regularizer": ["none"],
            "learning_rate": [0.01, 0.1],
            "lr_schedule": ["constant", "inverse_time"],
            "clipnorm": [None, 0.5],
        },
        "seeds": [0],
        "report": {"nuisance": ["learning_rate"]},
    }
    config = write_config(ws, overlay)
    run_snakemake(ws, "--cores", "2", "--configfile", str(config), timeout=1200)
    page = (ws / "results/report/index.html").read_text(encoding="utf-8")
    _check_page(page)
    choices = pd.read_csv(ws / "results/tables/nuisance_choices.csv")
    assert set(choices["chosen_learning_rate"].astype(str)) <= {"0.01", "0.1"}
    levels = pd.read_csv(ws / "results/tables/main_effects.csv", keep_default_na=False)
    assert set(levels.query("factor == 'clipnorm'")["level"]) == {"none", "0.5"}
    assert set(levels.query("factor == 'lr_schedule'")["level"]) == {"constant", "inverse_time"}
