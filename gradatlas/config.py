"""The study configuration: validation beyond the JSON schema, the grid, and one run's spec.

The JSON schema (workflow/schemas/config.schema.yaml, applied with `snakemake.utils.validate`,
which also fills in defaults) checks types and ranges. `check` adds what a schema cannot say:
technique names against the catalog (with the closest valid name), cross-key consistency, and
values that would make unsafe paths. Both run before any job is scheduled.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import pandas as pd

from gradatlas.spec import RunSpec

SCHEMA = Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml"

# grid axes whose values are catalog names, and the catalog section each one names
NAMED_AXES = {
    "initializer": "initializer",
    "activation": "activation",
    "optimizer": "optimizer",
    "regularizer": "regularizer",
    "lr_schedule": "lr_schedule",
}
FACTORS = ["initializer", "activation", "optimizer", "regularizer"]
# where an optional numeric axis takes its value from when it is not in the grid
AXIS_DEFAULTS = {
    "learning_rate": None,  # per optimizer: train.learning_rate.<optimizer>
    "depth": ("model", "depth"),
    "width": ("model", "width"),
    "batch_size": ("train", "batch_size"),
    "lr_schedule": ("train", "lr_schedule"),
    "clipnorm": ("train", "clipnorm"),
    "clipvalue": ("train", "clipvalue"),
}
DOWNLOAD_CACHE = "resources/mnist-download"
SAFE_TOKEN = re.compile(r"^[A-Za-z0-9_.+-]+$")


class ConfigError(ValueError):
    """A config problem; the message names the key and what is allowed."""


def validate_schema(config: dict) -> dict:
    """Schema validation with defaults, for use outside a Snakefile (tests, scripts)."""
    from snakemake.utils import validate

    validate(config, str(SCHEMA))
    return config


def token(value) -> str:
    """How one axis value appears in paths and wildcards (`None` -> `none`)."""
    return "none" if value is None else str(value)


def _unknown_name(key: str, value: str, allowed) -> ConfigError:
    allowed = sorted(allowed)
    close = difflib.get_close_matches(value, allowed, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return ConfigError(f"config key {key}: unknown name '{value}'.{hint} Allowed: {', '.join(allowed)}")


def check(config: dict) -> dict:
    """Catalog and consistency checks of a schema-validated config; fills in `data.path` for a
    download (its cache folder) and returns the config."""
    from gradatlas import catalog

    grid = config["grid"]
    for axis, kind in NAMED_AXES.items():
        for i, name in enumerate(grid.get(axis, [])):
            if name not in catalog.CATALOG[kind]:
                raise _unknown_name(f"grid.{axis}[{i}]", name, catalog.CATALOG[kind])
    if config["train"]["lr_schedule"] not in catalog.LR_SCHEDULES:
        raise _unknown_name("train.lr_schedule", config["train"]["lr_schedule"], catalog.LR_SCHEDULES)

    every_name = {name: kind for kind, section in catalog.CATALOG.items() for name in section}
    for name, overrides in config["techniques"].items():
        if name not in every_name:
            raise _unknown_name(f"techniques.{name}", name, every_name)
        defaults = catalog.CATALOG[every_name[name]][name].defaults
        for param in overrides:
            if param not in defaults:
                allowed = ", ".join(defaults) or "(none: this technique has no parameters)"
                raise ConfigError(f"config key techniques.{name}.{param}: unknown parameter. Allowed: {allowed}")

    for name in config["train"]["learning_rate"]:
        if name not in catalog.OPTIMIZERS:
            raise _unknown_name(f"train.learning_rate.{name}", name, catalog.OPTIMIZERS)
    if "learning_rate" not in grid:
        for name in grid["optimizer"]:
            if name not in config["train"]["learning_rate"]:
                raise ConfigError(
                    f"config key train.learning_rate.{name}: missing; optimizer '{name}' is in grid.optimizer "
                    "and grid has no learning_rate axis"
                )

    for axis, values in grid.items():
        tokens = [token(v) for v in values]
        for value, tok in zip(values, tokens):
            if not SAFE_TOKEN.match(tok):
                raise ConfigError(f"config key grid.{axis}: value {value!r} cannot be used in a path")
        if len(set(tokens)) != len(tokens):
            raise ConfigError(f"config key grid.{axis}: duplicate values {values}")

    data = config["data"]
    if data["source"] in ("idx", "npz") and "path" not in data:
        raise ConfigError(f"config key data.path: required when data.source is '{data['source']}'")
    data.setdefault("path", DOWNLOAD_CACHE)
    if data["train_subset"] is not None and data["validation_size"] >= data["train_subset"]:
        raise ConfigError(
            f"config key data.validation_size: {data['validation_size']} must be smaller than "
            f"data.train_subset ({data['train_subset']})"
        )
    if data["validation_size"] >= 60000:
        raise ConfigError("config key data.validation_size: must be smaller than the 60000 training images")

    results = str(config["results"])
    if not results.strip() or any(c in results for c in "{}*?[]") or ".." in Path(results).parts:
        raise ConfigError(
            f"config key results: {results!r} cannot be the results folder "
            "(it must not be empty, contain '..', or any of {{}}*?[] that snakemake would read as wildcards)"
        )

    report = config["report"]
    for axis in report["nuisance"]:
        if axis not in grid:
            raise ConfigError(f"config key report.nuisance: '{axis}' is not an axis of grid ({', '.join(grid)})")
        if axis in FACTORS:
            raise ConfigError(f"config key report.nuisance: '{axis}' is a studied factor, it cannot be a nuisance")
    return config


def data_key(data: dict) -> str:
    """A folder name that identifies where the data comes from (source + path/url)."""
    import hashlib

    origin = f"{data['source']}|{data['path']}|{data['url'] if data['source'] == 'download' else ''}"
    return f"mnist-{data['source']}-{hashlib.sha1(origin.encode()).hexdigest()[:10]}"


def axes(config: dict) -> list[str]:
    """The grid's axes in path order: the four factors first, then optional axes as configured."""
    return FACTORS + [a for a in config["grid"] if a not in FACTORS]


