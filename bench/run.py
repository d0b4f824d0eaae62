"""GradAtlas performance benchmark: the packed training engine against a bare JAX loop, one run.

    PYTHONPATH=$PWD .venv/bin/python bench/run.py            # full: 55,000 images x 3 epochs per K
    PYTHONPATH=$PWD .venv/bin/python bench/run.py --quick    # sanity run: 5,000 images x 2 epochs per K,
                                                             # lighter probe (250 images, no early probes)

Model (both sides): 784-100x5-10 ELU MLP, He-normal init, Adam (lr 0.001), batch 128, real MNIST
from $GRADATLAS_MNIST (default: the copy the project ships in resources/mnist), JAX backend.

- packed engine: `engine.train_pack` on a pack of K members (seeds 0..K-1) with diagnostics on
  (probes at step 0, steps 1/10/100 and every epoch end), validation every epoch, the per-epoch
  backup and TensorBoard files, exactly as a training job runs it. Steady-state throughput: the
  time between the `on_epoch_end` hooks of consecutive epochs (a whole epoch: steps, validation,
  probe, backup), so the first epoch, which compiles, is left out.
- bare loop: the same MLP, init, Adam and batch order written in plain JAX (`jax.vmap` over the K
  members of one step, `lax.scan` over the steps of an epoch, `jax.jit`): training steps only, no
  diagnostics, no validation. Steady-state: the epochs after the first.
- model-samples/s = K x training images x epochs / seconds; packed/bare is their ratio (goal >= 0.8).
- per-job fixed cost: a pack of one trained as `scripts/train.py` does it (fresh process:
  backend.select, engine.train_pack on the prepared folder), process start -> exit wall time minus
  the engine's own epoch seconds (history.csv), best of two (the first fills the XLA cache).
- peak RSS: `ru_maxrss` of each worker process.
- the TensorFlow backend (one run per job): the same engine worker with `train.backend:
  tensorflow`, K=1, its throughput and fixed cost measured the same way; with the JAX figures, the
  default study's training time projected for each backend (which one is the default).

Every measurement is its own worker process, and reports whether TensorFlow was imported (a JAX
worker must not: backend.select keeps it out of a training process).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gradatlas import grid

REPO = Path(__file__).resolve().parent.parent
MNIST = Path(os.environ.get("GRADATLAS_MNIST") or REPO / "resources" / "mnist")
DEPTH, WIDTH, BATCH, LR = 5, 100, 128, 0.001
PACK_SIZES = (1, 4, 16, 64)
GOALS = {"ratio": 0.8, "fixed": 3.0}


# --- workers (one process each) ------------------------------------------------------------------
def bench_config(
    train_subset: int, validation: int, epochs: int, diagnostics: dict | None = None, backend: str = "jax"
) -> dict:
    import yaml

    from gradatlas import config as C

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["data"].update(source="idx", path=str(MNIST), validation_size=validation, train_subset=train_subset)
    cfg["model"].update(depth=DEPTH, width=WIDTH)
    cfg["train"].update(epochs=epochs, batch_size=BATCH, patience=1000, backend=backend)
    cfg["grid"] = {"initializer": ["he_normal"], "activation": ["elu"], "optimizer": ["adam"], "regularizer": ["none"]}
    cfg["diagnostics"].update(diagnostics or {})
    C.validate_schema(cfg)
    return C.check(cfg)


def engine_job(base: dict, k: int, backend: str, where: Path) -> dict:
    """A worker's pack of K members (seeds 0..K-1), resolved here as Snakemake resolves a train
    job's parameters, so the worker starts like scripts/train.py."""

    cfg = bench_config(base["train_subset"], base["validation"], base["epochs"], base["diagnostics"], backend)
    cell = {"initializer": "he_normal", "activation": "elu", "optimizer": "adam", "regularizer": "none"}
    members = [
        {
            "spec": grid.run_spec(cfg, cell | {"seed": s}).as_dict(),
            "cell": cell | {"seed": s},
            "run_dir": str(where / f"run-{s}"),
        }
        for s in range(k)
    ]
    return base | {"kind": "engine", "k": k, "backend": backend, "dir": str(where), "members": members}


