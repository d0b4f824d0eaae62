"""Snakemake script: the study preset's self-contained page (report/study.html) and its verdict (study.json)."""

from pathlib import Path

from gradatlas.files import logged

with logged(snakemake.log[0]):
    from gradatlas.studies import report

    inputs = {k: v for k, v in snakemake.input.items()}
    print(report.render(snakemake.config, inputs, Path(snakemake.output.html), Path(snakemake.output.verdict)))
