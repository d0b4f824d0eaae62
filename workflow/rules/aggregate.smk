rule aggregate:
    input:
        runs=RUNS,
    output:
        tables=TABLES,
    params:
        out_dir=f"{RESULTS}/tables",
    log:
        "logs/aggregate.log",
    benchmark:
        "benchmarks/aggregate.tsv"
    threads: 1
    resources:
        **rule_resources("aggregate", mem_mb=4000, runtime=30),
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    script:
        "../../scripts/aggregate.py"
