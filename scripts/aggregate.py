"""Snakemake script: gather every run folder of the study into tidy tables."""

from pathlib import Path

from gradatlas import aggregate
from gradatlas.files import logged

with logged(snakemake.log[0]):
    run_dirs = [Path(p).parent for p in snakemake.params.runs]
    aggregate.write(aggregate.tables(run_dirs, snakemake.config), Path(snakemake.params.out_dir))
    print(f"aggregated {len(run_dirs)} runs")
