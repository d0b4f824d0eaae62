"""Planning time and peak memory for large grids (issue #18, item 6).

Times what the workflow does for its training rules before Snakemake builds its DAG (workflow/rules/
common.smk and train.smk): the config check, the grid, every run's spec, the pack plan
(`gradatlas.packs.plan`, which looks for finished runs) and each pack's rule parameters. The grid is
`config.yaml`'s (384 cells) with as many seeds as reach about 10,000 and 100,000 runs; nothing has
been trained, as for a new study. Each size is planned in a fresh process: wall time, and that
process's peak RSS (`ru_maxrss`, which includes the imports: pandas, gradatlas).

    .venv/bin/python bench/plan.py            # 9,984 and 99,840 runs
    .venv/bin/python bench/plan.py 1000 50000 # other sizes (runs, rounded down to whole seeds)
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
SIZES = (10_000, 100_000)


def plan_once(runs_wanted: int) -> dict:
    """In this process: plan a grid of about `runs_wanted` runs; its figures."""
    from gradatlas import config as gaconfig, packs

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["seeds"] = list(range(max(1, runs_wanted // math.prod(len(values) for values in cfg["grid"].values()))))
    with tempfile.TemporaryDirectory() as results:
        start = time.perf_counter()
        checked = gaconfig.check(gaconfig.validate_schema(cfg))
        runs = packs.grid_runs(checked, Path(results, "runs"))
        plan = packs.plan(runs, checked["train"]["pack_size"], Path(results, "packs"))
        params = [p.params() for p in plan]  # what each train rule is given
        seconds = time.perf_counter() - start
    return {
        "runs": len(runs),
        "packs": len(params),
        "seconds": seconds,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main(sizes) -> None:
    print(f"# planning (bench/plan.py): {cpu_model()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    print("| runs | packs | planning seconds | peak RSS MB |")
    print("|---:|---:|---:|---:|")
    for size in sizes:
        out = subprocess.run([sys.executable, __file__, "--one", str(size)], capture_output=True, text=True, check=True)
        row = json.loads(out.stdout)
        print(f"| {row['runs']:,} | {row['packs']:,} | {row['seconds']:.1f} | {row['peak_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        print(json.dumps(plan_once(int(sys.argv[2]))))
    else:
        main([int(a) for a in sys.argv[1:]] or SIZES)
