"""Timings a user can reproduce: the demo study and a full-size slice of the default grid, each end
to end through `snakemake --cores all` in this checkout, against this machine's FLOP floor measured
in the same run.

    make bench                  # or: .venv/bin/python bench/study.py   (about 5 min on 2 idle cores)

- matmul rate: fp32 2048 x 2048 matmuls through the project's JAX (jit) on all cores, GFLOP/s: after a
  warm-up, 9 timed repetitions of 3 matmuls each, the fastest repetition counted; measured before and after
  the studies and the higher of the two used (a rate taken under load is low, never high).
- FLOP floor of a study: the work its runs did (epochs run x training images x FLOPs per sample, 6 per
  Dense weight: 2 forward, 4 backward; biases, activations and batch norm left out) / the matmul rate.
- training time: the first training job's start to the last run's end (run.json `started`, `finished`);
  its multiple of the floor is the figure that compares across machines. End to end: snakemake's wall time.
- the slice: 24 runs of the default grid at full size (55,000 images, 10 epochs, 5x100), the workload of
  ../shared/checks/speed; the default study is projected from its multiple of the floor.
- the slice's steps in plain JAX: bench/run.py's bare loop (jax.vmap over a pack's members, lax.scan over
  an epoch's full batches, jit; no probes, validation, checkpoints or early stopping) on the slice's two
  packs of 12 (relu, tanh; Adam, batch 128), both at once, one core each as the slice's two jobs run;
  its time is the slice's epochs x the slower pack's steady epoch (epochs 2-3; the first compiles). Its
  multiple of the floor is what XLA's code for these shapes reaches on this CPU with nothing else to do:
  the part of the slice's multiple that no work on GradAtlas' side of the loop removes.

Each study trains afresh in results/bench/<name>/ (deleted first); the prepared data and the XLA
compilation cache (~/.cache/gradatlas/xla) are reused, as in any second study on a machine. The
machine's load average is printed with the figures: numbers taken under load are low.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from run import BATCH, default_study, prepare_mnist, run_worker, steady_bare  # bench/run.py

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
SLICE = {
    "study": "bench_slice",
    "grid": {
        "initializer": ["random_normal", "glorot_uniform", "he_normal", "lecun_normal"],
        "activation": ["relu", "tanh"],
        "optimizer": ["adam"],
        "regularizer": ["none"],
    },
    "seeds": [0, 1, 2],
}


# the matmul rate: MATMUL_REPEATS timed repetitions of MATMUL_BATCH n x n matmuls, the fastest counted
MATMUL_N, MATMUL_REPEATS, MATMUL_BATCH = 2048, 9, 3
MATMUL_METHOD = (
    f"fp32 {MATMUL_N}x{MATMUL_N} matmuls through JAX (jit, all cores): after a warm-up, the fastest of "
    f"{MATMUL_REPEATS} timed repetitions of {MATMUL_BATCH}, measured before and after the studies, the higher kept"
)


def matmul_gflops(n: int = MATMUL_N, repeats: int = MATMUL_REPEATS, batch: int = MATMUL_BATCH) -> float:
    """This machine's fp32 matmul rate in GFLOP/s: n x n matmuls through the project's JAX (jit, all
    cores); after a warm-up (the compilation and two untimed matmuls), `repeats` timed repetitions of
    `batch` matmuls each, the fastest repetition counted, as other load only ever slows one down."""
    import jax
    import jax.numpy as jnp

    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda a, b: a @ b)
    for _ in range(2):
        f(a, a).block_until_ready()
    fastest = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(batch):
            f(a, a).block_until_ready()
        fastest = min(fastest, time.perf_counter() - start)
    return 2 * n**3 * batch / fastest / 1e9


def flops_per_sample(depth: int, width: int) -> int:
    return 6 * (784 * width + (depth - 1) * width * width + width * 10)


def train_images(spec: dict) -> int:
    return (spec["train_subset"] or 60_000) - spec["validation_size"]


def timed_study(name: str, configfiles: list[Path]) -> dict:
    """One study afresh in results/bench/<name>/: wall time, training time and the work its runs did."""
    results = REPO / "results" / "bench" / name
    shutil.rmtree(results, ignore_errors=True)
    results.mkdir(parents=True)
    cmd = [
        str(SNAKEMAKE),
        "--cores",
        "all",
        "--quiet",
        "rules",
        "host",
        "--config",
        f"results=results/bench/{name}",
        "--configfile",
        *map(str, configfiles),
    ]
    start = time.perf_counter()
    with open(results.parent / f"{name}.log", "w") as log:
        proc = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"{name}: snakemake failed ({proc.returncode}), see {log.name}")
    records = [json.loads(p.read_text()) for p in (results / "runs").rglob("run.json")]
    when = lambda r, key: dt.datetime.fromisoformat(r[key]).timestamp()  # noqa: E731
    spec = records[0]["spec"]
    return {
        "name": name,
        "runs": len(records),
        "wall": wall,
        "train": max(when(r, "finished") for r in records) - min(when(r, "started") for r in records),
        "flops": sum(
            r["summary"]["epochs_run"]
            * train_images(r["spec"])
            * flops_per_sample(r["spec"]["depth"], r["spec"]["width"])
            for r in records
        ),
        "shape": f"{spec['depth']}x{spec['width']}, {train_images(spec):,} images, {spec['epochs']} epochs",
    }


def bare_slice() -> dict:
    """The slice's training steps in plain JAX: its two packs at once, one core each (see above)."""
    from concurrent.futures import ThreadPoolExecutor

    epochs, packs = 10, [(act, 12) for act in SLICE["grid"]["activation"]]
    with tempfile.TemporaryDirectory(prefix="gradatlas-bench-") as tmp:
        prepared = prepare_mnist(Path(tmp) / "prepared")
        jobs = [
            {"kind": "bare", "k": k, "activation": act, "prepared": str(prepared), "validation": 5_000}
            | {"train_subset": None, "epochs": 3}
            for act, k in packs
        ]
        with ThreadPoolExecutor(len(jobs)) as pool:
            results = list(pool.map(lambda job: run_worker(job, 1), jobs))
    n_train = results[0]["n_train"]  # full batches only
    steady = max(k * n_train / steady_bare(r, k) for r, (_, k) in zip(results, packs))  # the slower pack's epoch
    return {
        "name": "slice's steps in plain JAX",
        "runs": sum(k for _, k in packs),
        "wall": None,
        "train": epochs * steady,
        "flops": sum(k for _, k in packs) * epochs * n_train * flops_per_sample(5, 100),
        "shape": f"5x100, {n_train:,} images ({n_train // BATCH} batches of {BATCH}), {epochs} epochs",
    }


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main() -> None:
    load_before = os.getloadavg()
    gflops_before = matmul_gflops()
    print(f"fp32 matmul before the studies: {gflops_before:.1f} GFLOP/s", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="gradatlas-bench-") as tmp:
        slice_file = Path(tmp) / "slice.yaml"
        slice_file.write_text(yaml.safe_dump(SLICE))
        rows = []
        for name, files in (("demo", [REPO / "studies" / "demo.yaml"]), ("slice", [slice_file])):
            rows.append(timed_study(name, files))
            print(f"{name}: {rows[-1]['wall']:.0f} s end to end", file=sys.stderr, flush=True)
    rows.append(bare_slice())
    print(f"the slice's steps in plain JAX: {rows[-1]['train']:.0f} s", file=sys.stderr, flush=True)
    load_after = os.getloadavg()
    gflops_after = matmul_gflops()
    print(f"fp32 matmul after the studies: {gflops_after:.1f} GFLOP/s", file=sys.stderr, flush=True)
    gflops = max(gflops_before, gflops_after)

    n_runs, images, _ = default_study()
    slice_row = rows[1]
    ratio = slice_row["train"] / (slice_row["flops"] / (gflops * 1e9))
    default_floor = n_runs * images * flops_per_sample(5, 100) / (gflops * 1e9)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    lines = [
        f"{dt.datetime.now():%Y-%m-%d %H:%M}, commit {commit}: {cpu_model()}, {len(os.sched_getaffinity(0))} cores, "
        f"fp32 matmul {gflops:.1f} GFLOP/s ({gflops_before:.1f} before the studies, {gflops_after:.1f} after); "
        f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after",
        f"matmul rate: {MATMUL_METHOD}",
        "",
        "| study | runs | MLP, data | FLOP floor | training | × floor | end to end |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        floor = r["flops"] / (gflops * 1e9)
        wall = "-" if r["wall"] is None else f"{r['wall']:.0f} s"
        lines.append(
            f"| {r['name']} | {r['runs']} | {r['shape']} | {floor:.1f} s | {r['train']:.0f} s "
            f"| {r['train'] / floor:.2f} | {wall} |"
        )
    lines += [
        "",
        f"default study (config.yaml, {n_runs:,} runs) projected at the slice's {ratio:.2f} x its floor of "
        f"{default_floor / 60:.0f} min: {ratio * default_floor / 60:.0f} min of training",
    ]
    bare = rows[2]["train"] / (rows[2]["flops"] / (gflops * 1e9))
    lines.append(
        f"the slice's steps alone, in plain JAX, take {bare:.2f} x their floor on this machine; the slice in "
        f"GradAtlas {ratio:.2f} x ({ratio / bare:.2f} x the plain loop: starting the jobs, probes, validation, "
        "checkpoints, run folders)"
    )
    text = "\n".join(lines)
    print(text)
    (REPO / "bench" / "latest-study.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
