# Statistics over the runs table: effects with CIs, interactions, variance decomposition, speed,
# status counts, leaderboard (gradatlas/analysis.py; columns in analysis.TABLE_COLUMNS and README).
NUISANCE = config["report"]["nuisance"]  # validated: axes of the grid
ANALYSIS_NAMES = [
    "main_effects",
    "paired_deltas",
    "interactions",
    "variance_decomposition",
    "epochs_to_target",
    "status_counts",
    "leaderboard",
] + (["nuisance_choices"] if NUISANCE else [])
ANALYSIS_TABLES = expand(f"{RESULTS}/tables/{{name}}.{{ext}}", name=ANALYSIS_NAMES, ext=["parquet", "csv"])


rule analyze:
    input:
        runs=f"{RESULTS}/tables/runs.parquet",
    output:
        tables=ANALYSIS_TABLES,
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
        factors=gaconfig.axes(config),
        baselines=config["report"]["baselines"],
        nuisance=NUISANCE,
    log:
        f"{RESULTS}/logs/analyze.log",
    benchmark:
        f"{RESULTS}/benchmarks/analyze.tsv"
    threads: 1
    resources:
        **rule_resources("analyze", mem_mb=4000, runtime=30),
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    script:
        "../../scripts/analyze.py"
