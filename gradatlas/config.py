"""The study configuration: validation beyond the JSON schema, the grid, and one run's spec.

The JSON schema (gradatlas/schemas/config.schema.yaml, shipped with the package; applied with
`snakemake.utils.validate`, which also fills in defaults) checks types and ranges. `check` adds what a
schema cannot say: technique names against the catalog (with the closest valid name) and their parameters' ranges,
whole numbers written as floats (1.0 -> 1), non-finite numbers, cross-key consistency, and
values that would make unsafe paths or an unsafe results folder. Both run before any job is
scheduled.

`python -m gradatlas.config check-file FILE...` refuses config files that Snakemake would evaluate
as code (YTE templates) or that are not plain YAML/JSON; the Makefile runs it before snakemake.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import re
import sys
from pathlib import Path

SCHEMA = Path(__file__).resolve().parent / "schemas" / "config.schema.yaml"

# grid axes whose values are catalog names, and the catalog section each one names
NAMED_AXES = {
    "initializer": "initializer",
    "activation": "activation",
    "optimizer": "optimizer",
    "regularizer": "regularizer",
    "lr_schedule": "lr_schedule",
}
FACTORS = ["initializer", "activation", "optimizer", "regularizer"]
DOWNLOAD_CACHE = "resources/mnist-download"
PREPARED_ROOT = "resources/prepared"
SAFE_TOKEN = re.compile(r"^[A-Za-z0-9_.+-]+$")
# Bounds of a config file and of the config with every YAML alias expanded (a real study's config
# holds a few hundred values): past them, an alias bomb would take minutes and gigabytes to validate.
MAX_FILE_BYTES = 1 << 20
MAX_VALUES, MAX_TEXT = 100_000, 1 << 20
# The most runs (grid cells x seeds) one study plans: planning them takes about a minute on 2 cores
# (bench/plan.py), Snakemake's dry run of them far longer
MAX_RUNS = 100_000
REPO = Path(__file__).resolve().parent.parent
CANONICAL_TRAIN_IMAGES = 60000
# Folders that must never be the results folder (besides /, the home, working and repository folders
# and any folder above them): these exactly, and anything inside the second group.
SYSTEM_FOLDERS = (
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/opt",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/srv",
    "/sys",
    "/tmp",
    "/usr",
    "/var",
    "/home",
    "/mnt",
    "/media",
)
SYSTEM_TREES = ("/boot", "/dev", "/etc", "/proc", "/sys")


class ConfigError(ValueError):
    """A config problem; the message names the key and what is allowed."""


# Keys GradAtlas no longer reads, with what to do instead. Refused, not ignored, so a config never
# looks as if it still decided something; the schema admits them so that this note is what one sees.
REMOVED_KEYS = {
    ("train", "deterministic"): (
        "removed: nothing read it. A run is determined by its seed without it (seeded initializers, "
        "batch orders and dropout masks; a resumed run ends bit-identical on the same CPU). Delete the line"
    ),
}


def validate_schema(config: dict) -> dict:
    """Schema validation with defaults, for use outside a Snakefile (tests, scripts)."""
    from snakemake.utils import validate

    check_size(config)
    validate(config, str(SCHEMA))
    return config


def check_size(document, where: str = "the config") -> None:
    """Refuse a document that, with every YAML alias expanded, holds more than MAX_VALUES values
    and keys or MAX_TEXT characters of text, or that refers to itself.

    YAML loaders share one object for all uses of an anchor, so nine levels of `[*a, *a, ...]`
    (a few hundred bytes) load at once, but anything walking the config (the schema validation,
    its error message) sees 10**9 values. Sizes are summed per shared object, so this costs one
    visit per distinct object."""
    sizes: dict[int, tuple[int, int]] = {}
    open_ids: set[int] = set()

    def size(node) -> tuple[int, int]:
        if isinstance(node, str):
            return 1, len(node)
        if not isinstance(node, (dict, list)):
            return 1, 0
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in open_ids:
            raise ConfigError(f"{where}: a YAML alias refers to the value that contains it (an endless document)")
        open_ids.add(id(node))
        values, text = 1, 0
        for child in (item for pair in node.items() for item in pair) if isinstance(node, dict) else node:
            child_values, child_text = size(child)
            values, text = values + child_values, text + child_text
            if values > MAX_VALUES or text > MAX_TEXT:
                raise ConfigError(
                    f"{where}: with its YAML aliases (*name) expanded it holds more than {MAX_VALUES} values "
                    f"or {MAX_TEXT} characters of text; a study's config is far smaller (an alias bomb?)"
                )
        open_ids.discard(id(node))
        sizes[id(node)] = values, text
        return sizes[id(node)]

    size(document)


def token(value) -> str:
    """How one axis value appears in paths and wildcards (`None` -> `none`)."""
    return "none" if value is None else str(value)


def _unknown_name(key: str, value: str, allowed) -> ConfigError:
    allowed = sorted(allowed)
    close = difflib.get_close_matches(value, allowed, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return ConfigError(f"config key {key}: unknown name '{value}'.{hint} Allowed: {', '.join(allowed)}")


def _load_schema() -> dict:
    import yaml

    with open(SCHEMA, encoding="utf-8") as f:
        return yaml.safe_load(f)


def _resolve(schema, root: dict):
    while isinstance(schema, dict) and "$ref" in schema:
        schema = root["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _subschema(schema: dict, name: str):
    """The schema of key `name` of an object described by `schema` (None: unknown key)."""
    extra = schema.get("additionalProperties")
    return schema.get("properties", {}).get(name, extra if isinstance(extra, dict) else None)


def _types(schema: dict) -> list[str]:
    types = schema.get("type", [])
    return [types] if isinstance(types, str) else types


def _json_type(value) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    return {float: "number", type(None): "null", list: "array", dict: "object"}.get(type(value), "string")


def typed_overrides(config: dict, given) -> dict:
    """The values given with `snakemake --config` (`given`, as Snakemake parsed them) as YAML typed
    values in `config`, in place; returns config. Run before the schema validation.

    Snakemake reads a nested --config value (`train={pack_size: 256}`, `seeds=[0]`) with YAML's
    BaseLoader, which leaves every scalar in it a string ('256'), so the documented forms failed
    the schema ("'256' is not of type 'integer'"). Each such string is read again with the safe
    loader, and the result kept where the schema allows its type there and it is not text: a value
    the schema wants as text stays as given (`study=007`), and an out-of-range number then meets
    the schema's own bound ("0 is less than the minimum of 1")."""
    import yaml

    root = _load_schema()

    def typed(value, schema):
        schema = _resolve(schema, root)
        if not isinstance(schema, dict):
            return value
        if isinstance(value, dict):
            return {name: typed(item, _subschema(schema, name)) for name, item in value.items()}
        if isinstance(value, list):
            return [typed(item, schema.get("items")) for item in value]
        if not isinstance(value, str):
            return value
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        kind, allowed = _json_type(parsed), _types(schema)
        fits = kind in allowed or (kind == "integer" and "number" in allowed)
        return parsed if kind != "string" and fits else value

    def walk(node: dict, given: dict, schema):
        schema = _resolve(schema, root)
        for name, value in given.items():
            sub = _subschema(schema, name) if isinstance(schema, dict) else None
            if isinstance(value, dict) and isinstance(node.get(name), dict):
                walk(node[name], value, sub)
            elif name in node:
                node[name] = typed(node[name], sub)

    walk(config, dict(given), root)
    return config


