"""Snakemake script: the study's figures (PNG) and its self-contained HTML report, from its tables."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # gradatlas, installed or not

from gradatlas import report
from gradatlas.files import logged

with logged(snakemake.log[0]):
    report.build(
        Path(snakemake.params.tables_dir),
        snakemake.config,
        Path(snakemake.output.html),
        fig_dir=Path(snakemake.params.figure_dir),
        run_jsons=[Path(p) for p in snakemake.input.runs],
    )
