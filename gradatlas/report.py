"""The study's report: one self-contained HTML file (figures embedded as PNG), readable offline and
without JavaScript, in the sections of `registry.SECTIONS`, opening on the answer to the study's
question (`analysis.headline`) with the budget it holds for.

`build` writes every figure of `registry.FIGURES` as a PNG (the files Snakemake's own report picks
up), the findings as an HTML fragment for Snakemake's report, and the page that embeds them. Inputs:
the tables in `results/tables/` (the aggregate tables and those of `rule analyze`: the report derives
no outcome itself) and the config values the report shows (`registry.study_settings`), which
the report rule tracks as `params:`. Provenance comes from the runs' `run.json`.
"""

from __future__ import annotations

import json
from collections import Counter
from importlib import metadata
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import yaml

from gradatlas import analysis, figures, grid, page
from gradatlas.files import atomic_write
from gradatlas.outcomes import HEALTH_CLASSES, HEALTH_RULES
from gradatlas.provenance import git_commit
from gradatlas.registry import (
    ANALYSIS_TABLES,
    FIGURES,
    REPORT_TABLES,
    SECTIONS,
    TABLES,
    caption_rst,
    rst_text,
    study_settings,
)

DPI = 120  # with figures at most figures.PAGE_WIDTH_IN wide, text stays >= 9 pt at page width
PAGE_WIDTH_PX = 1150  # the page's content width (CSS max-width minus padding)

__all__ = ["build", "render_html", "caption_rst", "SECTIONS", "DPI"]


# --- inputs -----------------------------------------------------------------------------------------
def load_tables(tables_dir: Path) -> dict[str, pd.DataFrame]:
    """Every parquet table in `tables_dir`, by file stem."""
    return {p.stem: pd.read_parquet(p) for p in sorted(Path(tables_dir).glob("*.parquet"))}