def _integers(node, schema: dict, root: dict, key: str):
    """Whole numbers written as floats (1.0) where the schema wants an integer become ints, in place;
    returns the (possibly replaced) node. JSON schema counts 1.0 as an integer, Python and Keras do not."""
    schema = _resolve(schema, root)
    if not isinstance(schema, dict):
        return node
    types = _types(schema)
    if isinstance(node, float) and "integer" in types and "number" not in types and node.is_integer():
        return int(node)
    if isinstance(node, dict):
        for name in list(node):
            sub = _subschema(schema, name)
            if sub is not None:
                node[name] = _integers(node[name], sub, root, f"{key}.{name}" if key else name)
    elif isinstance(node, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(node):
            node[i] = _integers(item, schema["items"], root, f"{key}[{i}]")
    return node


def _finite(node, key: str = "") -> None:
    """Refuse NaN and infinities anywhere (a schema's minimum does not catch NaN)."""
    if isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(f"config key {key}: {node} is not a finite number")
    if isinstance(node, dict):
        for name, value in node.items():
            _finite(value, f"{key}.{name}" if key else str(name))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _finite(value, f"{key}[{i}]")


def _check_parameter(name: str, param: str, value, default, allowed):
    """Type (that of the catalog default) and range (`allowed`, from the catalog entry) of one technique
    parameter; returns the value, a whole number as a float where the default is a float (Keras
    refuses an int momentum)."""
    key = f"techniques.{name}.{param}"
    if isinstance(default, bool) or not isinstance(default, (int, float)):
        if type(value) is not type(default):
            raise ConfigError(
                f"config key {key}: {value!r} must be a {type(default).__name__} like the default {default!r}"
            )
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"config key {key}: {value!r} is not a number")
    if isinstance(default, float):
        value = float(value)
    if value not in allowed:
        raise ConfigError(f"config key {key}: {value} is out of range; it must be {allowed}")
    return value


