"""Snakemake script: gather every run folder of the study into tidy tables."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # gradatlas, installed or not

from gradatlas import aggregate
from gradatlas.files import logged

with logged(snakemake.log[0]):
    run_dirs = [Path(p).parent for p in snakemake.input.runs]
    aggregate.write(aggregate.tables(run_dirs, snakemake.config), Path(snakemake.params.out_dir))
    print(f"aggregated {len(run_dirs)} runs")
