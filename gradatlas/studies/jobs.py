"""What each preset rule's job does: config + inputs -> its output files (called by scripts/study_*.py).

Every job first makes `train.backend` the Keras backend of its process (before anything imports
keras), as `scripts/train.py` does; the trainings themselves run through `gradatlas.engine`.
A job that trains holds the lease of its folder (`leased`) for its whole run, as a pack's training does.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path

import pandas as pd

from gradatlas import backend, data, grid, lock
from gradatlas.files import atomic_write, console_handler, write_json
from gradatlas.studies import settings


@contextlib.contextmanager
def leased(folder):
    """Hold the lease of `folder` (`gradatlas.lock.Lease`, the file `<folder>.lease`): an orphaned job
    (its main snakemake lost) and its rerun never write the folder at once; the second waits, then
    fails naming the first. Enter it before `logged`, so that a waiting job leaves the holder's log
    alone. Waiting for the lease, or losing it, is said on the job's stderr, which snakemake shows."""
    log, console = logging.getLogger("gradatlas.lock"), console_handler()
    log.addHandler(console)
    log.setLevel(logging.INFO)
    try:
        with lock.Lease(folder):
            yield
    finally:
        log.removeHandler(console)
        console.close()


def transfer_folder(out) -> Path:
    """A transfer job's folder, from any of its outputs: its seed's (`<study>/transfer/seed~N/`), which
    the pretraining and the task-B variants of the seed both write."""
    return Path(out).parent


def batch_norm_folder(curve_outs) -> Path:
    """A batch-norm job's folder, from its curves' paths: its variant's (`<study>/batch_norm/<variant>/`)."""
    return Path(curve_outs[0]).parent.parent


def _split(config: dict, prepared) -> data.Split:
    return data.split(data.open_prepared(prepared), config["data"]["validation_size"], config["data"]["train_subset"])


def nielsen(config: dict, prepared, out: Path) -> pd.DataFrame:
    backend.select(config["train"]["backend"], 1)
    from gradatlas.studies import nielsen as study

    s = settings(config)
    backend.configure(0)
    split = _split(config, prepared)
    n = s["images"]
    table = study.gradient_norms(split.x_train[:n], split.y_train[:n], s["hidden_layers"], s["width"], config["seeds"])
    atomic_write(Path(out), lambda p: table.to_parquet(p, index=False))
    return table


def transfer_spec(config: dict, seed: int):
    s = settings(config)
    cell = {
        "initializer": s["initializer"],
        "activation": s["activation"],
        "optimizer": s["optimizer"],
        "regularizer": "none",
        "seed": seed,
        "depth": s["depth"],
        "width": s["width"],
    }
    return grid.run_spec(config, cell).replace(batch_size=s["batch_size"])


def transfer_pretrain(config: dict, prepared, seed: int, model_out: Path, record_out: Path, threads: int = 1) -> dict:
    """Pretrain on task A through the engine; its run folder is `<model_out's folder>/pretrain/`."""
    backend.select(config["train"]["backend"], threads)
    from gradatlas.studies import transfer as study

    s = settings(config)
    spec = transfer_spec(config, seed)
    run_dir = transfer_folder(model_out) / "pretrain"
    model_path, record = study.pretrain(
        spec, _split(config, prepared), s["pretrain_epochs"], s["pretrain_patience"], run_dir, threads
    )
    atomic_write(Path(model_out), lambda p: shutil.copyfile(model_path, p))
    write_json(Path(record_out), record | {"spec": spec.as_dict()})
    return record


def transfer_variants(config: dict, prepared, seed: int, pretrained: Path, out: Path, threads: int = 1) -> pd.DataFrame:
    """The task-B variants through the engine; their run folders are `<out's folder>/variants/<variant>/`."""
    backend.select(config["train"]["backend"], threads)
    from gradatlas.studies import transfer as study

    s = settings(config)
    spec = transfer_spec(config, seed).replace(learning_rate=s["learning_rate"])  # task B's rate, every variant
    table = study.run_variants(
        spec,
        _split(config, prepared),
        pretrained,
        s["per_class"],
        s["max_steps"],
        s["patience_steps"],
        runs_dir=transfer_folder(out) / "variants",
        threads=threads,
    )
    atomic_write(Path(out), lambda p: table.to_parquet(p, index=False))
    return table


def batch_norm(
    config: dict, prepared, variant: str, seeds: list[int], curve_outs: list, record_outs: list, threads: int = 1
) -> pd.DataFrame:
    """One variant, every seed as one pack of the engine; per seed its curve and record."""
    backend.select(config["train"]["backend"], threads)
    from gradatlas.studies import batch_norm as study

    s = settings(config)
    cell = {"initializer": "random_normal", "activation": "sigmoid", "optimizer": "sgd", "regularizer": "none"}
    specs = [study.spec_for(grid.run_spec(config, cell | {"seed": seed}), variant, s) for seed in seeds]
    folder = batch_norm_folder(curve_outs)
    curves, records = study.run(
        specs,
        _split(config, prepared),
        s["steps"],
        s["eval_every"],
        s["unit"],
        s["fixed_images"],
        run_dirs=[Path(c).parent / "run" for c in curve_outs],
        pack_dir=folder / ".pack",
        threads=threads,
    )
    for seed, curve, record, curve_out, record_out in zip(seeds, curves, records, curve_outs, record_outs):
        curve.insert(0, "variant", variant)
        curve.insert(1, "seed", seed)
        atomic_write(Path(curve_out), lambda p, c=curve: c.to_parquet(p, index=False))
        write_json(Path(record_out), record | {"variant": variant, "seed": seed})
    return pd.concat(curves)
