rule prepare_data:
    output:
        prepared=directory(PREPARED),
    params:
        source=config["data"]["source"],
        path=config["data"]["path"],
        url=config["data"]["url"],
    log:
        f"{PREPARED}.log",
    benchmark:
        f"{PREPARED}.benchmark.tsv"
    threads: 1
    resources:
        **rule_resources("prepare_data", mem_mb=2000, runtime=30),
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    script:
        "../../scripts/prepare_data.py"
