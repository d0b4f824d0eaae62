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
    conda:
        "../../envs/train-cpu.yaml"
    threads: 1
    resources:
        **rule_resources("study", mem_mb=2000, runtime=30),
    script:
        "../../scripts/study_nielsen.py"


rule study_transfer_pretrain:
    input:
        prepared=PREPARED,
    output:
        model=f"{STUDY}/transfer/seed~{{seed}}/pretrained.keras",
        record=f"{STUDY}/transfer/seed~{{seed}}/pretrain.json",
    log:
        f"{RESULTS}/logs/study/transfer_pretrain_{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/study/transfer_pretrain_{{seed}}.tsv"
    wildcard_constraints:
        seed=r"\d+",
    conda:
        "../../envs/train-cpu.yaml"
    threads: config["train"]["threads"]
    resources:
        **rule_resources("study", mem_mb=2000, runtime=60),
    script:
        "../../scripts/study_transfer.py"


rule study_transfer:
    input:
        prepared=PREPARED,
        model=f"{STUDY}/transfer/seed~{{seed}}/pretrained.keras",
    output:
        table=f"{STUDY}/transfer/seed~{{seed}}/variants.parquet",
    log:
        f"{RESULTS}/logs/study/transfer_{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/study/transfer_{{seed}}.tsv"
    wildcard_constraints:
        seed=r"\d+",
    conda:
        "../../envs/train-cpu.yaml"
    threads: config["train"]["threads"]
    resources:
        **rule_resources("study", mem_mb=2000, runtime=60),
    script:
        "../../scripts/study_transfer.py"


# one job per variant: its seeds train as one pack of the engine (one compiled program)
rule study_batch_norm:
    input:
        prepared=PREPARED,
    output:
        curves=expand(f"{STUDY}/batch_norm/{{{{variant}}}}/seed~{{seed}}/curve.parquet", seed=config["seeds"]),
        records=expand(f"{STUDY}/batch_norm/{{{{variant}}}}/seed~{{seed}}/run.json", seed=config["seeds"]),
    log:
        f"{RESULTS}/logs/study/batch_norm_{{variant}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/study/batch_norm_{{variant}}.tsv"
    wildcard_constraints:
        variant="|".join(BN_VARIANTS),
    conda:
        "../../envs/train-cpu.yaml"
    threads: config["train"]["threads"]
    resources:
        **rule_resources("study", mem_mb=2000, runtime=120),
    params:
        seeds=config["seeds"],
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
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        **rule_resources("report", mem_mb=4000, runtime=30),
    script:
        "../../scripts/study_report.py"
