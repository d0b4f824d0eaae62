"""Planning time and peak memory for large grids (issue #18, item 6): `snakemake -n` of a new study.

For each size, the real `snakemake -n` in this checkout, with `config.yaml`'s grid (384 cells) and
as many seeds as reach about 10,000 and 100,000 runs, results in a fresh temporary folder (nothing
trained, as for a new study): its wall time, its CPU time and its peak RSS, and, measured in the
same run, the wall time of `snakemake --version` (starting Snakemake and loading its plugins: the
part no workflow can change). Besides, in-process, the part that is GradAtlas' own: the config
check, the grid, every run's spec, the pack plan (`gradatlas.packs.plan`) and the train rules'
parameters.

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

from gradatlas import grid

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
SIZES = (10_000, 100_000)


def seeds_for(runs_wanted: int) -> list[int]:
    grid = yaml.safe_load((REPO / "config.yaml").read_text())["grid"]
    return list(range(max(1, runs_wanted // math.prod(len(values) for values in grid.values()))))


def plan_once(runs_wanted: int) -> dict:
    """In this process: GradAtlas' planning of a grid of about `runs_wanted` runs; its figures."""
    from gradatlas import config as gaconfig, packs

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["seeds"] = seeds_for(runs_wanted)
    with tempfile.TemporaryDirectory() as results:
        start = time.perf_counter()
        checked = gaconfig.check(gaconfig.validate_schema(cfg))
        runs = grid.runs(checked, Path(results, "runs"))
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


def timed(command: list[str]) -> dict:
    """Run `command` in the checkout: wall and CPU seconds, and its peak RSS (a fresh process per
    measurement: RUSAGE_CHILDREN's peak is the largest child's so far, and sizes grow)."""
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    after, wall = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter() - start
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {"wall": wall, "cpu": cpu, "peak_mb": after.ru_maxrss / 1024}


def dry_run(runs_wanted: int) -> dict:
    """The real `snakemake -n` of a new study of about `runs_wanted` runs."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp, "big.yaml")
        config.write_text(yaml.safe_dump({"results": str(Path(tmp, "results")), "seeds": seeds_for(runs_wanted)}))
        return timed([str(SNAKEMAKE), "-n", "--quiet", "--configfile", str(config)])


def main(sizes) -> None:
    print(f"# planning (bench/plan.py): {cpu_model()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    startup = timed([str(SNAKEMAKE), "--version"])["wall"]
    print(f"starting snakemake (`snakemake --version`): {startup:.1f} s wall")
    print("| runs | train jobs | `snakemake -n` wall s | its CPU s | its peak RSS MB | GradAtlas' planning s |")
    print("|---:|---:|---:|---:|---:|---:|")
    for size in sorted(sizes):
        out = subprocess.run([sys.executable, __file__, "--one", str(size)], capture_output=True, text=True, check=True)
        own = json.loads(out.stdout)
        dry = dry_run(size)
        print(
            f"| {own['runs']:,} | {own['packs']:,} | {dry['wall']:.1f} | {dry['cpu']:.1f} | {dry['peak_mb']:.0f} "
            f"| {own['seconds']:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        print(json.dumps(plan_once(int(sys.argv[2]))))
    else:
        main([int(a) for a in sys.argv[1:]] or SIZES)
