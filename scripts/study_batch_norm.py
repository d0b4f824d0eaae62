"""Snakemake script: one batch-normalization preset variant, its seeds trained as one pack, tracked every
eval_every steps."""

from gradatlas.files import logged
from gradatlas.studies import jobs

out = snakemake.output
# one job at a time writes the variant's folder, its log included (an orphaned job and its rerun)
with jobs.leased(jobs.batch_norm_folder(out.curves)), logged(snakemake.log[0]):
    curves = jobs.batch_norm(
        snakemake.config,
        snakemake.input.prepared,
        snakemake.wildcards.variant,
        [int(s) for s in snakemake.params.seeds],
        list(out.curves),
        list(out.records),
        threads=snakemake.threads,
    )
    print(curves.groupby("seed").tail(3))