def study_factors(config: dict, runs: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(studied axes, nuisance axes): every grid axis in `runs` (FACTORS first), nuisance ones apart."""
    axes = [a for a in grid.axes(config) if a in runs.columns]
    nuisance = [a for a in config.get("report", {}).get("nuisance", []) if a in axes]
    return [a for a in axes if a not in nuisance], nuisance


def level_order(config: dict, axes: list[str], runs: pd.DataFrame) -> dict[str, list[str]]:
    """Each axis's levels as labels, in the config's order (then any other level seen in the data)."""
    values = config.get("grid", {})
    order = {}
    for axis in axes:
        levels = [analysis.level_label(v) for v in values.get(axis, [])]
        seen = [analysis.level_label(v) for v in dict.fromkeys(runs[axis])] if axis in runs else []
        order[axis] = list(dict.fromkeys(levels + seen))
    return order


def provenance(run_jsons: list[Path]) -> dict:
    """What the runs recorded about where and with what they ran, summarised over all runs."""
    records = []
    for path in run_jsons:
        try:
            records.append(json.loads(Path(path).read_text()))
        except (OSError, ValueError):
            continue
    prov = [r.get("provenance", {}) for r in records]

    def distinct(values):
        counts = Counter(v for v in values if v not in (None, ""))
        return ", ".join(f"{v} ({n} runs)" if len(counts) > 1 else str(v) for v, n in counts.most_common()) or "unknown"

    versions = Counter(json.dumps(p.get("versions", {}), sort_keys=True) for p in prov)
    started = [r.get("started") for r in records if r.get("started")]
    finished = [r.get("finished") for r in records if r.get("finished")]
    return {
        "git commit of the runs": distinct(p.get("git_commit") for p in prov),
        "git commit of this report": git_commit(),
        "device": distinct(p.get("device") for p in prov),
        "hostname": distinct(p.get("hostname") for p in prov),
        "backend": distinct(p.get("backend") for p in prov),
        "threads per training": distinct(str(p.get("threads")) for p in prov if p.get("threads") is not None),
        "library versions (runs)": "; ".join(
            ", ".join(f"{k} {v}" for k, v in json.loads(vs).items()) + (f" ({n} runs)" if len(versions) > 1 else "")
            for vs, n in versions.most_common()
        )
        or "unknown",
        "library versions (report)": ", ".join(
            f"{name} {_version(name)}" for name in ("pandas", "statsmodels", "matplotlib", "seaborn", "jinja2")
        ),
        "first run started": min(started) if started else "unknown",
        "last run finished": max(finished) if finished else "unknown",
        "run.json files read": str(len(records)),
    }


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


class Study:
    """The frames the report draws from, as rule analyze wrote them: the chosen runs with every derived
    outcome (`chosen_runs`) and their completed validation curves; the curves and diagnostics tables
    narrowed to those runs (levels labelled as in `chosen_runs`)."""

    def __init__(self, tables: dict[str, pd.DataFrame], config: dict):
        self.config = config
        self.settings = study_settings(config)
        self.studied, self.nuisance = study_factors(config, tables["runs"])
        axes = self.studied + self.nuisance
        self.runs = tables["chosen_runs"]
        self.full_curves = tables["completed_curves"]

        def chosen(name):
            return analysis.chosen_rows(
                analysis.label_levels(tables[name], axes), self.runs, self.studied, self.nuisance
            )

        self.curves = chosen("curves") if "curves" in tables else None
        self.diagnostics = chosen("diagnostics") if "diagnostics" in tables else pd.DataFrame()
        self.order = level_order(config, axes, tables["runs"])
        self.tables = tables


def require_analysis(tables: dict[str, pd.DataFrame], tables_dir: Path) -> dict[str, pd.DataFrame]:
    """`tables`, after checking that the analysis tables (rule analyze's outputs, the one place they
    are computed) are among them."""
    missing = [name for name in ANALYSIS_TABLES if name not in tables]
    if missing:
        raise FileNotFoundError(
            f"{tables_dir}: analysis tables missing ({', '.join(missing)}); they are rule analyze's outputs: "
            "run snakemake (or gradatlas.analysis.study_tables) first"
        )
    return tables


# --- figures --------------------------------------------------------------------------------------
def make_figures(study: Study) -> dict[str, callable]:
    """Every figure of `registry.FIGURES`, by name, as callables returning a matplotlib Figure."""
    t, s = study.tables, study
    figures.use_levels(s.order)
    target = s.settings.get("target_accuracy")
    relative = float(s.runs["relative_target"].iloc[0]) if "relative_target" in s.runs and len(s.runs) else None
    reached = pd.to_numeric(s.runs.get("epochs_to_target"), errors="coerce").notna().any() if len(s.runs) else False
    # the configured target only when some run reached it (else its panels are empty; the text says so)
    thresholds = [(f"target {target:g}", target)] if target and reached else []
    if relative is not None and np.isfinite(relative):
        thresholds.append(
            (f"relative target {relative:.3f} ({analysis.RELATIVE_TARGET:.0%} of the best run)", relative)
        )
    facets = tuple(f for f in ("optimizer", "regularizer") if f in s.studied)
    makers = {
        "status": lambda: figures.status_overview(t["status_counts"]),
        "flow_classes": lambda: figures.flow_classes(t["gradient_flow"]),
        "gradient_flow": lambda: figures.gradient_flow(s.diagnostics),
        "convergence": lambda: figures.convergence_ecdf(s.curves, thresholds, s.studied),
        "atlas": lambda: figures.accuracy_atlas(s.runs, facets=facets),
        "interactions": lambda: figures.interaction_heatmaps(t["interactions"]),
        "main_effects": lambda: figures.main_effects_plot(t["main_effects"]),
        "paired_deltas": lambda: figures.paired_delta_forest(t["paired_deltas"]),
        "variance": lambda: figures.variance_bars(t["variance_decomposition"]),
        "delta_heatmaps": lambda: figures.delta_heatmaps(s.diagnostics, figures.contrasting_cells(s.runs, s.studied)),
        "delta_percentiles": lambda: figures.delta_percentiles(s.diagnostics),
        "activation_percentiles": lambda: figures.activation_percentiles(s.diagnostics),
        "saturation": lambda: figures.saturation_dead(s.diagnostics),
        "update_ratio": lambda: figures.update_ratio(s.diagnostics),
        "learning_curves": lambda: figures.learning_curves(s.full_curves, s.studied),
        "loss_curves": lambda: figures.loss_curves(s.curves, s.studied),
        "leaderboard": lambda: figures.leaderboard_plot(t["leaderboard"]),
    }
    assert list(makers) == [spec.name for spec in FIGURES], "report.make_figures and registry.FIGURES disagree"
    return makers


_MAKERS: dict = {}  # the figure makers of the report being built, for forked worker processes


def _render(name: str, fig_dir: Path) -> Path:
    fig = _MAKERS[name]()
    path = Path(fig_dir) / f"{name}.png"
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=DPI, bbox_inches="tight"))
    plt.close(fig)
    return path


def write_figures(study: Study, fig_dir: Path, workers: int = 1) -> dict[str, Path]:
    """Render every figure to `fig_dir/<name>.png` (with `workers` processes: rendering is most of
    the report's time); returns the paths by name."""
    import multiprocessing
    from functools import partial

    fig_dir = Path(fig_dir)
    fig_dir.mkdir(parents=True, exist_ok=True)
    _MAKERS.clear()
    _MAKERS.update(make_figures(study))
    names = list(_MAKERS)
    render = partial(_render, fig_dir=fig_dir)
    if workers > 1:
        # forked workers share the study and the makers (closures cannot be pickled)
        with multiprocessing.get_context("fork").Pool(min(workers, len(names))) as pool:
            paths = pool.map(render, names, chunksize=1)
    else:
        paths = [render(name) for name in names]
    return dict(zip(names, paths))


# --- tables as the reader sees them ---------------------------------------------------------------
def with_interval(frame: pd.DataFrame, mean: str, n: str, fmt: str = "+.3f", label: str = "95% CI") -> pd.DataFrame:
    """`frame` with ci_low / ci_high replaced by one readable column ('a to b, n=N' or 'n/a, n=N')."""
    if frame.empty:
        return frame
    text = [
        analysis.format_ci(lo, hi, k, fmt).removeprefix("95% CI ")
        for lo, hi, k in zip(frame["ci_low"], frame["ci_high"], frame[n])
    ]
    out = frame.drop(columns=["ci_low", "ci_high"])
    out.insert(list(out.columns).index(mean) + 1, label, text)
    return out


def flow_view(flow: pd.DataFrame, when: str) -> pd.DataFrame:
    """The gradient_flow table as the reader sees it: verdict shares as percentages (classes that no
    level has left out), the median ratio as 10^x, the distance with its interval."""
    sub = flow[flow["when"] == when].sort_values(["factor", "rank"], kind="stable")
    if sub.empty:
        return sub
    shares = [f"share_{c}" for c in HEALTH_CLASSES if sub[f"share_{c}"].fillna(0).gt(0).any()]
    view = sub.assign(
        **{"median ratio": sub["median_log10_ratio"].map(analysis.power_of_ten)},
        **{c: sub[c].map(lambda v: "–" if pd.isna(v) else f"{v:.0%}") for c in shares},
    )
    view = with_interval(view, "mean_distance", "n", "+.2f")
    keep = ["factor", "level", "rank", "keeps_alive", "n", *shares, "median ratio", "mean_distance", "95% CI"]
    return view[keep].rename(columns={c: c.removeprefix("share_") for c in shares})


def convergence_view(conv: pd.DataFrame) -> pd.DataFrame:
    """The convergence table as shown: without the targets (in the text) and without all-empty columns
    (e.g. km_median_epochs when no level's runs reached the target in half its runs)."""
    if conv.empty:
        return conv
    view = with_interval(conv, "mean_val_auc", "n_auc")
    view = view.drop(columns=[c for c in ("target", "relative_target") if c in view])
    return view.loc[:, view.notna().any()]


# --- HTML -----------------------------------------------------------------------------------------
def _sentence_with_figure(sentence: str, figure: str | None):
    """A finding with a link to the figure that shows it."""
    if not isinstance(figure, str) or figure not in {spec.name for spec in FIGURES}:
        return sentence
    return page.render('{{ s }} <a href="#fig-{{ f }}">(figure)</a>', s=sentence, f=figure)


def _answer_row(r) -> tuple[str, str]:
    """(answer, difference) of one headline row, short."""
    if r.best is None or (isinstance(r.best, float) and np.isnan(r.best)):
        return "no effect possible at initialization (its levels start from the same networks)", "–"
    flow = r.question != analysis.QUESTIONS["speed"]

    def short(text: str) -> str:
        return text.split(";")[0]

    if r.tied:
        answer = f"tie: {r.best} = {r.runner_up} ({short(r.best_summary)})"
    elif flow:
        lead = f"{r.best} keeps them alive" if r.keeps_alive else f"none healthy in most runs; closest {r.best}"
        answer = f"{lead} ({short(r.best_summary)}); runner-up {r.runner_up} ({short(r.runner_up_summary)})"
    else:
        answer = f"{r.best} fastest ({short(r.best_summary)}); runner-up {r.runner_up} ({short(r.runner_up_summary)})"
    unit = "matched pairs" if r.paired else "runs, unpaired"
    return answer, analysis.format_estimate(r.effect, r.ci_low, r.ci_high, r.n, "+.2f" if flow else "+.3f", unit)


def _answer(tables, settings: dict) -> list:
    """The first screen: the answer in a few sentences with numbers, each linked to its figure (what
    keeps gradients alive and what kills them, the best recipe, the largest interaction, caveats),
    the budget, then one compact table per question and the per-factor sentences (collapsible)."""
    found, head = tables["findings"], tables["headline"]
    first = found[found["kind"].isin(analysis.FIRST_SCREEN)]
    inner = [
        page.bullet_list([_sentence_with_figure(r.sentence, r.figure) for r in first.itertuples()], "findings first")
    ]
    inner.append(page.tag("p", analysis.budget_sentence(settings), "caveat"))
    titles = {
        analysis.QUESTIONS["init"]: "Gradients at initialization (distinct networks)",
        analysis.QUESTIONS["final"]: "Gradients after training",
        analysis.QUESTIONS["speed"]: "Convergence speed (area under the validation curve)",
    }
    for question, title in titles.items():
        rows = head[head["question"] == question]
        if rows.empty:
            continue
        answers = [_answer_row(r) for r in rows.itertuples()]
        difference = (
            "difference in distance from healthy (|log10 ratio|)"
            if question != analysis.QUESTIONS["speed"]
            else "difference in area"
        )
        view = pd.DataFrame(
            {
                "factor": rows["factor"].to_numpy(),
                "answer": [a for a, _ in answers],
                f"{difference}, best − runner-up": [d for _, d in answers],
            }
        )
        inner += [page.tag("h3", title), page.table(view, max_rows=100, cls="answer")]
    if not len(head):
        inner.append(page.tag("p", "No factor has two levels with a value: nothing to compare.", "note"))
    else:
        inner.append(
            page.render(
                "<details><summary>Per factor, in words</summary>{{ items }}</details>",
                items=page.bullet_list(head["sentence"]),
            )
        )
    return [page.render('<div class="answer" id="answer">{% for b in blocks %}{{ b }}{% endfor %}</div>', blocks=inner)]


RUN_COLUMNS = (
    "status",
    "health_init",
    "health_final",
    "test_accuracy",
    "best_val_accuracy",
    "epochs_run",
    "vanishing_ratio_init",
    "vanishing_ratio_final",
    "saturated_frac_init",
    "dead_frac_final",
    "train_seconds",
)


def runs_view(runs: pd.DataFrame, axes: list[str]) -> pd.DataFrame:
    """One row per run: its cell, seed, status, verdicts and the measures behind them."""
    cols = [c for c in (*axes, "seed", *RUN_COLUMNS) if c in runs.columns]
    return runs[cols].reset_index(drop=True)


def render_html(study: Study, figure_paths: dict[str, Path], run_jsons: list[Path] = ()) -> str:
    """The report page, with the PNGs in `figure_paths` embedded."""
    tables, config = study.tables, study.config
    settings, runs, nuisance = study.settings, study.runs, study.nuisance
    found = tables["findings"]
    blocks: dict[str, list] = {s.key: [] for s in SECTIONS}

    def figs(section):
        return [
            page.figure(spec.name, spec.title, spec.caption, figure_paths[spec.name])
            for spec in FIGURES
            if spec.section == section and spec.name in figure_paths
        ]

    status = runs["status"].fillna("unknown").value_counts()
    tables_dir = f"{str(settings.get('results', 'results')).rstrip('/')}/tables"
    seconds = float(pd.to_numeric(runs.get("train_seconds"), errors="coerce").sum())
    values = settings.get("grid", {})
    facts = {
        "study": settings.get("study", ""),
        "grid": " × ".join(f"{len(v)} {a}" for a, v in values.items()) + f" × {settings.get('n_seeds')} seeds",
        "runs (after nuisance selection)": len(runs),
        " / ".join(analysis.STATUSES): " / ".join(str(int(status.get(s, 0))) for s in analysis.STATUSES),
        "training time (wall clock)": f"{seconds / 60:.1f} min ({seconds:.0f} s; runs trained together in a pack "
        "share its time)",
        "model": f"MLP 784 → {settings.get('depth')} × {settings.get('width')} → 10",
        "epochs (max) / target validation accuracy": f"{settings.get('epochs')} / {settings.get('target_accuracy')}",
        "baselines": ", ".join(f"{k}={v}" for k, v in settings.get("baselines", {}).items()),
        "nuisance axes": ", ".join(nuisance) or "none",
    } | provenance(list(run_jsons))
    blocks["overview"] += [
        page.tag(
            "p",
            "This report answers: which initializer, activation, optimizer and regularizer keep gradients "
            "alive and make the MLP converge fastest, and by how much. Every sentence is computed from the "
            f"tables ({tables_dir}/findings.csv, headline.csv), with 95% t-intervals and their n.",
        ),
        *_answer(tables, settings),
        *figs("overview"),
        page.tag("h3", "Study and provenance"),
        page.facts(facts),
        page.details(
            "Configuration used (click to expand)", yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
        ),
    ]
    if nuisance and analysis.NUISANCE_TABLE in tables:
        choices = tables[analysis.NUISANCE_TABLE]
        counts = "; ".join(
            f"{a}: " + ", ".join(f"{v} ({n}×)" for v, n in choices[f"chosen_{a}"].value_counts().items())
            for a in nuisance
            if f"chosen_{a}" in choices
        )
        blocks["overview"] += [
            page.tag(
                "p",
                f"Nuisance axes ({', '.join(nuisance)}) are optimized away: every cell × seed keeps the "
                f"value with the best validation accuracy (never test). Chosen values: {counts}.",
            ),
            page.table(choices, max_rows=20),
        ]
    flow = tables["gradient_flow"]
    blocks["gradient-flow"] += [
        page.tag(
            "p",
            "Each run gets a verdict at initialization and after training, from every diagnostic; the first "
            "that applies wins (docs/verdicts.md gives the known-answers panel behind the thresholds). "
            "Delta ratio = delta_rms at layer 1 / delta_rms at the output layer. A level's verdict is its "
            "share of runs per class, never the class of a median; levels rank by their share of healthy "
            "runs, then by the mean distance from healthy |log10 ratio|. At initialization each distinct "
            "network counts once: runs that differ only in what cannot act before the first update "
            "(optimizer, learning rate, schedule, clipping, penalties, dropout) are the same network.",
        ),
        page.bullet_list([f"{c}: {HEALTH_RULES[c]}" for c in HEALTH_CLASSES]),
        *figs("gradient-flow"),
        page.tag("h3", "At initialization"),
        page.table(flow_view(flow, "init"), max_rows=60),
        page.tag("h3", "After training (last probe)"),
        page.table(flow_view(flow, "final"), max_rows=60),
    ]
    conv = tables["convergence"]
    blocks["convergence"] += [
        page.bullet_list(found.loc[found["kind"] == "speed", "sentence"]),
        *figs("convergence"),
        page.tag(
            "h3",
            "Epochs to target per level (Kaplan-Meier medians, misses censored), steps, and the area "
            "under the validation curve",
        ),
        page.table(convergence_view(conv), max_rows=60),
    ]
    blocks["atlas"] += figs("atlas")
    deltas = tables["paired_deltas"]
    blocks["effects"] += [
        *figs("effects"),
        page.tag("h3", "Paired deltas on test accuracy"),
        page.table(
            with_interval(deltas[deltas["outcome"] == "test_accuracy"].drop(columns="outcome"), "mean_delta", "n_pairs")
        ),
    ]
    variance = tables["variance_decomposition"]
    blocks["variance"] += [
        page.bullet_list(found.loc[found["kind"] == "variance", "sentence"]),
        *figs("variance"),
        page.tag("h3", "ANOVA of test accuracy"),
        page.table(variance[variance["outcome"] == "test_accuracy"].drop(columns="outcome")),
        page.tag("h3", "Runs per status and level"),
        page.table(tables["status_counts"]),
    ]
    blocks["delta-time"] += [*figs("delta-time")]
    blocks["activations"] += [*figs("activations")]
    blocks["learning-curves"] += [*figs("learning-curves")]
    board = tables["leaderboard"]
    blocks["leaderboard"] += [
        page.tag("h3", "All findings"),
        page.bullet_list(found["sentence"]),
        *figs("leaderboard"),
        page.tag("h3", "Leaderboard: test accuracy"),
        page.table(
            with_interval(
                board[board["outcome"] == "test_accuracy"].drop(columns=["outcome", "health"]), "mean", "n_seeds"
            )
        ),
        page.tag(
            "h3",
            "Leaderboard: gradient flow at init (distinct networks; only cells with most seeds healthy can be best)",
        ),
        page.table(
            with_interval(
                board[board["outcome"] == "flow_distance_init"].drop(columns="outcome"), "mean", "n_seeds", "+.2f"
            )
        ),
    ]
    blocks["leaderboard"] += [
        page.tag("h3", "Every run (click a column to sort)"),
        page.sortable_table(runs_view(runs, study.studied + [f"chosen_{a}" for a in nuisance])),
    ]
    sections = [{"key": s.key, "title": s.title, "blocks": blocks[s.key]} for s in SECTIONS]
    study_name = settings.get("study", "")
    intro = [
        page.tag(
            "p",
            f"{len(runs)} runs, {settings.get('n_seeds')} seed(s) per cell. Generated by GradAtlas; "
            f"opens offline. Tables: {tables_dir}/*.csv.",
            "note",
        )
    ]
    return page.page(f"GradAtlas report: {study_name}", f"GradAtlas report: {study_name}", sections, intro)


def findings_fragment(tables: dict[str, pd.DataFrame], config: dict) -> str:
    """The answer, the budget and every finding, as a small page for Snakemake's report."""
    settings = study_settings(config)
    blocks = _answer(tables, settings) + [
        page.tag("h3", "All findings"),
        page.bullet_list(tables["findings"]["sentence"]),
    ]
    return page.page(
        f"Findings: {settings.get('study', '')}",
        f"Findings: {settings.get('study', '')}",
        [{"key": "findings", "title": "", "blocks": blocks}],
        nav=False,
    )


def build(
    tables_dir: Path,
    config: dict,
    out: Path,
    fig_dir: Path | None = None,
    run_jsons: list[Path] = (),
    findings_out: Path | None = None,
    workers: int = 1,
) -> None:
    """Write the figures (to `fig_dir`, default `<out dir>/figures`), the self-contained report `out`
    and, with `findings_out`, the findings page for Snakemake's report."""
    out = Path(out)
    tables = require_analysis(load_tables(tables_dir), tables_dir)
    study = Study(tables, config)
    paths = write_figures(study, Path(fig_dir) if fig_dir else out.parent / "figures", workers)
    html = render_html(study, paths, run_jsons)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda p: p.write_text(html, encoding="utf-8"))
    if findings_out:
        fragment = findings_fragment(tables, config)
        atomic_write(Path(findings_out), lambda p: p.write_text(fragment, encoding="utf-8"))


def table_caption_rst(name: str) -> str:
    """The RST caption of an analysis table in Snakemake's report: what a row is and every column."""
    columns = "\n".join(f"- ``{c}``: {rst_text(text)}" for c, text in TABLES[name].columns.items())
    return f"**Table {name}** (results/tables/{name}.csv). Columns:\n\n{columns}\n"


FINDINGS_CAPTION = (
    "**Findings.** The answer to the study's question per factor (which level keeps gradients alive, which "
    "converges fastest, with effect sizes, 95% t-intervals and n), the study's budget and caveats, and every "
    "finding, computed from the tables (results/tables/headline.csv and findings.csv).\n"
)


def write_captions(folder: Path) -> None:
    """Write every caption of Snakemake's report (figures, tables, findings) from the registries."""
    folder = Path(folder)
    for spec in FIGURES:
        (folder / f"{spec.name}.rst").write_text(caption_rst(spec))
    for name in REPORT_TABLES:
        (folder / f"table_{name}.rst").write_text(table_caption_rst(name))
    (folder / "findings.rst").write_text(FINDINGS_CAPTION)
