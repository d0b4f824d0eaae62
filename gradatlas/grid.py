"""The grid: the one way from a checked config to its runs.

A study's `grid` names axes (the four factors first, then optional ones: `axes`) and `seeds`; each
combination of values and a seed is one run. A run (`Run`) is its typed cell (the config values of
its axes, seed included), its fully resolved `RunSpec` (`run_spec`) and its folder,
`<root>/<axis>~<token>/.../seed~<seed>`. The workflow (workflow/rules/common.smk), the pack plan
(gradatlas.packs), the engine, aggregation, benchmarks and tests all take runs from here.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pandas as pd

from gradatlas.config import FACTORS, ConfigError, cached_data_key, token
from gradatlas.spec import RunSpec

# where an optional axis takes its value from when it is not in the grid
AXIS_DEFAULTS = {
    "learning_rate": None,  # per optimizer: train.learning_rate.<optimizer>
    "depth": ("model", "depth"),
    "width": ("model", "width"),
    "batch_size": ("train", "batch_size"),
    "lr_schedule": ("train", "lr_schedule"),
    "clipnorm": ("train", "clipnorm"),
    "clipvalue": ("train", "clipvalue"),
}


@dataclass(frozen=True)
class Run:
    """One training: its spec, its cell (grid axes and seed, as typed config values) and its folder."""

    spec: RunSpec
    cell: dict
    run_dir: str

    def __post_init__(self):
        object.__setattr__(self, "run_dir", str(self.run_dir))  # one spelling: pack names hash it


def axes(config: dict) -> list[str]:
    """The grid's axes in path order: the four factors first, then optional axes as configured."""
    return FACTORS + [a for a in config["grid"] if a not in FACTORS]


def frame(config: dict) -> pd.DataFrame:
    """One row per run (grid cell x seed), values as path tokens."""
    names = axes(config)
    index = pd.MultiIndex.from_product(
        [[token(v) for v in config["grid"][a]] for a in names] + [[str(s) for s in config["seeds"]]],
        names=names + ["seed"],
    )
    return index.to_frame(index=False).astype(str)


def typed_cell(config: dict, tokens: dict) -> dict:
    """Map a run's path tokens back to the typed config values they came from."""
    cell = {}
    for axis in axes(config):
        by_token = {token(v): v for v in config["grid"][axis]}
        if tokens[axis] not in by_token:
            raise ConfigError(f"run {axis}~{tokens[axis]} is not in config key grid.{axis}")
        cell[axis] = by_token[tokens[axis]]
    cell["seed"] = int(tokens["seed"])
    return cell


def run_spec(config: dict, cell: dict) -> RunSpec:
    """Everything one training needs, fully resolved, with no reference back to the config.

    This is what `run.json` records as the config used; aggregation compares it with the current
    config to refuse stale runs.
    """
    from gradatlas import catalog

    train = config["train"]

    def value(axis):
        if axis in cell:
            return cell[axis]
        section, key = AXIS_DEFAULTS[axis]
        return config[section][key]

    learning_rate = cell.get("learning_rate", train["learning_rate"].get(cell["optimizer"]))
    techniques = config["techniques"]
    spec = {
        "seed": cell["seed"],
        "initializer": cell["initializer"],
        "activation": cell["activation"],
        "optimizer": cell["optimizer"],
        "regularizer": cell["regularizer"],
        "lr_schedule": value("lr_schedule"),
        "learning_rate": learning_rate,
        "depth": value("depth"),
        "width": value("width"),
        "batch_size": value("batch_size"),
        "clipnorm": value("clipnorm"),
        "clipvalue": value("clipvalue"),
        "epochs": train["epochs"],
        "patience": train["patience"],
        "target_accuracy": train["target_accuracy"],
        "stall_accuracy": train["stall_accuracy"],
        "backend": train["backend"],
        "data": cached_data_key(config["data"]),
        "validation_size": config["data"]["validation_size"],
        "train_subset": config["data"]["train_subset"],
        "probe_size": config["diagnostics"]["probe_size"],
        "early_steps": list(config["diagnostics"]["early_steps"]),
    }
    for kind in ("initializer", "activation", "optimizer", "regularizer", "lr_schedule"):
        name = spec[kind]
        spec[f"{kind}_params"] = catalog.params(kind, name, techniques.get(name))
    return RunSpec.from_dict(spec)


def runs(config: dict, root) -> list[Run]:
    """Every run of a checked config's grid, in path order (`frame`'s), each in its folder under `root`."""
    names = axes(config) + ["seed"]
    values = [config["grid"][a] for a in names[:-1]] + [config["seeds"]]
    out = []
    for combination in itertools.product(*values):
        cell = dict(zip(names, combination))
        run_dir = "/".join([str(root), *(f"{axis}~{token(value)}" for axis, value in cell.items())])
        out.append(Run(run_spec(config, cell), cell, run_dir))
    return out
