"""The study's report: one self-contained HTML file (figures embedded as PNG), readable offline
and without JavaScript."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from gradatlas import figures
from gradatlas.files import atomic_write


def embed(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def section(title: str, caption: str, body: str) -> str:
    return f"<section><h2>{html.escape(title)}</h2>{body}<p class=caption>{html.escape(caption)}</p></section>"


def render(tables_dir: Path, config: dict, out: Path) -> None:
    runs = pd.read_parquet(tables_dir / "runs.parquet")
    curves = pd.read_parquet(tables_dir / "curves.parquet")
    diagnostics = pd.read_parquet(tables_dir / "diagnostics.parquet")
    counts = runs["status"].value_counts().to_dict()
    parts = [
        section(
            "Overview",
            "Runs by status: converged (trained), stalled (best validation accuracy below "
            f"{config['train']['stall_accuracy']}), diverged (non-finite loss).",
            f"<p>{len(runs)} runs: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + "</p>",
        ),
        section("Accuracy atlas", "Test accuracy, mean over seeds, per cell.", embed(figures.accuracy_atlas(runs))),
        section(
            "Gradient flow at initialization",
            "Norm of the mean error signal dL/dz per layer before any update (log scale). A profile that "
            "falls toward layer 1 means vanishing gradients.",
            embed(figures.delta_profile_at_init(diagnostics)),
        ),
    ]
    for factor in ("initializer", "activation", "optimizer", "regularizer"):
        parts.append(section(f"Learning curves by {factor}", "Validation accuracy per epoch; band: 95% CI over runs.",
                             embed(figures.learning_curves(curves, factor))))  # fmt: skip
    page = (
        f"<!doctype html><html><head><meta charset=utf-8><title>GradAtlas: {html.escape(config['study'])}</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}img{max-width:100%}"
        ".caption{color:#444}</style></head><body>"
        f"<h1>GradAtlas report: {html.escape(config['study'])}</h1>" + "".join(parts) + "</body></html>"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda p: p.write_text(page, encoding="utf-8"))
