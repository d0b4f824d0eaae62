"""Snakemake script: one batch-normalization preset variant, its seeds trained as one pack, tracked every eval_every steps."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # gradatlas, installed or not
from gradatlas.files import logged

with logged(snakemake.log[0]):
    from gradatlas.studies import jobs

    out = snakemake.output
    curves = jobs.batch_norm(snakemake.config, snakemake.input.prepared, snakemake.wildcards.variant,
                             [int(s) for s in snakemake.params.seeds], list(out.curves), list(out.records),
                             threads=snakemake.threads)  # fmt: skip
    print(curves.groupby("seed").tail(3))
