"""What each preset rule's job does: config + inputs -> its output files (called by scripts/study_*.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from gradatlas import backend, data
from gradatlas import config as gaconfig
from gradatlas.files import atomic_write, write_json
from gradatlas.studies import settings


def _split(config: dict, prepared) -> data.Split:
    return data.split(data.open_prepared(prepared), config["data"]["validation_size"], config["data"]["train_subset"])


def nielsen(config: dict, prepared, out: Path) -> pd.DataFrame:
    from gradatlas.studies import nielsen as study

    s = settings(config)
    backend.configure(1, config["train"]["deterministic"], 0)
    split = _split(config, prepared)
    n = s["images"]
    table = study.gradient_norms(split.x_train[:n], split.y_train[:n], s["hidden_layers"], s["width"], config["seeds"])
    atomic_write(Path(out), lambda p: table.to_parquet(p, index=False))
    return table


def transfer_spec(config: dict, seed: int) -> dict:
    s = settings(config)
    cell = {"initializer": s["initializer"], "activation": s["activation"], "optimizer": s["optimizer"],
            "regularizer": "none", "seed": seed, "depth": s["depth"], "width": s["width"]}  # fmt: skip
    spec = gaconfig.run_spec(config, cell)
    spec["batch_size"] = s["batch_size"]
    return spec


def transfer_pretrain(config: dict, prepared, seed: int, model_out: Path, record_out: Path, threads: int = 1) -> dict:
    from gradatlas.studies import transfer as study

    s = settings(config)
    spec = transfer_spec(config, seed)
    backend.configure(threads, spec["deterministic"], seed)
    model, record = study.pretrain(spec, _split(config, prepared), s["pretrain_epochs"], s["patience"])
    atomic_write(Path(model_out), model.save)
    write_json(Path(record_out), record | {"spec": spec})
    return record


def transfer_variants(config: dict, prepared, seed: int, pretrained: Path, out: Path, threads: int = 1) -> pd.DataFrame:
    from gradatlas.studies import transfer as study

    s = settings(config)
    spec = transfer_spec(config, seed)
    backend.configure(threads, spec["deterministic"], seed)
    table = study.run_variants(spec, _split(config, prepared), pretrained, s["per_class"], s["epochs"], s["patience"])
    atomic_write(Path(out), lambda p: table.to_parquet(p, index=False))
    return table


def batch_norm(config: dict, prepared, variant: str, seed: int, curve_out: Path, record_out: Path, threads: int = 1):
    from gradatlas.studies import batch_norm as study

    s = settings(config)
    cell = {"initializer": "random_normal", "activation": "sigmoid", "optimizer": "sgd", "regularizer": "none", "seed": seed}
    spec = study.spec_for(gaconfig.run_spec(config, cell), variant, s)
    backend.configure(threads, spec["deterministic"], seed)
    curve, record = study.run(spec, _split(config, prepared), s["steps"], s["eval_every"], s["unit"], s["fixed_images"])
    curve.insert(0, "variant", variant)
    curve.insert(1, "seed", seed)
    atomic_write(Path(curve_out), lambda p: curve.to_parquet(p, index=False))
    write_json(Path(record_out), record | {"variant": variant, "seed": seed, "spec": spec})
    return curve
