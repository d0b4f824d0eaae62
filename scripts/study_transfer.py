"""Snakemake script: transfer-learning preset, pretraining on digits 0-4 or the task-B variants (by rule)."""

from gradatlas.files import logged

with logged(snakemake.log[0]):
    from gradatlas.studies import jobs

    seed, out, cfg, data = int(snakemake.wildcards.seed), snakemake.output, snakemake.config, snakemake.input.prepared
    if snakemake.rule == "study_transfer_pretrain":
        print(jobs.transfer_pretrain(cfg, data, seed, out.model, out.record, threads=snakemake.threads))
    else:
        print(jobs.transfer_variants(cfg, data, seed, snakemake.input.model, out.table, threads=snakemake.threads))
