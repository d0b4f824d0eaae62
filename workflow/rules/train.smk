# Training: one job per pack (common.smk plans them). A pack's outputs are its members' run.json,
# each written last in its folder (so a folder with one is complete); a finished pack is planned as
# it was, so Snakemake finds it complete and it never retrains.


for pack in PACKS:

    rule:
        name:
            f"train_{pack.name}"
        input:
            prepared=PREPARED,
        output:
            # in pack order: aggregation waits for each pack's first run.json (common.smk), which
            # Snakemake then finds at once (it tries a rule's outputs in order)
            [f"{run.run_dir}/run.json" for run in pack.runs],
        log:
            f"{RESULTS}/logs/train/{pack.name}.log",
        benchmark:
            f"{RESULTS}/benchmarks/train/{pack.name}.tsv"
        conda:
            f"../../envs/train-{train_env()}.yaml"
        threads: config["train"]["threads"]
        resources:
            **train_resources(len(pack.runs)),
        params:
            members=pack.params(),
            pack_dir=f"{PACKS_DIR}/{pack.name}",
        script:
            "../../scripts/train.py"
