"""Snakemake script: Nielsen's per-layer bias-gradient norms at init (study preset `nielsen`)."""

from gradatlas.files import logged

with logged(snakemake.log[0]):
    from gradatlas.studies import jobs

    print(jobs.nielsen(snakemake.config, snakemake.input.prepared, snakemake.output.table))
