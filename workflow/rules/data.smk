# MNIST -> resources/prepared/<key>/ (gradatlas.config.data_key: a digest of the data's content).
# A local rule: in cluster mode it runs on the submit host, which must see data.path (or
# resources/mnist/ for the default source, bundled); the nodes read only the prepared folder.
# The data settings reach the script through the config, not params, so that the prepared folder
# (and with it every training) is redone only when the data's content changes, not its path.
rule prepare_data:
    output:
        prepared=directory(PREPARED),
    log:
        f"{PREPARED}.log",
    benchmark:
        f"{PREPARED}.benchmark.tsv"
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        **rule_resources("prepare_data", mem_mb=2000, runtime=30),
    script:
        "../../scripts/prepare_data.py"
