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
        f"logs/train/{paramspace.wildcard_pattern}.log",
    benchmark:
        f"benchmarks/train/{paramspace.wildcard_pattern}.tsv"
    threads: config["train"]["threads"]
    resources:
        **rule_resources("train", mem_mb=1500, runtime=60),
    group:
        "train"
    conda:
        "../../envs/train-cpu.yaml"
    script:
        "../../scripts/train.py"
