rule report:
    input:
        runs=f"{RESULTS}/tables/runs.parquet",
        curves=f"{RESULTS}/tables/curves.parquet",
        diagnostics=f"{RESULTS}/tables/diagnostics.parquet",
    output:
        html=REPORT,
    log:
        "logs/report.log",
    benchmark:
        "benchmarks/report.tsv"
    threads: 1
    resources:
        **rule_resources("report", mem_mb=4000, runtime=30),
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    script:
        "../../scripts/report.py"
