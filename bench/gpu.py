"""GradAtlas on one GPU: the default grid's trainings through the packed engine (JAX), against
plain Keras `fit` on the same GPU. Prepared for a GPU machine; TensorFlow is never imported.

    PYTHONPATH=$PWD python bench/gpu.py --mnist /path/to/mnist                 # every pack of the grid
    PYTHONPATH=$PWD python bench/gpu.py --mnist /path/to/mnist --fraction 0.25 # a quarter, extrapolated
    PYTHONPATH=$PWD python bench/gpu.py --synthetic --fraction 0.1             # no MNIST at hand: random
                                                                               # images of MNIST's shape

What it does:
1. Plans the default study (`config.yaml`: its grid, seeds, epochs, batch size, diagnostics,
   `train.pack_size`) exactly as the workflow does (`gradatlas.packs.plan`), then trains the packs,
   or a stated fraction of them (every n-th pack of each pack size, at least one per size: the
   default grid has packs of 36 runs and, with batch normalization, of 12), one after the other
   in this process with `engine.train_pack` (diagnostics, validation, early stopping, backups, run
   folders: all on). The whole grid's time is extrapolated per pack size (mean seconds of its
   trained packs x its number of packs); trainings/hour = the grid's runs / that time.
2. Trains one run of the grid (`--keras-cell`, default the report's baseline cell) with plain
   Keras `model.compile` + `model.fit` (JAX backend, batch 128, the same epochs and data, validation
   every epoch, no diagnostics, no early stopping) and times it: the sequential Keras pipeline's
   trainings/hour, and its steady-state samples/s (epochs after the first).
3. Writes the figures to bench/latest-gpu.txt (and prints them).

The engine's trainings/hour includes everything a training job does per pack except the process
start (all packs share this process; add the per-job fixed cost of bench/run.py per pack for the
pipeline's figure); Keras' figure likewise excludes process start and data loading.
"""

from __future__ import annotations

import sys

