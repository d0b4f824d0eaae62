"""Snakemake script: one batch-normalization preset training (variant x seed), tracked every eval_every steps."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # gradatlas, installed or not
from gradatlas.files import logged

with logged(snakemake.log[0]):
    from gradatlas.studies import jobs

    wc, out = snakemake.wildcards, snakemake.output
    curve = jobs.batch_norm(snakemake.config, snakemake.input.prepared, wc.variant, int(wc.seed), out.curve, out.record,
                            threads=snakemake.threads)  # fmt: skip
    print(curve.tail())
