"""The study's report: one self-contained HTML file (figures embedded as PNG), readable offline and
without JavaScript, in ten sections (see `SECTIONS`).

`build` writes every figure of `figures.FIGURES` as a PNG (the files Snakemake's own report picks
up) and the HTML page that embeds them. Its inputs are the tables in `results/tables/`: the three
aggregate tables and, when present, the analysis tables written by `rule analyze` (otherwise they
are computed here). Provenance (versions, hardware, git commit) comes from the runs' `run.json`.
"""

from __future__ import annotations

import base64
import html
import json
import subprocess
from collections import Counter
from importlib import metadata
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import yaml

from gradatlas import analysis, figures
from gradatlas.files import atomic_write

FACTORS = ["initializer", "activation", "optimizer", "regularizer"]
SECTIONS = [
    ("overview", "1. Overview"),
    ("atlas", "2. The atlas"),
    ("effects", "3. Main effects and paired deltas"),
    ("variance", "4. Which technique matters most"),
    ("gradient-flow", "5. Gradient flow"),
    ("delta-time", "6. Error signal over layers and time"),
    ("saturation", "7. Saturation and dead units"),
    ("learning-curves", "8. Learning curves"),
    ("convergence", "9. Convergence speed: epochs to target"),
    ("leaderboard", "10. Leaderboard and findings"),
]
DPI = 80
CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1180px;margin:auto;padding:0 1em;
color:#222;line-height:1.45}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #0173b2;padding-bottom:.15em;margin-top:2em}
figure{margin:1em 0 2em 0}figure img{max-width:100%;height:auto;border:1px solid #ddd}
figcaption{color:#333;font-size:.92em;background:#f6f8fa;padding:.5em .8em;border-left:3px solid #0173b2}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0 1em 0}
th,td{border:1px solid #ccc;padding:.2em .5em;text-align:right}th{background:#eef2f6}
td:first-child,th:first-child{text-align:left}
.facts td{text-align:left}.note{color:#555;font-size:.9em}
nav ol{columns:2}details{margin:.5em 0}details pre{background:#f6f8fa;padding:.8em;overflow:auto;font-size:.85em}
ul.findings li{margin:.35em 0}
"""


# --- inputs -----------------------------------------------------------------------------------------
def load_tables(tables_dir: Path) -> dict[str, pd.DataFrame]:
    """Every parquet table in `tables_dir`, by file stem."""
    return {p.stem: pd.read_parquet(p) for p in sorted(Path(tables_dir).glob("*.parquet"))}


def study_factors(config: dict, runs: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(studied axes, nuisance axes) of the study: every grid axis in `runs`, nuisance ones apart."""
    grid_axes = FACTORS + [a for a in config.get("grid", {}) if a not in FACTORS]
    axes = [a for a in grid_axes if a in runs.columns]
    nuisance = [a for a in config.get("report", {}).get("nuisance", []) if a in axes]
    return [a for a in axes if a not in nuisance], nuisance


def provenance(run_jsons: list[Path], runs: pd.DataFrame) -> dict:
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
        "git commit of this report": _git_commit(),
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
            f"{name} {_version(name)}" for name in ("pandas", "statsmodels", "matplotlib", "seaborn")
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


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown (not a git checkout)"


def second_threshold(runs: pd.DataFrame, target: float) -> float | None:
    """A lower validation-accuracy threshold for the convergence figure when few runs reach `target`.

    None when at least 25% of runs reach the target; else the median best validation accuracy,
    rounded down to 0.05.
    """
    if runs.empty or runs["epochs_to_target"].notna().mean() >= 0.25:
        return None
    level = np.floor(float(runs["best_val_accuracy"].median()) * 20) / 20
    return level if 0 < level < target else None


# --- figures --------------------------------------------------------------------------------------
def make_figures(tables: dict[str, pd.DataFrame], config: dict) -> dict[str, "plt.Figure"]:
    """Every figure of `figures.FIGURES` from the tables, by name (lazily: a dict of callables)."""
    runs, studied, nuisance, curves, diagnostics = _study_frames(tables, config)
    target = float(config.get("train", {}).get("target_accuracy", 0.95))
    thresholds = [target] + [t for t in [second_threshold(runs, target)] if t is not None]
    facets = tuple(f for f in ("optimizer", "regularizer") if f in studied)
    return {
        "status": lambda: figures.status_overview(tables["status_counts"]),
        "atlas": lambda: figures.accuracy_atlas(runs, facets=facets),
        "interactions": lambda: figures.interaction_heatmaps(tables["interactions"]),
        "main_effects": lambda: figures.main_effects_plot(tables["main_effects"]),
        "paired_deltas": lambda: figures.paired_delta_forest(tables["paired_deltas"]),
        "variance": lambda: figures.variance_bars(tables["variance_decomposition"]),
        "gradient_flow": lambda: figures.gradient_flow(diagnostics),
        "delta_heatmaps": lambda: figures.delta_heatmaps(diagnostics, figures.contrasting_cells(runs, studied)),
        "saturation": lambda: figures.saturation_dead(diagnostics),
        "learning_curves": lambda: figures.learning_curves(curves, studied),
        "convergence": lambda: figures.convergence_ecdf(curves, thresholds, studied),
        "leaderboard": lambda: figures.leaderboard_plot(tables["leaderboard"]),
    }


def _study_frames(tables: dict[str, pd.DataFrame], config: dict):
    """(runs, studied axes, nuisance axes, curves, diagnostics), nuisance axes optimized away."""
    runs = tables["runs"]
    studied, nuisance = study_factors(config, runs)
    chosen = analysis.select_nuisance(runs, nuisance, studied)
    curves = analysis.chosen_rows(tables["curves"], chosen, studied, nuisance)
    diagnostics = analysis.chosen_rows(tables["diagnostics"], chosen, studied, nuisance)
    return chosen, studied, nuisance, curves, diagnostics


def with_analysis(tables: dict[str, pd.DataFrame], config: dict) -> dict[str, pd.DataFrame]:
    """`tables` plus the analysis tables `rule analyze` writes, computed here when absent."""
    needed = ["main_effects", "paired_deltas", "interactions", "variance_decomposition", "epochs_to_target",
              "status_counts", "leaderboard"]  # fmt: skip
    if all(name in tables for name in needed):
        return tables
    runs = tables["runs"]
    studied, nuisance = study_factors(config, runs)
    baselines = config.get("report", {}).get("baselines", {})
    return analysis.study_tables(runs, studied + nuisance, baselines, nuisance) | tables


def write_figures(tables: dict[str, pd.DataFrame], config: dict, fig_dir: Path) -> dict[str, Path]:
    """Render every figure to `fig_dir/<name>.png`; returns the paths by name."""
    fig_dir = Path(fig_dir)
    fig_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, make in make_figures(tables, config).items():
        fig = make()
        path = fig_dir / f"{name}.png"
        atomic_write(path, lambda p, f=fig: f.savefig(p, format="png", dpi=DPI, bbox_inches="tight"))
        plt.close(fig)
        paths[name] = path
    return paths


def caption_rst(spec: figures.FigureSpec) -> str:
    """The RST caption of a figure for Snakemake's report (workflow/report/<name>.rst)."""
    return f"**{spec.title}.** {spec.caption}\n"


# --- HTML -----------------------------------------------------------------------------------------
def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _figure(spec: figures.FigureSpec, path: Path) -> str:
    return (
        f'<figure id="fig-{spec.name}">{_img(path, spec.title)}<figcaption><b>{html.escape(spec.title)}.</b> '
        f"{html.escape(spec.caption)}</figcaption></figure>"
    )


def _table(frame: pd.DataFrame, max_rows: int = 40, digits: int = 3) -> str:
    if frame.empty:
        return '<p class="note">(empty)</p>'
    shown = frame.head(max_rows).copy()
    for column in shown.columns:
        if pd.api.types.is_float_dtype(shown[column]):
            shown[column] = shown[column].map(lambda v: "–" if pd.isna(v) else f"{v:.{digits}g}")
    more = f'<p class="note">{len(frame) - max_rows} more rows in the CSV.</p>' if len(frame) > max_rows else ""
    return shown.to_html(index=False, border=0, na_rep="–", escape=True) + more


def _facts(rows: dict) -> str:
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows.items())
    return f'<table class="facts">{cells}</table>'


def _overview(runs: pd.DataFrame, config: dict, studied, nuisance, prov: dict, findings: list[str]) -> str:
    status = runs["status"].fillna("unknown").value_counts()
    grid = config.get("grid", {})
    seconds = float(pd.to_numeric(runs.get("train_seconds"), errors="coerce").sum())
    facts = {
        "study": config.get("study", ""),
        "grid": " × ".join(f"{len(grid[a])} {a}" for a in grid) + f" × {len(config.get('seeds', []))} seeds",
        "runs": len(runs),
        "converged / stalled / diverged": " / ".join(str(int(status.get(s, 0))) for s in analysis.STATUSES),
        "total training time": f"{seconds / 3600:.2f} h ({seconds:.0f} s, sum over runs)",
        "model": f"MLP 784 → {config.get('model', {}).get('depth')} × {config.get('model', {}).get('width')} → 10",
        "epochs (max) / target validation accuracy": f"{config.get('train', {}).get('epochs')} / "
        f"{config.get('train', {}).get('target_accuracy')}",
        "baselines": ", ".join(f"{k}={v}" for k, v in config.get("report", {}).get("baselines", {}).items()),
        "nuisance axes": ", ".join(nuisance) or "none",
    } | prov
    key = findings[:1] + [s for s in findings[1:] if s.startswith(("Best ", "No ", "The largest"))]
    top = "".join(f"<li>{html.escape(s)}</li>" for s in key)
    cfg = html.escape(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    return (
        "<p>This report answers: <em>which initializer, activation, optimizer and regularizer keep gradients alive "
        "and make the MLP converge fastest, and how much each one matters</em>, with 95% confidence intervals "
        f"over seeds and the other factors. Studied factors: {html.escape(', '.join(studied))}.</p>"
        f'<h3>Key findings</h3><ul class="findings">{top}</ul><p><a href="#leaderboard">All findings</a></p>'
        f"<h3>Study and provenance</h3>{_facts(facts)}"
        f"<details><summary>Configuration used (click to expand)</summary><pre>{cfg}</pre></details>"
    )


def _nuisance_note(tables: dict[str, pd.DataFrame], nuisance: list[str]) -> str:
    if not nuisance or "nuisance_choices" not in tables:
        return ""
    choices = tables["nuisance_choices"]
    counts = "; ".join(
        f"{a}: " + ", ".join(f"{v} ({n}×)" for v, n in choices[f"chosen_{a}"].value_counts().items())
        for a in nuisance
        if f"chosen_{a}" in choices
    )
    return (
        f"<p>Nuisance axes ({html.escape(', '.join(nuisance))}) are optimized away: every cell × seed keeps the "
        f"value with the best validation accuracy (never test). Chosen values: {html.escape(counts)}.</p>"
        + _table(choices, max_rows=20)
    )


def render_html(tables: dict[str, pd.DataFrame], config: dict, figure_paths: dict[str, Path],
                run_jsons: list[Path] = ()) -> str:  # fmt: skip
    """The report page, with the PNGs in `figure_paths` embedded."""
    runs, studied, nuisance, _, _ = _study_frames(tables, config)
    baselines = config.get("report", {}).get("baselines", {})
    findings = analysis.findings(runs, studied, baselines)
    prov = provenance(list(run_jsons), runs)
    body: dict[str, list[str]] = {key: [] for key, _ in SECTIONS}

    def figs(section):
        return "".join(
            _figure(spec, figure_paths[spec.name]) for spec in figures.FIGURES
            if spec.section == section and spec.name in figure_paths
        )

    body["overview"] += [_overview(runs, config, studied, nuisance, prov, findings), _nuisance_note(tables, nuisance),
                         figs("overview")]  # fmt: skip
    body["atlas"] += [figs("atlas")]
    deltas = tables["paired_deltas"]
    body["effects"] += [
        figs("effects"),
        "<h3>Paired deltas on test accuracy</h3>",
        _table(deltas[deltas["outcome"] == "test_accuracy"].drop(columns="outcome")),
    ]
    variance = tables["variance_decomposition"]
    body["variance"] += [
        figs("variance"),
        "<h3>ANOVA of test accuracy</h3>",
        _table(variance[variance["outcome"] == "test_accuracy"].drop(columns="outcome")),
        "<h3>Diverged and stalled runs per level</h3>",
        _table(tables["status_counts"]),
    ]
    body["gradient-flow"] += [figs("gradient-flow")]
    body["delta-time"] += [figs("delta-time")]
    body["saturation"] += [figs("saturation")]
    body["learning-curves"] += [figs("learning-curves")]
    body["convergence"] += [
        figs("convergence"),
        "<h3>Epochs to target (Kaplan-Meier, misses censored)</h3>",
        _table(tables["epochs_to_target"]),
    ]
    board = tables["leaderboard"]
    body["leaderboard"] += [
        "<h3>Findings</h3>",
        '<ul class="findings">' + "".join(f"<li>{html.escape(s)}</li>" for s in findings) + "</ul>",
        figs("leaderboard"),
        "<h3>Leaderboard: test accuracy</h3>",
        _table(board[board["outcome"] == "test_accuracy"].drop(columns="outcome")),
    ]
    nav = "".join(f'<li><a href="#{key}">{html.escape(title.split(". ", 1)[1])}</a></li>' for key, title in SECTIONS)
    sections = "".join(
        f'<section id="{key}"><h2>{html.escape(title)}</h2>{"".join(body[key])}</section>' for key, title in SECTIONS
    )
    study = html.escape(str(config.get("study", "")))
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>GradAtlas report: {study}</title>"
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head><body>'
        f"<h1>GradAtlas report: {study}</h1>"
        f'<p class="note">{len(runs)} runs. Generated by GradAtlas; opens offline, no JavaScript. Tables: '
        "results/tables/*.csv.</p>"
        f"<nav><ol>{nav}</ol></nav>{sections}</body></html>"
    )


def build(tables_dir: Path, config: dict, out: Path, fig_dir: Path | None = None, run_jsons: list[Path] = ()) -> None:
    """Write the figures (to `fig_dir`, default `<out dir>/figures`) and the self-contained report `out`."""
    out = Path(out)
    tables = with_analysis(load_tables(tables_dir), config)
    paths = write_figures(tables, config, Path(fig_dir) if fig_dir else out.parent / "figures")
    page = render_html(tables, config, paths, run_jsons)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda p: p.write_text(page, encoding="utf-8"))


def render(tables_dir: Path, config: dict, out: Path) -> None:
    """Backward-compatible entry point: `build` with the default figure folder and no run.json."""
    build(tables_dir, config, out)
