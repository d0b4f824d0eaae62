# The self-contained HTML report, and its figures as PNGs for `snakemake --report report.zip`.
# Figure names and categories must match gradatlas.figures.FIGURES (tests/test_report.py checks it);
# each has its caption in workflow/report/<name>.rst (written from the same registry).
FIGURE_CATEGORIES = {
    "status": "1. Overview",
    "atlas": "2. The atlas",
    "interactions": "2. The atlas",
    "main_effects": "3. Main effects and paired deltas",
    "paired_deltas": "3. Main effects and paired deltas",
    "variance": "4. Which technique matters most",
    "gradient_flow": "5. Gradient flow",
    "delta_heatmaps": "6. Error signal over layers and time",
    "saturation": "7. Saturation and dead units",
    "learning_curves": "8. Learning curves",
    "convergence": "9. Convergence speed: epochs to target",
    "leaderboard": "10. Leaderboard and findings",
}
FIGURE_DIR = f"{RESULTS}/report/figures"


rule report:
    input:
        tables=TABLES,
        analysis=ANALYSIS_TABLES,
        runs=RUNS,
    output:
        html=REPORT,
        figures=[
            report(
                f"{FIGURE_DIR}/{name}.png",
                caption=f"../report/{name}.rst",
                category=category,
                subcategory=name.replace("_", " "),
            )
            for name, category in FIGURE_CATEGORIES.items()
        ],
    params:
        tables_dir=lambda wildcards, input: os.path.dirname(input.tables[0]),
        figure_dir=lambda wildcards, output: os.path.dirname(output.figures[0]),
    log:
        f"{RESULTS}/logs/report.log",
    benchmark:
        f"{RESULTS}/benchmarks/report.tsv"
    threads: 1
    resources:
        **rule_resources("report", mem_mb=4000, runtime=30),
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    script:
        "../../scripts/report.py"