def engine_worker(job: dict) -> dict:
    """A pack of K members through the engine, as scripts/train.py runs it."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    from gradatlas import backend

    backend.select(job["backend"], job["threads"])  # before anything imports keras
    from gradatlas import engine
    from gradatlas.spec import RunSpec

    root = Path(job["dir"])
    members = [grid.Run(RunSpec.from_dict(m["spec"]), m["cell"], m["run_dir"]) for m in job["members"]]

    class Clock(engine.Hooks):
        stamps: list = []

        def on_epoch_end(self, pack, epoch):
            self.stamps.append(time.perf_counter())

    clock = Clock()
    start = time.perf_counter()
    records = engine.train_pack(members, Path(job["prepared"]), root / "pack", job["threads"], hooks=[clock])
    total = time.perf_counter() - start
    import pandas as pd

    history = pd.read_csv(root / "run-0" / "history.csv")
    n_train = (job["train_subset"] or 60_000) - job["validation"]
    return {
        "n_train": n_train,
        "stamps": [s - start for s in clock.stamps],
        "total": total,
        "epoch_seconds": history["seconds"].tolist(),
        "probe_seconds": records[0]["probe_seconds"],
        "test_accuracy": [r["summary"]["test_accuracy"] for r in records],
        "tensorflow_imported": "tensorflow" in sys.modules and sys.modules["tensorflow"] is not None,
        "device": backend.device(),
    }


def bare_worker(job: dict) -> dict:
    """The same training in plain JAX: vmap over the members, lax.scan over an epoch's steps
    (ELU, or the job's `activation`, a function of jax.nn)."""
    from gradatlas import backend

    backend.pin(job["threads"])  # as a training job keeps to its cores (before JAX starts)
    import jax
    import jax.numpy as jnp
    import numpy as np

    from gradatlas import data

    split = data.split(data.open_prepared(job["prepared"]), job["validation"], job["train_subset"])
    k, n = job["k"], len(split.x_train)
    steps = n // BATCH
    x_train, y_train = jnp.asarray(split.x_train), jnp.asarray(split.y_train)
    sizes = [784] + [WIDTH] * DEPTH + [10]

    def init(key):
        params = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            key, sub = jax.random.split(key)
            params.append((jax.random.normal(sub, (fan_in, fan_out)) * jnp.sqrt(2.0 / fan_in), jnp.zeros(fan_out)))
        return params

    activation = getattr(jax.nn, job.get("activation", "elu"))

    def loss_fn(params, x, y):
        h = x
        for w, b in params[:-1]:
            h = activation(h @ w + b)
        logits = h @ params[-1][0] + params[-1][1]
        return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - jnp.take_along_axis(logits, y[:, None], axis=-1)[:, 0])

    def member_step(params, m, v, t, x, y):
        grads = jax.grad(loss_fn)(params, x, y)
        b1, b2, eps = 0.9, 0.999, 1e-7  # Keras' Adam defaults
        m = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, m, grads)
        v = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, v, grads)
        lr = LR * jnp.sqrt(1 - b2**t) / (1 - b1**t)
        params = jax.tree.map(lambda p, m, v: p - lr * m / (jnp.sqrt(v) + eps), params, m, v)
        return params, m, v

    pack_step = jax.vmap(member_step, in_axes=(0, 0, 0, None, 0, 0))

    @jax.jit
    def epoch(params, m, v, t, order):
        def body(carry, i):
            params, m, v, t = carry
            idx = jax.lax.dynamic_slice(order, (0, i * BATCH), (k, BATCH))
            params, m, v = pack_step(params, m, v, t + 1, x_train[idx], y_train[idx])
            return (params, m, v, t + 1), None

        (params, m, v, t), _ = jax.lax.scan(body, (params, m, v, t), jnp.arange(steps))
        return params, m, v, t

    params = jax.vmap(init)(jax.random.split(jax.random.key(0), k))
    m = jax.tree.map(jnp.zeros_like, params)
    v = jax.tree.map(jnp.zeros_like, params)
    t = jnp.zeros((), jnp.float32)
    seconds = []
    for e in range(job["epochs"]):
        start = time.perf_counter()
        # per-member batch order, drawn on the host each epoch as the engine does
        order = jnp.asarray(np.stack([np.random.default_rng([s, e]).permutation(n).astype(np.int32) for s in range(k)]))
        params, m, v, t = epoch(params, m, v, t, order)
        jax.block_until_ready(params)
        seconds.append(time.perf_counter() - start)
    return {
        "n_train": steps * BATCH,
        "epoch_seconds": seconds,
        "tensorflow_imported": False,
        "device": str(jax.devices()[0]),
    }


