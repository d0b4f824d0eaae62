"""GradAtlas performance benchmark: one table, measured in one run, speeds stated as ratios.

    .venv/bin/python bench/run.py            # full run (a few minutes on 2 cores)
    .venv/bin/python bench/run.py --quick    # sanity run on a data subset (about a minute)

Every measurement runs in a fresh worker process (Keras picks its backend at import), on the
model of the issue: 784-100x5-10 ELU MLP, He init, Adam, batch 128, real MNIST from
$GRADATLAS_MNIST (default ../shared/data/mnist beside the repository). Throughputs are steady-state
epochs (the first, which compiles, is left out); the diagnostics overhead compares whole trainings
(every epoch, probe compilation included) with and without the Diagnostics callback.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MNIST = Path(os.environ.get("GRADATLAS_MNIST", REPO.parent / "shared" / "data" / "mnist"))
BACKENDS = ("tensorflow", "jax")
DEPTH, WIDTH, BATCH = 5, 100, 128
# forward multiply-adds of 784-100x5-10, x2 FLOP, x3 for forward + backward
FLOP_PER_SAMPLE = 3 * 2 * (784 * WIDTH + (DEPTH - 1) * WIDTH * WIDTH + WIDTH * 10)
TARGETS = {"jax_samples": 150_000, "jax_ratio": 4.5, "tf_ratio": 2.0, "overhead": 0.05, "fixed": 3.0,
           "parallel": 1.6, "rss_gb": 1.5}  # fmt: skip


# --- workers (one process each) ------------------------------------------------------------------
def config(backend: str, train_subset: int, epochs: int, spe: int | None, cells=None) -> dict:
    grid = cells or {"initializer": ["he_normal"], "activation": ["elu"], "optimizer": ["adam"], "regularizer": ["none"]}
    train = {"epochs": epochs, "backend": backend, "patience": 100}
    if spe is not None:
        train["steps_per_execution"] = spe
    return {
        "data": {"source": "idx", "path": str(MNIST), "validation_size": 1000, "train_subset": train_subset},
        "model": {"depth": DEPTH, "width": WIDTH},
        "train": train,
        "grid": grid,
        "seeds": [0],
    }


def worker(job: dict) -> dict:
    from gradatlas import backend

    backend.select(job["backend"])
    from gradatlas import config as C

    cfg = config(job["backend"], job["train_subset"], job["epochs"], job.get("spe"), job.get("cells"))
    C.validate_schema(cfg)
    C.check(cfg)
    cells = C.grid_frame(cfg).to_dict("records")
    cell = C.typed_cell(cfg, cells[job.get("cell", 0)])
    spec = C.run_spec(cfg, cell)
    if job["kind"] == "keras_defaults":
        return keras_defaults(spec, Path(job["prepared"]))
    from gradatlas import training

    if not job.get("diagnostics", True):
        class NoProbe(training.Diagnostics):
            def probe(self, step, phase):
                pass

        training.Diagnostics = NoProbe
    record = training.train(spec, Path(job["prepared"]), Path(job["run_dir"]), cell, threads=job["threads"])
    import pandas as pd

    seconds = pd.read_csv(Path(job["run_dir"]) / "history.csv")["seconds"].tolist()
    n = (spec["train_subset"] or 60_000) - spec["validation_size"]
    return {"epoch_seconds": seconds, "n_train": n, "probe_seconds": record["probe_seconds"],
            "steps_per_execution": spec["steps_per_execution"]}  # fmt: skip


def keras_defaults(spec: dict, prepared: Path) -> dict:
    """Plain Keras `fit` with its defaults on the same model and data (the baseline)."""
    import keras

    from gradatlas import backend, data
    from gradatlas.model import build

    backend.configure(2, False, spec["seed"])
    split = data.split(data.open_prepared(prepared), spec["validation_size"], spec["train_subset"])
    model = build(spec)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    seconds = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.t)

    model.fit(split.x_train, split.y_train, batch_size=BATCH, epochs=spec["epochs"], shuffle=True,
              validation_data=(split.x_val, split.y_val), callbacks=[Clock()], verbose=0)  # fmt: skip
    return {"epoch_seconds": seconds, "n_train": len(split.x_train)}


def matmul_gflops() -> dict:
    """fp32 GFLOP/s of a large matmul on the same cores (the machine's practical ceiling)."""
    import numpy as np

    n = 2048
    a, b = np.random.default_rng(0).standard_normal((2, n, n), dtype=np.float32)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(5))
    return {"gflops": 2 * n**3 / best / 1e9}


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# --- the driver ----------------------------------------------------------------------------------
def spawn(job: dict, threads: int = 2) -> subprocess.Popen:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(job)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    proc.started = time.perf_counter()
    return proc