def grid_frame(config: dict) -> pd.DataFrame:
    """One row per run (grid cell x seed), values as path tokens; the Paramspace of the study."""
    names = axes(config)
    index = pd.MultiIndex.from_product(
        [[token(v) for v in config["grid"][a]] for a in names] + [[str(s) for s in config["seeds"]]],
        names=names + ["seed"],
    )
    return index.to_frame(index=False).astype(str)


def typed_cell(config: dict, wildcards: dict) -> dict:
    """Map a run's wildcard tokens back to the typed config values they came from."""
    cell = {}
    for axis in axes(config):
        by_token = {token(v): v for v in config["grid"][axis]}
        if wildcards[axis] not in by_token:
            raise ConfigError(f"run {axis}~{wildcards[axis]} is not in config key grid.{axis}")
        cell[axis] = by_token[wildcards[axis]]
    cell["seed"] = int(wildcards["seed"])
    return cell


def run_spec(config: dict, cell: dict) -> "RunSpec":
    """Everything one training needs, fully resolved, with no reference back to the config.

    This is what `run.json` records as the config used; aggregation compares it with the current
    config to refuse stale runs.
    """
    from gradatlas import catalog

    train, model = config["train"], config["model"]

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
        "deterministic": train["deterministic"],
        "backend": train["backend"],
        "validation_size": config["data"]["validation_size"],
        "train_subset": config["data"]["train_subset"],
        "probe_size": config["diagnostics"]["probe_size"],
        "early_steps": list(config["diagnostics"]["early_steps"]),
    }
    for kind in ("initializer", "activation", "optimizer", "regularizer", "lr_schedule"):
        name = spec[kind]
        spec[f"{kind}_params"] = catalog.params(kind, name, techniques.get(name))
    return RunSpec.from_dict(spec)
