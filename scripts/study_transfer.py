"""Snakemake script: transfer-learning preset, pretraining on digits 0-4 or the task-B variants (by rule)."""

from gradatlas.files import logged
from gradatlas.studies import jobs

seed, out, cfg, data = int(snakemake.wildcards.seed), snakemake.output, snakemake.config, snakemake.input.prepared
pretrain = snakemake.rule == "study_transfer_pretrain"
# one job at a time writes the seed's folder, its log included (an orphaned job and its rerun)
with jobs.leased(jobs.transfer_folder(out.model if pretrain else out.table)), logged(snakemake.log[0]):
    if pretrain:
        print(jobs.transfer_pretrain(cfg, data, seed, out.model, out.record, threads=snakemake.threads))
    else:
        print(jobs.transfer_variants(cfg, data, seed, snakemake.input.model, out.table, threads=snakemake.threads))