# --- the driver ----------------------------------------------------------------------------------
def run_worker(job: dict, threads: int) -> dict:
    """One worker process: its JSON result, its wall time (process start -> exit, as the parent
    sees it) and its peak RSS (`ru_maxrss` of exactly this child, from wait4)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(job | {"threads": threads})]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode:
        raise RuntimeError(f"benchmark worker failed ({proc.returncode}): {job}\n{stderr[-3000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    return result | {"wall": wall, "peak_rss_gb": usage.ru_maxrss * 1024 / 1e9}


def steady_engine(r: dict, k: int) -> float:
    stamps = r["stamps"]
    gaps = [b - a for a, b in zip(stamps, stamps[1:])] or stamps
    return k * r["n_train"] * len(gaps) / sum(gaps)


def steady_steps(r: dict, k: int) -> float:
    """The engine's training steps alone: its own epoch seconds (history.csv: the compiled step
    loop and the in-epoch probes; not the epoch-end validation, probe and backup)."""
    seconds = r["epoch_seconds"][1:] or r["epoch_seconds"]
    return k * r["n_train"] * len(seconds) / sum(seconds)


def prepare_mnist(folder: Path) -> Path:
    """MNIST from `MNIST`, prepared into `folder` as the pipeline prepares it; returns `folder`."""
    from gradatlas import data

    data.prepare(data.load("idx", MNIST), folder, {"source": "idx", "path": str(MNIST)})
    return folder


def steady_bare(r: dict, k: int) -> float:
    seconds = r["epoch_seconds"][1:] or r["epoch_seconds"]
    return k * r["n_train"] * len(seconds) / sum(seconds)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--quick",
        action="store_true",
        help="5,000 training images x 2 epochs, lighter probe (about 2 minutes on 2 idle cores)",
    )
    p.add_argument("--threads", type=int, default=2, help="threads of each worker (default 2)")
    p.add_argument("--packs", default=",".join(map(str, PACK_SIZES)), help="pack sizes K (default 1,4,16,64)")
    p.add_argument("--out", default=str(REPO / "bench" / "latest.txt"), help="where the output is also written")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        job = json.loads(args.worker)
        print(json.dumps({"engine": engine_worker, "bare": bare_worker}[job["kind"]](job)), flush=True)
        gc.freeze()  # as scripts/train.py ends
        return

    subset, validation, epochs = (6_000, 1_000, 2) if args.quick else (None, 5_000, 3)
    # --quick is a sanity run: a lighter probe (the probe's percentiles dominate a short run)
    diagnostics = {"probe_size": 250, "early_steps": []} if args.quick else None
    packs = [int(k) for k in args.packs.split(",")]
    started = time.perf_counter()
    lines: list[str] = []

    def log(msg):
        line = f"[{time.perf_counter() - started:6.0f} s] {msg}"
        print(line, file=sys.stderr, flush=True)
        lines.append(line)

    with tempfile.TemporaryDirectory(prefix="gradatlas-bench-") as tmp:
        tmp = Path(tmp)
        prepared = prepare_mnist(tmp / "prepared")
        base = {
            "prepared": str(prepared),
            "train_subset": subset,
            "validation": validation,
            "epochs": epochs,
            "diagnostics": diagnostics,
        }
        rows = {}
        for k in packs:
            e = run_worker(engine_job(base, k, "jax", tmp / f"engine-{k}"), args.threads)
            b = run_worker(base | {"kind": "bare", "k": k}, args.threads)
            rows[k] = (e, b)
            log(
                f"K={k}: engine {steady_engine(e, k):,.0f}, bare {steady_bare(b, k):,.0f} model-samples/s, "
                f"ratio {steady_engine(e, k) / steady_bare(b, k):.2f}; engine RSS {e['peak_rss_gb']:.2f} GB, "
                f"tensorflow imported: {e['tensorflow_imported']}"
            )
        # per-job fixed cost: a pack of one, tiny training, as a pipeline job with the default
        # train.threads (1) runs it; best of two: the first fills the XLA compilation cache
        small = {
            "prepared": str(prepared),
            "train_subset": 3_000,
            "validation": 1_000,
            "epochs": 1,
            "diagnostics": diagnostics,
        }
        fixed = {}
        for name in ("jax", "tensorflow"):
            tries = [run_worker(engine_job(small, 1, name, tmp / f"fixed-{name}-{i}"), 1) for i in range(2)]
            fixed[name] = min(tries, key=lambda r: r["wall"] - sum(r["epoch_seconds"]))
            log(
                f"fixed cost ({name}): {fixed_cost(fixed[name]):.2f} s (wall {fixed[name]['wall']:.2f} s, "
                f"epoch {sum(fixed[name]['epoch_seconds']):.2f} s), "
                f"tensorflow imported: {fixed[name]['tensorflow_imported']}, "
                f"RSS {fixed[name]['peak_rss_gb']:.2f} GB"
            )
        # the TensorFlow backend trains one run per job: K=1 only
        tf = run_worker(engine_job(base, 1, "tensorflow", tmp / "engine-tf"), args.threads)
        log(f"TensorFlow K=1: engine {steady_engine(tf, 1):,.0f} model-samples/s; RSS {tf['peak_rss_gb']:.2f} GB")
    seconds = time.perf_counter() - started
    text = "\n".join(lines + [""] + table(rows, fixed, tf, args, subset, validation, epochs, seconds, diagnostics))
    print(text)
    Path(args.out).write_text(text + "\n")


def fixed_cost(r: dict) -> float:
    return r["wall"] - sum(r["epoch_seconds"])


def default_study() -> tuple[int, int, list[int]]:
    """config.yaml's study: its runs, training images per run (all epochs), and its packs' sizes."""
    import yaml

    from gradatlas import config as C, packs

    cfg = C.check(C.validate_schema(yaml.safe_load((REPO / "config.yaml").read_text())))
    runs = grid.runs(cfg, "runs")
    images = cfg["train"]["epochs"] * ((cfg["data"]["train_subset"] or 60_000) - cfg["data"]["validation_size"])
    return len(runs), images, [len(p.runs) for p in packs.plan(runs, cfg["train"]["pack_size"])]


def projection(rows, fixed, tf) -> list[str]:
    """The default study's training time on each backend, from this run's figures: every job one
    after the other with this run's threads; a pack of n runs at the throughput of the measured K
    nearest n."""
    n_runs, images, sizes = default_study()
    nearest = lambda n: min(rows, key=lambda k: abs(k - n))  # noqa: E731
    jax_s = sum(n * images / steady_engine(rows[nearest(n)][0], nearest(n)) + fixed_cost(fixed["jax"]) for n in sizes)
    tf_s = n_runs * (images / steady_engine(tf, 1) + fixed_cost(fixed["tensorflow"]))
    best = "jax" if jax_s <= tf_s else "tensorflow"
    return [
        f"default study (config.yaml: {n_runs:,} runs x {images:,} training images), projected from the figures above, "
        "jobs one after another (validation and probes included, early stopping ignored):",
        "",
        "| backend | jobs | per-job fixed cost (s) | model-samples/s | projected training time |",
        "|---|---|---|---|---|",
        f"| jax (packs, pack_size from config.yaml) | {len(sizes)} | {fixed_cost(fixed['jax']):.2f} "
        f"| {n_runs * images / (jax_s - len(sizes) * fixed_cost(fixed['jax'])):,.0f} | {jax_s / 60:,.0f} min |",
        f"| tensorflow (one run per job) | {n_runs} | {fixed_cost(fixed['tensorflow']):.2f} "
        f"| {steady_engine(tf, 1):,.0f} "
        f"| {tf_s / 60:,.0f} min |",
        "",
        f"fastest: {best} ({max(jax_s, tf_s) / min(jax_s, tf_s):.1f}x); results are equal across backends "
        "(tests/test_tensorflow.py: same initial weights -> the same accuracy and status)",
    ]


def table(rows, fixed, tf, args, subset, validation, epochs, seconds, diagnostics) -> list[str]:
    any_engine = next(iter(rows.values()))[0]
    n = any_engine["n_train"]
    out = [
        f"GradAtlas benchmark{' (--quick)' if args.quick else ''}: 784-100x5-10 ELU, He normal, Adam, "
        f"batch {BATCH}, {n:,} training images x {epochs} epochs per K (steady state: epochs 2-{epochs}), "
        f"JAX on {any_engine['device']}, "
        f"{args.threads} threads per worker; diagnostics "
        + (
            f"lighter for --quick: probe_size {diagnostics['probe_size']}, no early probes "
            "(a sanity run, not the measurement)"
            if diagnostics
            else "as config.yaml: probe_size 1000, early probes at steps 1/10/100, a probe every epoch end"
        ),
        f"machine: {platform.node()}, {os.cpu_count()} CPUs visible, load average at the end "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}; Python {platform.python_version()}; "
        f"wall time {seconds:.0f} s",
        "",
        "| K | packed engine, diagnostics on (model-samples/s) | bare vmap+scan JAX (model-samples/s) "
        "| packed / bare | goal >= 0.8 | engine steps only (history.csv) / bare | engine peak RSS (GB) "
        "| bare peak RSS (GB) | TF imported (engine) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for k, (e, b) in rows.items():
        se, sb = steady_engine(e, k), steady_bare(b, k)
        rss = lambda r: f"{r['peak_rss_gb']:.2f}"  # noqa: E731
        out.append(
            f"| {k} | {se:,.0f} | {sb:,.0f} | {se / sb:.2f} | {'yes' if se / sb >= GOALS['ratio'] else '**no**'} "
            f"| {steady_steps(e, k) / sb:.2f} | {rss(e)} | {rss(b)} | {e['tensorflow_imported']} |"
        )
    out.append("")
    out.append(
        "| per-job fixed cost (pack of 1; process start → exit minus the engine's epoch seconds) "
        "| seconds | goal ≤ 3 s | TF imported | peak RSS (GB) |"
    )
    out.append("|---|---|---|---|---|")
    for name, r in fixed.items():
        f = fixed_cost(r)
        out.append(
            f"| as scripts/train.py runs it, {name} | {f:.2f} | {'yes' if f <= GOALS['fixed'] else '**no**'} "
            f"| {r['tensorflow_imported']} | {r['peak_rss_gb']:.2f} |"
        )
    # run.json's probe_seconds is the member's share (probe wall / K) summed over the probes
    probe = {k: k * e["probe_seconds"] / max(1e-9, e["total"]) for k, (e, _) in rows.items()}
    out.append("")
    out.append("probe time / engine wall time, per K: " + ", ".join(f"K={k}: {v:.1%}" for k, v in probe.items()))
    out.append("")
    return out + projection(rows, fixed, tf)


if __name__ == "__main__":
    main()
