# Config validation and the grid. Runs at parse time, so a bad config stops before any job.
import os

from snakemake.logging import logger
from snakemake.utils import validate

# gradatlas is the installed package (make install: pip install -e .), for this file and every script
from gradatlas import config as gaconfig
from gradatlas import grid
from gradatlas import packs as gapacks

# The conda envs (envs/*.yaml) install this checkout's gradatlas, editable, from ${GRADATLAS_REPO}:
# set here for the conda and pip processes Snakemake starts to create them (a value this workflow
# provides, not one it asks the user for: no `envvars:` directive)
os.environ.update(GRADATLAS_REPO=os.path.abspath(workflow.basedir))

# an alias bomb must stop before the schema walks it (or prints it in its error)
gaconfig.check_size(config)
# a nested `--config` value arrives with every scalar a string (YAML's BaseLoader): typed first
gaconfig.typed_overrides(config, workflow.config_settings.config)
validate(config, str(gaconfig.SCHEMA))
gaconfig.check(config)

RESULTS = config["results"]
# one prepared copy per data origin, so studies over different data never overwrite each other's
PREPARED = f"resources/prepared/{gaconfig.data_key(config['data'])}"
# Study presets (studies/*.yaml): a config with a `preset:` section adds the preset's page; the
# grid itself trains only when the preset asks for it (depth_init does)
PRESET = config.get("preset") or {}
STUDY = f"{RESULTS}/study"
STUDY_REPORT = f"{RESULTS}/report/study.html"
STUDY_VERDICT = f"{RESULTS}/report/study.json"
RUN_GRID = not PRESET or PRESET["main_grid"]
BN_VARIANTS = ["plain", "batch_norm"]
TABLE_NAMES = ["runs", "curves", "diagnostics"]
TABLES = expand(f"{RESULTS}/tables/{{name}}.{{ext}}", name=TABLE_NAMES, ext=["parquet", "csv"])
REPORT = f"{RESULTS}/report/index.html"


def rule_resources(rule_name, **defaults):
    """Resources of a rule: its defaults, overridden by config `resources.<rule>`."""
    return defaults | {k: v for k, v in config["resources"].get(rule_name, {}).items() if v is not None}


def train_env():
    """The training jobs' conda env (envs/train-<name>.yaml): TensorFlow's when the backend is
    tensorflow (CPU), else JAX with CUDA when a GPU is requested, else JAX on CPU."""
    if config["train"]["backend"] == "tensorflow":
        return "tensorflow"
    return "cuda" if rule_resources("train", gpu=1)["gpu"] else "cpu"


def train_resources(members):
    """A pack's resources: a whole GPU (optionally of a model), or a SLURM GPU shard when
    `resources.train.trainings_per_gpu` > 1; memory per job; runtime `runtime` minutes per member
    (a pack's members train together, but the sum is the safe bound on a CPU node)."""
    wanted = rule_resources("train", mem_mb=1500, runtime=30, gpu=1, trainings_per_gpu=1, shards_per_gpu=None)
    per_gpu, shards = wanted.pop("trainings_per_gpu"), wanted.pop("shards_per_gpu", None)
    wanted["runtime"] = wanted["runtime"] * members
    if per_gpu > 1:
        wanted.pop("gpu")
        wanted["gres"] = f"shard:{(shards or per_gpu) // per_gpu}"
    elif not wanted["gpu"]:
        wanted.pop("gpu")
    return wanted


# The inputs of a study preset's page (workflow/rules/studies.smk), by preset.
def study_inputs(wildcards):
    name, seeds = PRESET["name"], config["seeds"]
    if name == "nielsen":
        return {"nielsen": f"{STUDY}/nielsen/gradients.parquet"}
    if name == "transfer":
        return {
            "pretrain": expand(f"{STUDY}/transfer/seed~{{seed}}/pretrain.json", seed=seeds),
            "variants": expand(f"{STUDY}/transfer/seed~{{seed}}/variants.parquet", seed=seeds),
        }
    if name == "batch_norm":
        return {
            "curves": expand(
                f"{STUDY}/batch_norm/{{variant}}/seed~{{seed}}/curve.parquet", variant=BN_VARIANTS, seed=seeds
            )
        }
    return {name: f"{RESULTS}/tables/{name}.parquet" for name in ("runs", "curves", "diagnostics")}


PACKS_DIR = f"{RESULTS}/packs"  # a pack's folder (its training state) and the saved plan
PACK_PLAN = f"{PACKS_DIR}/plan.json"


def plan_packs():
    if not workflow.is_main_process and os.path.exists(PACK_PLAN):
        return gapacks.load(PACK_PLAN)
    # a run.json that cannot be read is trained again, named rather than silently
    packs = gapacks.plan(GRID_RUNS, config["train"]["pack_size"], PACKS_DIR, warn=logger.warning)
    for folder in gapacks.stale(packs, PACKS_DIR):
        logger.warning(
            f"{folder}: the state of an interrupted pack that is no longer planned (train.pack_size or the grid "
            "changed since); it is removed when the run starts, and its runs train afresh in their new packs"
        )
    return packs


# Every run of the grid (cell x seed, in <results>/runs/<axis>~<value>/.../seed~<seed>/), and the packs
# that train them (gradatlas/packs.py says how packs form; train.pack_size caps them): one job per pack.
# Cluster job steps re-read the plan the main process saved (lock.smk) instead of re-planning.
GRID_RUNS = grid.runs(config, f"{RESULTS}/runs") if RUN_GRID else []
RUNS = [f"{run.run_dir}/run.json" for run in GRID_RUNS]
PACKS = plan_packs() if RUN_GRID else []
# What aggregation waits for: each pack's first run.json. Snakemake matches every input against the
# rules' outputs one by one, so one input per pack, not per run (the run list is a parameter):
# planning 10,000 runs takes seconds, not a minute (issue #18). A pack's job writes all its members.
PACK_FIRST_RUNS = [f"{pack.runs[0].run_dir}/run.json" for pack in PACKS]


def final_targets():
    """The final targets: the grid's tables, analysis and report, and a preset's page."""
    targets = [*TABLES, *ANALYSIS_TABLES, REPORT] if RUN_GRID else []
    return targets + ([STUDY_REPORT, STUDY_VERDICT] if PRESET else [])