sys.modules["tensorflow"] = None  # noqa: E402 - `import tensorflow` fails: Keras then treats it as absent

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from gradatlas import grid  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def load_config(args) -> dict:
    import yaml

    from gradatlas import config as C

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["data"].update(source="idx", path=str(args.mnist or "synthetic"))
    cfg["train"]["backend"] = "jax"
    if args.epochs:
        cfg["train"]["epochs"] = args.epochs
    if args.train_subset:
        cfg["data"]["train_subset"] = args.train_subset
        cfg["data"]["validation_size"] = min(cfg["data"]["validation_size"], args.train_subset // 5)
    if args.pack_size:
        cfg["train"]["pack_size"] = args.pack_size
    C.validate_schema(cfg)
    return C.check(cfg)


def prepare(args, where: Path) -> Path:
    import numpy as np

    from gradatlas import data

    if args.synthetic:
        rng = np.random.default_rng(0)
        mnist = data.MNIST(
            rng.integers(0, 256, (60_000, 28, 28), dtype=np.uint8),
            rng.integers(0, 10, 60_000, dtype=np.uint8),
            rng.integers(0, 256, (10_000, 28, 28), dtype=np.uint8),
            rng.integers(0, 10, 10_000, dtype=np.uint8),
        )
        provenance = {"source": "synthetic"}
    else:
        mnist = data.load("idx", args.mnist)
        provenance = {"source": "idx", "path": str(args.mnist)}
    data.prepare(mnist, where, provenance)
    return where


def grid_packs(cfg: dict, runs_root: Path):
    from gradatlas import packs

    runs = grid.runs(cfg, runs_root)
    return runs, packs.plan(runs, cfg["train"]["pack_size"])


def train_engine(cfg, prepared: Path, root: Path, fraction: float, log) -> dict:
    from gradatlas import engine

    runs, plan = grid_packs(cfg, root / "runs")
    every = max(1, round(1 / fraction))
    # packs of one size (runs per pack) cost alike; take every n-th of each size, at least one
    by_size: dict[int, list] = {}
    for pack in plan:
        by_size.setdefault(len(pack.runs), []).append(pack)
    chosen = [pack for size in sorted(by_size) for pack in by_size[size][::every]]
    log(
        f"grid: {len(runs)} runs in {len(plan)} packs (pack_size {cfg['train']['pack_size']}; "
        f"{', '.join(f'{len(v)} of {k} runs' for k, v in sorted(by_size.items()))}); "
        f"training {len(chosen)} packs ({sum(len(p.runs) for p in chosen)} runs): every {every}. pack of each size"
    )
    per_pack = []
    start = time.perf_counter()
    for i, pack in enumerate(chosen):
        members = list(pack.runs)
        t = time.perf_counter()
        records = engine.train_pack(members, prepared, root / "packs" / pack.name, threads=1)
        seconds = time.perf_counter() - t
        epochs = sum(r["summary"]["epochs_run"] for r in records)
        per_pack.append(
            {
                "pack": pack.name,
                "members": len(members),
                "seconds": seconds,
                "member_epochs": epochs,
                "converged": sum(r["summary"]["status"] == "converged" for r in records),
            }
        )
        log(f"pack {i + 1}/{len(chosen)} {pack.name}: {len(members)} runs, {epochs} member-epochs, {seconds:.1f} s")
    wall = time.perf_counter() - start
    trained = sum(p["members"] for p in per_pack)
    # the whole grid: per pack size, the mean seconds of its trained packs x its number of packs
    grid_seconds = sum(
        len(packs)
        * sum(p["seconds"] for p in per_pack if p["members"] == size)
        / sum(p["members"] == size for p in per_pack)
        for size, packs in by_size.items()
    )
    return {
        "runs_in_grid": len(runs),
        "packs_in_grid": len(plan),
        "packs_trained": len(chosen),
        "runs_trained": trained,
        "wall_seconds": wall,
        "trainings_per_hour": trained / wall * 3600,
        "grid_seconds": grid_seconds,
        "grid_trainings_per_hour": len(runs) / grid_seconds * 3600,
        "member_epochs": sum(p["member_epochs"] for p in per_pack),
        "per_pack": per_pack,
    }


def train_keras(cfg, prepared: Path, cell_tokens: dict, log) -> dict:
    """One run of the grid with plain Keras compile + fit (its defaults, the grid's optimizer and
    learning rate), validation every epoch, timed per epoch."""
    import keras

    from gradatlas import backend, catalog, data
    from gradatlas.model import build

    cell = grid.typed_cell(cfg, cell_tokens | {"seed": "0"})
    spec = grid.run_spec(cfg, cell)
    backend.configure(spec.seed)
    split = data.split(data.open_prepared(prepared), spec.validation_size, spec.train_subset)
    model = build(spec)
    optimizer = catalog.optimizer(spec.optimizer, spec.optimizer_params, spec.learning_rate)
    model.compile(
        optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    seconds = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.t)

    start = time.perf_counter()
    hist = model.fit(
        split.x_train,
        split.y_train,
        batch_size=spec.batch_size,
        epochs=spec.epochs,
        shuffle=True,
        validation_data=(split.x_val, split.y_val),
        callbacks=[Clock()],
        verbose=0,
    )
    wall = time.perf_counter() - start
    steady = seconds[1:] or seconds
    log(
        f"keras fit {cell_tokens}: {len(seconds)} epochs, {wall:.1f} s, "
        f"val_accuracy {hist.history['val_accuracy'][-1]:.4f}"
    )
    return {
        "cell": cell_tokens,
        "epochs": len(seconds),
        "wall_seconds": wall,
        "trainings_per_hour": 3600 / wall,
        "samples_per_second": len(split.x_train) * len(steady) / sum(steady),
        "epoch_seconds": seconds,
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--mnist", type=Path, default=os.environ.get("GRADATLAS_MNIST"), help="folder of the MNIST IDX files"
    )
    p.add_argument("--synthetic", action="store_true", help="random images of MNIST's shape (timing only)")
    p.add_argument("--fraction", type=float, default=1.0, help="share of the grid's packs to train (extrapolated)")
    p.add_argument("--epochs", type=int, default=None, help="override train.epochs (default: config.yaml's)")
    p.add_argument("--train-subset", type=int, default=None, help="override data.train_subset (default: all)")
    p.add_argument("--pack-size", type=int, default=None, help="override train.pack_size")
    p.add_argument("--keras-cell", default="initializer=glorot_uniform,activation=relu,optimizer=adam,regularizer=none")
    p.add_argument("--skip-keras", action="store_true")
    p.add_argument("--allow-cpu", action="store_true", help="run without a GPU (a dry run of this script)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "latest-gpu.txt")
    args = p.parse_args(argv)
    if not args.synthetic and not args.mnist:
        p.error("--mnist (or $GRADATLAS_MNIST) or --synthetic is needed")
    if not 0 < args.fraction <= 1:
        p.error("--fraction must be in (0, 1]")

    from gradatlas import backend

    backend.select("jax", 1)
    import jax

    device = jax.devices()[0]
    if device.platform == "cpu" and not args.allow_cpu:
        sys.exit("no GPU visible to JAX (jax.devices() is CPU); pass --allow-cpu for a dry run")
    started = time.perf_counter()
    lines: list[str] = []

    def log(msg):
        line = f"[{time.perf_counter() - started:7.1f} s] {msg}"
        print(line, flush=True)
        lines.append(line)

    with tempfile.TemporaryDirectory(prefix="gradatlas-gpu-") as tmp:
        tmp = Path(tmp)
        cfg = load_config(args)
        prepared = prepare(args, tmp / "prepared")
        log(f"device {backend.device()} ({device}); jax {jax.__version__}")
        eng = train_engine(cfg, prepared, tmp, args.fraction, log)
        ker = None
        if not args.skip_keras:
            ker = train_keras(cfg, prepared, dict(kv.split("=") for kv in args.keras_cell.split(",")), log)
    tf = sys.modules.get("tensorflow") is not None
    subset = "" if cfg["data"]["train_subset"] is None else f" (first {cfg['data']['train_subset']} images)"
    out = lines + [
        "",
        f"GradAtlas GPU benchmark: default grid ({eng['runs_in_grid']} runs, {eng['packs_in_grid']} packs), "
        f"{cfg['train']['epochs']} epochs max, batch {cfg['train']['batch_size']}, "
        f"{'synthetic data' if args.synthetic else 'MNIST'}{subset}; "
        f"{backend.device()}; {platform.node()}; TensorFlow imported: {tf}",
        "",
        "| figure | value |",
        "|---|---|",
        f"| packs trained (fraction {args.fraction:g}) | {eng['packs_trained']} of {eng['packs_in_grid']} "
        f"({eng['runs_trained']} runs, {eng['member_epochs']} member-epochs) |",
        f"| packed engine wall time | {eng['wall_seconds']:.1f} s |",
        f"| packed engine trainings/hour (the packs trained) | {eng['trainings_per_hour']:,.0f} |",
        "| whole grid, packed engine (extrapolated per pack size when fraction < 1) "
        f"| {eng['grid_seconds'] / 60:.1f} min |",
        f"| packed engine trainings/hour (whole grid) | {eng['grid_trainings_per_hour']:,.0f} |",
    ]
    if ker:
        out += [
            f"| plain Keras fit, one run ({ker['epochs']} epochs) | {ker['wall_seconds']:.1f} s |",
            f"| plain Keras fit trainings/hour (one at a time) | {ker['trainings_per_hour']:,.0f} |",
            f"| plain Keras fit samples/s (steady epochs) | {ker['samples_per_second']:,.0f} |",
            "| whole grid, plain Keras fit one at a time (extrapolated) "
            f"| {eng['runs_in_grid'] / ker['trainings_per_hour'] * 60:.1f} min |",
            "| packed engine (whole grid) / Keras fit, trainings/hour "
            f"| {eng['grid_trainings_per_hour'] / ker['trainings_per_hour']:.1f}x |",
        ]
    out += ["", "per pack: " + json.dumps(eng["per_pack"])]
    text = "\n".join(out)
    print("\n".join(out[len(lines) :]))
    args.out.write_text(text + "\n")
    if tf:
        sys.exit("TensorFlow was imported: the measurement is not TensorFlow-free")


if __name__ == "__main__":
    main()
