# Config validation and the grid. Runs at parse time, so a bad config stops before any job.
import os
import sys

from snakemake.utils import Paramspace, validate

# gradatlas is importable by the Snakefile and by every job's script, installed or not
sys.path.insert(0, workflow.basedir)
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [workflow.basedir, os.environ.get("PYTHONPATH")]))

from gradatlas import config as gaconfig


validate(config, "../schemas/config.schema.yaml")
gaconfig.check(config)

RESULTS = config["results"]
PREPARED = "resources/mnist"
paramspace = Paramspace(gaconfig.grid_frame(config))
RUN = f"{RESULTS}/runs/{paramspace.wildcard_pattern}"
RUNS = expand(f"{RESULTS}/runs/{{cell}}/run.json", cell=paramspace.instance_patterns)
TABLE_NAMES = ["runs", "curves", "diagnostics"]
TABLES = expand(f"{RESULTS}/tables/{{name}}.{{ext}}", name=TABLE_NAMES, ext=["parquet", "csv"])
REPORT = f"{RESULTS}/report/index.html"


wildcard_constraints:
    **{axis: "[^/]+" for axis in paramspace.dataframe.columns},


def rule_resources(rule_name, **defaults):
    """Resources of a rule: its defaults, overridden by config `resources.<rule>`."""
    return defaults | {k: v for k, v in config["resources"].get(rule_name, {}).items() if v is not None}
