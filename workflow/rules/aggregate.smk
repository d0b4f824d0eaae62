rule aggregate:
    input:
        runs=RUNS,
    output:
        tables=TABLES,
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.tables[0]),
    log:
        f"{RESULTS}/logs/aggregate.log",
    benchmark:
        f"{RESULTS}/benchmarks/aggregate.tsv"
    threads: 1
    resources:
        **rule_resources("aggregate", mem_mb=4000, runtime=30),
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    script:
        "../../scripts/aggregate.py"
