"""Snakemake script: the study's figures (PNG), its self-contained HTML report and the findings page."""

from pathlib import Path

from gradatlas import report
from gradatlas.files import logged

with logged(snakemake.log[0]):
    report.build(
        Path(snakemake.params.tables_dir),
        dict(snakemake.params.config),  # the config values shown: tracked params, so a change rebuilds
        Path(snakemake.output.html),
        fig_dir=Path(snakemake.params.figure_dir),
        run_jsons=[Path(p) for p in snakemake.params.runs],
        findings_out=Path(snakemake.output.findings),
        workers=snakemake.threads,
    )