def check_results_folder(results: str, cwd=None) -> None:
    """The results folder must be a folder of its own (see README, Configuration)."""
    text = str(results)
    if not text.strip() or any(c in text for c in "{}*?[]") or ".." in Path(text).parts:
        raise ConfigError(
            f"config key results: {text!r} cannot be the results folder "
            "(it must not be empty, contain '..', or any of {}*?[] that snakemake would read as wildcards)"
        )
    if text.startswith("~"):
        raise ConfigError(f"config key results: {text!r}: '~' is not expanded; write the full path")
    cwd = Path(cwd or os.getcwd()).resolve()
    # a file or a link to nowhere on the way would fail later, deep in snakemake or the lock
    given = cwd / text
    for path in (given, *given.parents):
        if os.path.lexists(path) and not path.is_dir():
            what = "is a link to nowhere" if path.is_symlink() and not path.exists() else "is not a folder"
            raise ConfigError(f"config key results: {text!r}: {path} {what}; give the study a folder of its own")
    folder = given.resolve()
    protected = {"the working folder": cwd, "the repository": REPO, "the home folder": Path.home().resolve()}
    if folder == Path(folder.anchor):
        raise ConfigError(f"config key results: {text!r} is the filesystem root; give the study a folder of its own")
    for what, path in protected.items():
        if folder == path or folder in path.parents:
            relation = "is" if folder == path else "contains"
            raise ConfigError(
                f"config key results: {text!r} ({folder}) {relation} {what} ({path}); give the study a "
                "folder of its own, such as results/<study>"
            )
    if str(folder) in SYSTEM_FOLDERS or any(folder.is_relative_to(tree) for tree in SYSTEM_TREES):
        raise ConfigError(
            f"config key results: {text!r} ({folder}) is a system folder; give the study a folder of its own"
        )


def check_grid_size(config: dict) -> None:
    """Refuse a grid of more than MAX_RUNS runs before anything is planned: the plan and Snakemake's
    DAG (files of every run) grow with the runs, to hours and tens of gigabytes at a million."""
    sizes = {axis: len(values) for axis, values in config["grid"].items()} | {"seeds": len(config["seeds"])}
    runs = math.prod(sizes.values())
    if runs > MAX_RUNS:
        cells = runs // sizes["seeds"]
        raise ConfigError(
            f"config key grid: the grid has {runs:,} runs ({' x '.join(f'{n} {axis}' for axis, n in sizes.items())}); "
            f"one study plans at most {MAX_RUNS:,}. Split it into at least {math.ceil(runs / MAX_RUNS)} studies, "
            "each with its own results folder: "
            + (f"at most {MAX_RUNS // cells:,} seeds each, or " if cells <= MAX_RUNS else "")
            + "some of the values of a grid axis each"
        )


def check(config: dict) -> dict:
    """Catalog and consistency checks of a schema-validated config; turns whole floats into ints where
    the schema wants integers, fills in `data.path` for a download (its cache folder) or the shipped
    copy, and returns the config (changed in place)."""
    from gradatlas import catalog, data as gadata

    for (section, key), note in REMOVED_KEYS.items():
        if key in config.get(section, {}):
            raise ConfigError(f"config key {section}.{key}: {note}")
    schema = _load_schema()
    _integers(config, schema, schema, "")
    _finite(config)

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
        entry = catalog.CATALOG[every_name[name]][name]
        for param in overrides:
            if param not in entry.defaults:
                allowed = ", ".join(entry.defaults) or "(none: this technique has no parameters)"
                raise ConfigError(f"config key techniques.{name}.{param}: unknown parameter. Allowed: {allowed}")
            value, default, allowed = overrides[param], entry.defaults[param], entry.ranges[param]
            overrides[param] = _check_parameter(name, param, value, default, allowed)

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
    check_grid_size(config)

    data = config["data"]
    if data["source"] in ("idx", "npz") and "path" not in data:
        raise ConfigError(f"config key data.path: required when data.source is '{data['source']}'")
    if data["source"] == "bundled":
        if "path" in data and Path(data["path"]).resolve() != gadata.BUNDLED:
            raise ConfigError(
                f"config key data.path: {data['path']!r} is not used with data.source: bundled (the MNIST "
                "shipped in resources/mnist/); remove it, or set data.source: idx to read another folder"
            )
        data["path"] = str(gadata.BUNDLED)
    data.setdefault("path", DOWNLOAD_CACHE)
    if data["train_subset"] is not None and data["validation_size"] >= data["train_subset"]:
        raise ConfigError(
            f"config key data.validation_size: {data['validation_size']} must be smaller than "
            f"data.train_subset ({data['train_subset']})"
        )
    if data["validation_size"] >= CANONICAL_TRAIN_IMAGES:
        raise ConfigError("config key data.validation_size: must be smaller than the 60000 training images")
    canonical = data["source"] in ("bundled", "download")
    if canonical and data["train_subset"] is not None and data["train_subset"] > CANONICAL_TRAIN_IMAGES:
        raise ConfigError(
            f"config key data.train_subset: {data['train_subset']} is more than the {CANONICAL_TRAIN_IMAGES} "
            "training images of MNIST"
        )
    # other data: against its own count, here rather than in every training job
    available = None if canonical else gadata.train_count(data["source"], data["path"])
    taken = data["train_subset"] or available
    if available is not None and (taken > available or data["validation_size"] >= taken):
        key, value = ("train_subset", taken) if taken > available else ("validation_size", data["validation_size"])
        raise ConfigError(
            f"config key data.{key}: {value} is too large: {data['path']} holds {available} training images "
            "(data.validation_size must be smaller than the images taken, data.train_subset at most all of them)"
        )

    check_results_folder(config["results"])

    report = config["report"]
    for axis in report["nuisance"]:
        if axis not in grid:
            raise ConfigError(f"config key report.nuisance: '{axis}' is not an axis of grid ({', '.join(grid)})")
        if axis in FACTORS:
            raise ConfigError(f"config key report.nuisance: '{axis}' is a studied factor, it cannot be a nuisance")
    return config


