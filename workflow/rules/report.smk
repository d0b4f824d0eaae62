# The self-contained HTML report, its figures as PNGs and the findings page for
# `snakemake --report report.zip`. Figures, sections and captions come from gradatlas.registry (one
# list); each caption is workflow/report/<name>.rst, written by gradatlas.report.write_captions.
# Every config value the report shows is a tracked param (registry.study_settings + the config shown),
# so changing e.g. `study:` rebuilds the report.
from gradatlas import registry

FIGURE_DIR = f"{RESULTS}/report/figures"
FINDINGS = f"{RESULTS}/report/findings.html"
REPORT_CONFIG_KEYS = [
    "study",
    "results",
    "data",
    "model",
    "train",
    "diagnostics",
    "techniques",
    "grid",
    "seeds",
    "report",
]


rule report:
    input:
        tables=TABLES,
        analysis=ANALYSIS_TABLES,
    output:
        html=REPORT,
        findings=report(
            FINDINGS,
            caption="../report/findings.rst",
            category=registry.SECTIONS[0].title,
            subcategory="findings",
            labels={"page": "findings"},
        ),
        figures=[
            report(
                f"{FIGURE_DIR}/{spec.name}.png",
                caption=f"../report/{spec.name}.rst",
                category=registry.SECTION_TITLES[spec.section],
                subcategory="figures",
                labels={"figure": spec.title},
            )
            for spec in registry.FIGURES
        ],
    log:
        f"{RESULTS}/logs/report.log",
    benchmark:
        f"{RESULTS}/benchmarks/report.tsv"
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    threads: 2  # figures render in parallel
    resources:
        **rule_resources("report", mem_mb=4000, runtime=30),
    params:
        runs=RUNS,
        tables_dir=lambda wildcards, input: os.path.dirname(input.tables[0]),
        figure_dir=lambda wildcards, output: os.path.dirname(output.figures[0]),
        settings=registry.study_settings(config),
        config={key: config[key] for key in REPORT_CONFIG_KEYS if key in config},
    script:
        "../../scripts/report.py"
