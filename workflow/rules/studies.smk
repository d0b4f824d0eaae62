# Study presets (studies/*.yaml; docs/studies.md). A config with a `preset:` section pulls in the
# preset's rules below and the page {results}/report/study.html; without one nothing here runs.


rule study_nielsen:
    input:
        prepared=PREPARED,
    output:
        table=f"{STUDY}/nielsen/gradients.parquet",
    log:
        f"{RESULTS}/logs/study/nielsen.log",
    benchmark:
        f"{RESULTS}/benchmarks/study/nielsen.tsv"
    threads: 1
    resources:
        **rule_resources("study", mem_mb=2000, runtime=30),
    conda:
        "../../envs/train-cpu.yaml"
    script:
        "../../scripts/study_nielsen.py"


rule study_transfer_pretrain:
    input:
        prepared=PREPARED,
    output:
        model=f"{STUDY}/transfer/seed~{{seed}}/pretrained.keras",
        record=f"{STUDY}/transfer/seed~{{seed}}/pretrain.json",
    wildcard_constraints:
        seed=r"\d+",
    log:
        f"{RESULTS}/logs/study/transfer_pretrain_{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/study/transfer_pretrain_{{seed}}.tsv"
    threads: config["train"]["threads"]
    resources:
        **rule_resources("study", mem_mb=2000, runtime=60),
    conda:
        "../../envs/train-cpu.yaml"
    script:
        "../../scripts/study_transfer.py"


rule study_transfer:
    input:
        prepared=PREPARED,
        model=f"{STUDY}/transfer/seed~{{seed}}/pretrained.keras",
    output:
        table=f"{STUDY}/transfer/seed~{{seed}}/variants.parquet",
    wildcard_constraints:
        seed=r"\d+",
    log:
        f"{RESULTS}/logs/study/transfer_{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/study/transfer_{{seed}}.tsv"
    threads: config["train"]["threads"]
    resources:
        **rule_resources("study", mem_mb=2000, runtime=60),
    conda:
        "../../envs/train-cpu.yaml"
    script:
        "../../scripts/study_transfer.py"


# one job per variant: its seeds train as one pack of the engine (one compiled program)
rule study_batch_norm:
    input:
        prepared=PREPARED,
    output:
        curves=expand(f"{STUDY}/batch_norm/{{{{variant}}}}/seed~{{seed}}/curve.parquet", seed=config["seeds"]),
        records=expand(f"{STUDY}/batch_norm/{{{{variant}}}}/seed~{{seed}}/run.json", seed=config["seeds"]),
    wildcard_constraints:
        variant="|".join(BN_VARIANTS),
    params:
        seeds=config["seeds"],
    log:
        f"{RESULTS}/logs/study/batch_norm_{{variant}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/study/batch_norm_{{variant}}.tsv"
    threads: config["train"]["threads"]
    resources:
        **rule_resources("study", mem_mb=2000, runtime=120),
    conda:
        "../../envs/train-cpu.yaml"
    script:
        "../../scripts/study_batch_norm.py"


rule study_report:
    input:
        unpack(study_inputs),
    output:
        html=STUDY_REPORT,
        verdict=STUDY_VERDICT,
    log:
        f"{RESULTS}/logs/study/report.log",
    benchmark:
        f"{RESULTS}/benchmarks/study/report.tsv"
    threads: 1
    resources:
        **rule_resources("report", mem_mb=4000, runtime=30),
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    script:
        "../../scripts/study_report.py"
