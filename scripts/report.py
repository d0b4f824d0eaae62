"""Snakemake script: render the study's self-contained HTML report from its tables."""
from pathlib import Path

from gradatlas import report
from gradatlas.files import logged

with logged(snakemake.log[0]):
    report.render(Path(snakemake.input.runs).parent, snakemake.config, Path(snakemake.output.html))
