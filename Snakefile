# GradAtlas: which training techniques keep gradients alive and make a network converge?
# Config -> grid of MNIST trainings -> per-layer diagnostics -> tables -> report.
# See README.md; every rule calls a short script in scripts/, the logic is in gradatlas/.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/lock.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/studies.smk"


rule all:
    default_target: True
    input:
        final_targets(),
