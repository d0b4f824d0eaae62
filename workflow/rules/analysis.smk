# Statistics over the runs and curves tables: the chosen runs with every derived outcome and their
# completed curves (what the report reads), the headline answer, gradient flow, convergence speed,
# effects with t-intervals, interactions, variance decomposition, status counts, leaderboard, findings
# (gradatlas/analysis.py; table names, rows and columns in gradatlas.registry.TABLES).
from gradatlas import registry

NUISANCE = config["report"]["nuisance"]  # validated: axes of the grid
ANALYSIS_NAMES = registry.analysis_table_names(NUISANCE)
ANALYSIS_TABLES = expand(f"{RESULTS}/tables/{{name}}.{{ext}}", name=ANALYSIS_NAMES, ext=["parquet", "csv"])


rule analyze:
    input:
        runs=f"{RESULTS}/tables/runs.parquet",
        curves=f"{RESULTS}/tables/curves.parquet",
    output:
        # the CSVs of registry.REPORT_TABLES also go into Snakemake's report, in their section
        tables=[
            report(path, **registry.report_table_entry(path)) if registry.report_table_entry(path) else path
            for path in ANALYSIS_TABLES
        ],
    log:
        f"{RESULTS}/logs/analyze.log",
    benchmark:
        f"{RESULTS}/benchmarks/analyze.tsv"
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        **rule_resources("analyze", mem_mb=4000, runtime=30),
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
        factors=grid.axes(config),
        baselines=config["report"]["baselines"],
        nuisance=NUISANCE,
        settings=registry.study_settings(config),
    script:
        "../../scripts/analyze.py"