def finish(proc: subprocess.Popen) -> dict:
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - proc.started
    out = proc.stdout.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker failed ({proc.returncode}): {' '.join(proc.args[-1:])}\n{out[-2000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result.update(wall=wall, peak_rss_gb=usage.ru_maxrss * 1024 / 1e9)
    return result


def run(job: dict) -> dict:
    return finish(spawn(job, job.get("threads", 2)))


def steady(result: dict) -> float:
    """samples/s over the epochs after the first (which compiles)."""
    seconds = result["epoch_seconds"][1:] or result["epoch_seconds"]
    return result["n_train"] * len(seconds) / sum(seconds)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="data subset, fewer epochs, smaller study")
    p.add_argument("--spe", type=int, default=None, help="train.steps_per_execution (default: the config default)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        job = json.loads(args.worker)
        print(json.dumps(matmul_gflops() if job["kind"] == "matmul" else worker(job)))
        return

    subset, epochs = (13_000, 3) if args.quick else (60_000, 4)
    study_subset, study_epochs = (6_000, 1) if args.quick else (12_000, 2)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gradatlas-bench-") as tmp:
        tmp = Path(tmp)
        prepared = tmp / "prepared"
        sys.path.insert(0, str(REPO))
        from gradatlas import data

        data.prepare(data.load("idx", MNIST), prepared, {"source": "idx", "path": str(MNIST)})
        base = {"prepared": str(prepared), "threads": 2, "train_subset": subset, "epochs": epochs, "spe": args.spe}
        r, log = {}, lambda msg: print(f"[{time.perf_counter() - started:6.0f} s] {msg}", file=sys.stderr, flush=True)
        r["matmul"] = run({"kind": "matmul"})
        log(f"matmul {r['matmul']['gflops']:.0f} GFLOP/s")
        for b in BACKENDS:
            r[b, "keras"] = run({**base, "kind": "keras_defaults", "backend": b})
            log(f"{b} keras defaults {steady(r[b, 'keras']):,.0f} samples/s")
            for diag in (True, False):
                r[b, diag] = run({**base, "kind": "gradatlas", "backend": b, "diagnostics": diag,
                                  "run_dir": str(tmp / f"run-{b}-{diag}")})  # fmt: skip
                log(f"{b} gradatlas diagnostics={diag} {steady(r[b, diag]):,.0f} samples/s")
            # per-job fixed cost: a whole job (process start to exit) minus its epochs
            small = {**base, "kind": "gradatlas", "backend": b, "train_subset": 3000, "epochs": 1}
            fixed = [run({**small, "run_dir": str(tmp / f"fixed-{b}-{i}")}) for i in range(2)]
            r[b, "fixed"] = min(f["wall"] - sum(f["epoch_seconds"]) for f in fixed)
            log(f"{b} fixed cost {r[b, 'fixed']:.2f} s")
            # whole-study throughput: a fixed grid of 4 trainings, 1 job x 2 threads vs 2 jobs x 1 thread
            cells = {"initializer": ["he_normal", "glorot_uniform"], "activation": ["elu", "tanh"],
                     "optimizer": ["adam"], "regularizer": ["none"]}  # fmt: skip
            study = {**base, "kind": "gradatlas", "backend": b, "train_subset": study_subset, "epochs": study_epochs,
                     "cells": cells}  # fmt: skip
            for jobs in (1, 2):
                t = time.perf_counter()
                queue, running = list(range(4)), []
                while queue or running:
                    while queue and len(running) < jobs:
                        i = queue.pop(0)
                        running.append(spawn({**study, "cell": i, "threads": 2 // jobs,
                                              "run_dir": str(tmp / f"study-{b}-{jobs}-{i}")}, 2 // jobs))  # fmt: skip
                    finish(running.pop(0))
                r[b, "study", jobs] = 4 * 3600 / (time.perf_counter() - t)
            log(f"{b} study {r[b, 'study', 1]:.0f} vs {r[b, 'study', 2]:.0f} trainings/h")
    print(table(r, args, subset, epochs, study_subset, study_epochs, time.perf_counter() - started))


def table(r, args, subset, epochs, study_subset, study_epochs, seconds) -> str:
    base = steady(r["tensorflow", "keras"])
    gflops = r["matmul"]["gflops"]
    rows = [("Keras `fit` defaults, samples/s", [steady(r[b, "keras"]) for b in BACKENDS], None, None)]
    fast = [steady(r[b, True]) for b in BACKENDS]
    rows.append(("GradAtlas training (diagnostics on), samples/s", fast, None, None))
    rows.append(("  × Keras-TF `fit` defaults", [f / base for f in fast], None, None))
    rows.append(("  × the same backend's `fit` defaults", [f / steady(r[b, "keras"]) for f, b in zip(fast, BACKENDS)],
                 ["≥ 2×", "≥ 4.5× TF defaults, ≥ 150k/s"], [fast[0] / base >= TARGETS["tf_ratio"],
                 fast[1] / base >= TARGETS["jax_ratio"] and fast[1] >= TARGETS["jax_samples"]]))  # fmt: skip
    overhead = [sum(r[b, True]["epoch_seconds"]) / sum(r[b, False]["epoch_seconds"]) - 1 for b in BACKENDS]
    rows.append(("diagnostics overhead (whole training)", overhead, "≤ 5%", [o <= TARGETS["overhead"] for o in overhead]))
    rows.append(("  probe time / training time", [r[b, True]["probe_seconds"] / sum(r[b, True]["epoch_seconds"]) for b in BACKENDS], None, None))
    fixed = [r[b, "fixed"] for b in BACKENDS]
    rows.append(("per-job fixed cost (process start→exit minus epochs), s", fixed, "≤ 3 s", [f <= TARGETS["fixed"] for f in fixed]))
    achieved = [f * FLOP_PER_SAMPLE / 1e9 for f in fast]
    rows.append((f"achieved GFLOP/s ({FLOP_PER_SAMPLE / 1e3:.0f} kFLOP/sample)", achieved, None, None))
    rows.append((f"  × large-matmul GFLOP/s ({gflops:.0f})", [a / gflops for a in achieved], None, None))
    s1, s2 = [r[b, "study", 1] for b in BACKENDS], [r[b, "study", 2] for b in BACKENDS]
    rows.append(("study trainings/hour, 1 job × 2 threads", s1, None, None))
    rows.append(("study trainings/hour, 2 jobs × 1 thread", s2, None, None))
    rows.append(("  2 jobs × 1 job", [b / a for a, b in zip(s1, s2)], "≥ 1.6×", [b / a >= TARGETS["parallel"] for a, b in zip(s1, s2)]))
    rss = [r[b, True]["peak_rss_gb"] for b in BACKENDS]
    rows.append(("peak RSS of one training job, GB", rss, "≤ 1.5 GB", [x <= TARGETS["rss_gb"] for x in rss]))

    def fmt(v):
        if isinstance(v, float) and v >= 1000:
            return f"{v:,.0f}"
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    def label(name, v):
        if "overhead" in name or "/ training time" in name:
            return f"{v:.1%}"
        if name.strip().startswith("×"):
            return f"{v:.2f}×"
        return fmt(v)

    spe = r["tensorflow", True]["steps_per_execution"]
    lines = [
        f"GradAtlas benchmark{' (--quick)' if args.quick else ''}: 784-100x5-10 ELU, batch {BATCH}, "
        f"{r['tensorflow', True]['n_train']:,} samples/epoch x {epochs} epochs, steps_per_execution {spe}; "
        f"study: 4 trainings x {study_epochs} epoch(s) on {study_subset - 1000:,} samples",
        f"machine: {platform.node()}, {os.cpu_count()} CPUs visible, load average at the end "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}; Python {platform.python_version()}; "
        f"benchmark wall time {seconds:.0f} s",
        "",
        "| metric | TensorFlow | JAX | target | met |",
        "|---|---|---|---|---|",
    ]
    for name, values, target, met in rows:
        targets = target if isinstance(target, list) else [target] * 2
        t = " / ".join(dict.fromkeys(x for x in targets if x)) if target else ""
        m = " / ".join("yes" if x else "**no**" for x in met) if met else ""
        lines.append(f"| {name} | {label(name, values[0])} | {label(name, values[1])} | {t} | {m} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
