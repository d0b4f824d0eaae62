"""Snakemake script: Nielsen's per-layer bias-gradient norms at init (study preset `nielsen`)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # gradatlas, installed or not
from gradatlas.files import logged

with logged(snakemake.log[0]):
    from gradatlas.studies import jobs

    print(jobs.nielsen(snakemake.config, snakemake.input.prepared, snakemake.output.table))
