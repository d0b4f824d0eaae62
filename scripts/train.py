"""Snakemake script: train one grid cell x seed and write its run folder."""
from pathlib import Path

from gradatlas.files import logged

with logged(snakemake.log[0]):
    from gradatlas import training

    record = training.train(
        snakemake.params.spec,
        Path(snakemake.input.prepared),
        Path(snakemake.output.run).parent,
        snakemake.params.cell,
        threads=snakemake.threads,
    )
    print(record["summary"])
