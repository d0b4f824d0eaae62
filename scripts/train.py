"""Snakemake script: train one grid cell x seed and write its run folder."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # gradatlas, installed or not

from gradatlas.files import logged

with logged(snakemake.log[0]):
    from gradatlas import backend

    backend.select(snakemake.params.spec["backend"])  # before anything imports keras
    from gradatlas import training

    record = training.train(
        snakemake.params.spec,
        Path(snakemake.input.prepared),
        Path(snakemake.output.run).parent,
        snakemake.params.cell,
        threads=snakemake.threads,
    )
    print(record["summary"])
