"""Snakemake script: the study preset's self-contained page (report/study.html) and its verdict (study.json)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # gradatlas, installed or not
from gradatlas.files import logged

with logged(snakemake.log[0]):
    from gradatlas.studies import report

    inputs = {k: v for k, v in snakemake.input.items()}
    print(report.render(snakemake.config, inputs, Path(snakemake.output.html), Path(snakemake.output.verdict)))