_DATA_KEYS: dict = {}


def cached_data_key(data: dict) -> str:
    """data_key once per data origin and process (it reads the files' checksums)."""
    origin = json.dumps(data, sort_keys=True, default=str)
    if origin not in _DATA_KEYS:
        _DATA_KEYS[origin] = data_key(data)
    return _DATA_KEYS[origin]


def data_key(data: dict) -> str:
    """The prepared data's folder name under resources/prepared/: a digest of the data's CONTENT
    (gradatlas.data.content_digest), not of its path, so moving or copying the MNIST folder with the
    same bytes, or switching between sources of the same canonical files, keeps the prepared data and
    every finished training.

    Where the files cannot be read here (a cluster node that does not see a folder of the submit
    host, where prepare_data ran as a local rule), the key of the prepared folder made from the same
    source and path is reused; failing that, a key from the path, so prepare_data runs and reports
    the file it cannot read.
    """
    from gradatlas import data as gadata

    try:
        return f"mnist-{gadata.content_digest(data['source'], data['path'])[:16]}"
    except gadata.DataError:
        pass
    where = str(Path(data["path"]).absolute())
    made = []
    for record in Path(PREPARED_ROOT).glob("mnist-*/source.json"):
        try:
            source = json.loads(record.read_text())
        except (OSError, ValueError):
            continue
        if source.get("source") == data["source"] and source.get("path") == where:
            made.append((record.stat().st_mtime, record.parent.name))
    if made:
        return max(made)[1]
    origin = f"{data['source']}|{where}"
    return f"mnist-unread-{hashlib.sha256(origin.encode()).hexdigest()[:16]}"


# --- config files ----------------------------------------------------------------------------------
def check_file(path) -> None:
    """Refuse a config file that Snakemake would evaluate as code or that is not plain data.

    Snakemake reads a --configfile as JSON, else through YTE: a YAML file with `__use_yte__: true`
    at its top level is a template whose `?` expressions are Python, run while the file is read,
    even by `snakemake -n`. YTE loads YAML with PyYAML's FullLoader, which also builds some
    `!!python/...` tags. A file passes only if it is JSON, or YAML that the safe loader reads into a
    mapping and that never mentions `__use_yte__`, and if it is of a config's size (`check_size`).
    """
    import yaml

    path = Path(path)
    try:
        if (size := path.stat().st_size) > MAX_FILE_BYTES:
            raise ConfigError(f"config file {path}: {size} bytes, more than the {MAX_FILE_BYTES} a config may have")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path}: cannot be read ({exc})") from None
    try:
        document = json.loads(text)
    except ValueError:
        if "__use_yte__" in text:
            raise ConfigError(
                f"config file {path}: it mentions __use_yte__, which makes Snakemake evaluate it as a YTE "
                "template, running the Python code in it; GradAtlas configs are plain YAML: remove it"
            ) from None
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path}: not plain YAML or JSON ({exc})") from None
    if not isinstance(document, dict):
        raise ConfigError(
            f"config file {path}: must hold keys at its top level (a mapping), not {type(document).__name__}"
        )
    check_size(document, f"config file {path}")


def main(argv: list[str] | None = None) -> int:
    """`python -m gradatlas.config check-file FILE...`: exit 1 with a message for an unsafe file."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 or argv[0] != "check-file":
        print("usage: python -m gradatlas.config check-file FILE...", file=sys.stderr)
        return 2
    try:
        for name in argv[1:]:
            check_file(name)
    except ConfigError as exc:
        print(f"ConfigError: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
