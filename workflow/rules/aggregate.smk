rule aggregate:
    input:
        packs=PACK_FIRST_RUNS,  # and every run: params.runs
    output:
        tables=TABLES,
    log:
        f"{RESULTS}/logs/aggregate.log",
    benchmark:
        f"{RESULTS}/benchmarks/aggregate.tsv"
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        **rule_resources("aggregate", mem_mb=4000, runtime=30),
    params:
        runs=RUNS,
        out_dir=lambda wildcards, output: os.path.dirname(output.tables[0]),
    script:
        "../../scripts/aggregate.py"
