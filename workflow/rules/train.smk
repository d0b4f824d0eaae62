# Training: runs are grouped into packs, one job per pack (gradatlas/packs.py says how packs form; train.pack_size caps
# them). A pack's outputs are its members' run folders; a finished pack is planned as it was, so it
# never retrains. Cluster job steps re-read the plan the main process saved instead of re-planning.
PACKS = plan_packs() if RUN_GRID else []


for pack in PACKS:

    rule:
        name:
            f"train_{pack.name}"
        input:
            prepared=PREPARED,
        output:
            [f"{run.run_dir}/{name}" for run in pack.runs for name in RUN_OUTPUTS],
            [directory(f"{run.run_dir}/{name}") for run in pack.runs for name in RUN_FOLDERS],
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
