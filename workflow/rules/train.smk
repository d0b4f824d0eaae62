rule train:
    input:
        prepared=PREPARED,
    output:
        run=f"{RUN}/run.json",
        history=f"{RUN}/history.csv",
        diagnostics=f"{RUN}/diagnostics.parquet",
        model=f"{RUN}/model.keras",
        tensorboard=directory(f"{RUN}/tensorboard"),
    params:
        cell=lambda wc: gaconfig.typed_cell(config, wc),
        spec=lambda wc: gaconfig.run_spec(config, gaconfig.typed_cell(config, wc)),
    log:
        f"{RESULTS}/logs/train/{paramspace.wildcard_pattern}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{paramspace.wildcard_pattern}.tsv"
    threads: config["train"]["threads"]
    resources:
        group_slot=1,  # packed trainings run one after another in their cluster job (profiles/README.md)
        **train_resources(),
    group:
        "train"
    conda:
        "../../envs/train-cpu.yaml"
    script:
        "../../scripts/train.py"
