"""Config: the schema, the catalog checks, the grid and one run's spec."""

import copy
import dataclasses
import re

import pytest
from snakemake.exceptions import WorkflowError

from gradatlas import catalog, config as gaconfig, grid

BASE = {
    "data": {"source": "idx", "path": "/data/mnist"},
    "grid": {
        "initializer": ["he_normal", "glorot_uniform"],
        "activation": ["relu"],
        "optimizer": ["adam", "sgd"],
        "regularizer": ["none"],
    },
    "seeds": [0, 1],
}


def load(**changes):
    cfg = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = cfg
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    gaconfig.validate_schema(cfg)
    return gaconfig.check(cfg)


def test_defaults_fill_in():
    cfg = load()
    assert cfg["model"] == {"depth": 5, "width": 100}
    assert cfg["train"]["epochs"] == 10 and cfg["train"]["backend"] == "jax" and cfg["train"]["pack_size"] == 64
    assert cfg["diagnostics"]["probe_size"] == 1000 and cfg["diagnostics"]["early_steps"] == [1, 10, 100]


def test_grid_has_one_row_per_cell_and_seed_in_path_order():
    frame = grid.frame(load(grid__learning_rate=[0.1, 0.01]))
    assert len(frame) == 2 * 1 * 2 * 1 * 2 * 2
    assert list(frame.columns) == ["initializer", "activation", "optimizer", "regularizer", "learning_rate", "seed"]


def test_run_spec_takes_the_learning_rate_per_optimizer_or_from_the_axis():
    cfg = load()
    spec = grid.run_spec(
        cfg, {"initializer": "he_normal", "activation": "relu", "optimizer": "sgd", "regularizer": "none", "seed": 1}
    )
    assert spec.learning_rate == 0.01 and spec.depth == 5 and spec.seed == 1
    cfg = load(grid__learning_rate=[0.3])
    cell = grid.typed_cell(cfg, grid.frame(cfg).iloc[0].to_dict())
    assert cell["learning_rate"] == 0.3 and grid.run_spec(cfg, cell).learning_rate == 0.3


def test_optional_axes_override_model_and_train_settings():
    cfg = load(grid__depth=[2, 20], grid__clipnorm=[None, 1.0], grid__lr_schedule=["inverse_time"])
    rows = grid.frame(cfg)
    assert set(rows["clipnorm"]) == {"none", "1.0"}
    cell = grid.typed_cell(cfg, rows[(rows.depth == "20") & (rows.clipnorm == "none")].iloc[0].to_dict())
    spec = grid.run_spec(cfg, cell)
    assert spec.depth == 20 and spec.clipnorm is None and spec.lr_schedule == "inverse_time"
    assert spec.lr_schedule_params == {"k": 0.5}


def test_technique_parameters_reach_the_spec():
    cfg = load(techniques={"random_normal": {"stddev": 0.5}})
    spec = grid.run_spec(
        cfg,
        {"initializer": "random_normal", "activation": "relu", "optimizer": "adam", "regularizer": "none", "seed": 0},
    )
    assert spec.initializer_params == {"stddev": 0.5}


@pytest.mark.parametrize(
    "changes, key, hint",
    [
        ({"grid__initializer": ["he_norml"]}, "grid.initializer[0]", "he_normal"),
        ({"grid__activation": ["Relu"]}, "grid.activation[0]", "relu"),
        ({"techniques": {"dropout": {"rat": 0.1}}}, "techniques.dropout.rat", "rate"),
        ({"techniques": {"drop_out": {}}}, "techniques.drop_out", "dropout"),
        ({"train__lr_schedule": "cosin"}, "train.lr_schedule", "cosine"),
        (
            {"grid__optimizer": ["adam", "nadam"], "train__learning_rate": {"adam": 0.001}},
            "train.learning_rate.nadam",
            "",
        ),
        ({"data__validation_size": 5000, "data__train_subset": 3000}, "data.validation_size", ""),
        ({"report": {"nuisance": ["depth"]}}, "report.nuisance", "grid"),
    ],
)
def test_catalog_and_consistency_errors_name_the_key(changes, key, hint):
    with pytest.raises(gaconfig.ConfigError) as error:
        load(**changes)
    assert key in str(error.value) and hint in str(error.value)


@pytest.mark.parametrize(
    "changes",
    [
        {"train__epochs": 0},
        {"train__batch_size": -1},
        {"model__width": "wide"},
        {"grid__activation": []},
        {"grid__activation": ["relu", "relu"]},
        {"seeds": []},
        {"grid__initializer": ["../../etc"]},
        {"data__source": "ftp"},
        {"train__epoch": 3},
        {"grid__momentum": [0.9]},
    ],
)
def test_schema_refuses_bad_types_ranges_and_unknown_keys(changes):
    with pytest.raises(WorkflowError):
        load(**changes)


def test_data_key_depends_on_the_content_not_the_path(tmp_path, monkeypatch):
    from gradatlas import data

    monkeypatch.chdir(tmp_path)
    shipped = gaconfig.data_key({"source": "bundled", "path": str(data.BUNDLED)})
    # the same canonical bytes, wherever they are and however they arrive: one key
    assert shipped == gaconfig.data_key({"source": "download", "path": "cache", "url": "http://elsewhere/"})
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in data.FILES.values():
        (moved / f"{name}.gz").write_bytes((data.BUNDLED / f"{name}.gz").read_bytes())
    assert gaconfig.data_key({"source": "idx", "path": str(moved)}) == shipped
    # a canonical file stored uncompressed still counts as the canonical content
    import gzip

    raw = moved / "t10k-labels-idx1-ubyte"
    raw.write_bytes(gzip.decompress((moved / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    (moved / "t10k-labels-idx1-ubyte.gz").unlink()
    assert gaconfig.data_key({"source": "idx", "path": str(moved)}) == shipped
    # other bytes: another key
    raw.write_bytes(raw.read_bytes()[:-1] + b"\x00")
    assert gaconfig.data_key({"source": "idx", "path": str(moved)}) != shipped


def test_data_key_of_unreadable_data_reuses_the_prepared_folder_of_that_origin(tmp_path, monkeypatch):
    """A cluster node that cannot see the submit host's data folder finds the prepared folder by origin."""
    import json

    monkeypatch.chdir(tmp_path)
    missing = {"source": "idx", "path": str(tmp_path / "not-here")}
    key = gaconfig.data_key(missing)
    assert key.startswith("mnist-unread-") and key != gaconfig.data_key({"source": "idx", "path": "/elsewhere"})
    made = tmp_path / "resources" / "prepared" / "mnist-0123456789abcdef"
    made.mkdir(parents=True)
    (made / "source.json").write_text(json.dumps({"source": "idx", "path": missing["path"]}))
    assert gaconfig.data_key(missing) == "mnist-0123456789abcdef"


def test_bundled_is_the_default_source_and_takes_no_path():
    from gradatlas import data

    cfg = copy.deepcopy(BASE)
    del cfg["data"]
    cfg = gaconfig.check(gaconfig.validate_schema(cfg))
    assert cfg["data"]["source"] == "bundled" and cfg["data"]["path"] == str(data.BUNDLED)
    assert cfg["data"]["allow_unusual_split"] is False and cfg["train"]["stall_accuracy"] == 0.5
    with pytest.raises(gaconfig.ConfigError, match="data.path.*not used with data.source: bundled"):
        load(data={"source": "bundled", "path": "/data/mnist"})
    with pytest.raises(gaconfig.ConfigError, match="data.train_subset: 70000"):
        load(data={"source": "bundled", "train_subset": 70000})


def test_whole_floats_become_integers():
    cfg = load(
        seeds=[1.0, 2],
        model__width=32.0,
        train__batch_size=64.0,
        grid__depth=[2.0, 3],
        diagnostics__early_steps=[1.0],
        data__validation_size=500.0,
    )
    assert cfg["seeds"] == [1, 2] and all(type(s) is int for s in cfg["seeds"])
    assert type(cfg["model"]["width"]) is int and type(cfg["train"]["batch_size"]) is int
    assert [type(d) for d in cfg["grid"]["depth"]] == [int, int]
    assert type(cfg["diagnostics"]["early_steps"][0]) is int and type(cfg["data"]["validation_size"]) is int
    assert set(grid.frame(cfg)["seed"]) == {"1", "2"}  # tokens "1", not "1.0"
    assert type(cfg["train"]["learning_rate"]["adam"]) is float  # numbers stay numbers


@pytest.mark.parametrize(
    "changes, text",
    [
        ({"seeds": [4294967296]}, "maximum"),
        ({"seeds": [1.5]}, "integer"),
        ({"grid__width": [100000000]}, "maximum"),
        ({"grid__depth": [1000]}, "maximum"),
        ({"grid__batch_size": [10**6]}, "maximum"),
        ({"train__batch_size": 10**6}, "maximum"),
    ],
)
def test_integer_bounds_of_seeds_and_grid_axes(changes, text):
    with pytest.raises(WorkflowError, match=text):
        load(**changes)


@pytest.mark.parametrize(
    "techniques, key",
    [
        ({"dropout": {"rate": 1.5}}, "techniques.dropout.rate"),
        ({"dropout": {"rate": 1.0}}, "techniques.dropout.rate"),
        ({"dropout": {"rate": -0.1}}, "techniques.dropout.rate"),
        ({"l2": {"factor": -1e-4}}, "techniques.l2.factor"),
        ({"l1_l2": {"l1": -1}}, "techniques.l1_l2.l1"),
        ({"max_norm": {"max_value": 0}}, "techniques.max_norm.max_value"),
        ({"random_normal": {"stddev": 0}}, "techniques.random_normal.stddev"),
        ({"batch_norm": {"momentum": 1.0}}, "techniques.batch_norm.momentum"),
        ({"momentum": {"momentum": 1.2}}, "techniques.momentum.momentum"),
        ({"adam": {"beta_2": 1.0}}, "techniques.adam.beta_2"),
        ({"leaky_relu": {"negative_slope": -0.2}}, "techniques.leaky_relu.negative_slope"),
        ({"cosine": {"alpha": 2}}, "techniques.cosine.alpha"),
        ({"dropout": {"rate": "half"}}, "techniques.dropout.rate"),
        ({"dropout": {"rate": True}}, "techniques.dropout.rate"),
    ],
)
def test_technique_parameters_are_range_checked(techniques, key):
    with pytest.raises(gaconfig.ConfigError) as error:
        load(techniques=techniques)
    assert key in str(error.value)


def _outside(allowed):
    """Values just outside a catalog range."""
    out = [allowed.low if allowed.low_open else allowed.low - 0.5]
    if allowed.high is not None:
        out.append(allowed.high if allowed.high_open else allowed.high + 0.5)
    return out


PARAMETERS = [
    (name, param, allowed)
    for section in catalog.CATALOG.values()
    for name, entry in section.items()
    for param, allowed in entry.ranges.items()
]


@pytest.mark.parametrize("name, param, allowed", PARAMETERS, ids=[f"{n}.{p}" for n, p, _ in PARAMETERS])
def test_the_check_refuses_values_outside_the_catalog_range(name, param, allowed):
    for value in _outside(allowed):
        with pytest.raises(
            gaconfig.ConfigError, match=rf"techniques\.{name}\.{param}: .* must be {re.escape(str(allowed))}"
        ):
            load(techniques={name: {param: value}})


def test_the_check_reads_its_ranges_from_the_catalog(monkeypatch):
    """One place: narrowing a catalog entry's range changes what the config check accepts."""
    narrower = dataclasses.replace(catalog.REGULARIZERS["dropout"], ranges={"rate": catalog.Range(0, False, 0.1, True)})
    load(techniques={"dropout": {"rate": 0.2}})
    monkeypatch.setitem(catalog.REGULARIZERS, "dropout", narrower)
    with pytest.raises(
        gaconfig.ConfigError, match=r"techniques\.dropout\.rate: 0\.2 is out of range; it must be in \[0, 0\.1\)"
    ):
        load(techniques={"dropout": {"rate": 0.2}})


def test_technique_parameters_in_range_pass_as_floats():
    cfg = load(techniques={"dropout": {"rate": 0}, "momentum": {"momentum": 0}, "l2": {"factor": 0}})
    assert cfg["techniques"]["momentum"]["momentum"] == 0.0 and type(cfg["techniques"]["momentum"]["momentum"]) is float


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_numbers_are_refused(value):
    with pytest.raises(
        gaconfig.ConfigError, match="grid.learning_rate.0.*not a finite number|grid.learning_rate\\[0\\]"
    ):
        load(grid__learning_rate=[value])
    with pytest.raises(gaconfig.ConfigError, match="train.learning_rate.adam"):
        load(train__learning_rate={"adam": value, "sgd": 0.1})


@pytest.mark.parametrize(
    "results, text",
    [
        ("/", "filesystem root"),
        (".", "working folder"),
        ("./", "working folder"),
        ("..", "'..'"),
        ("/usr", "system folder"),
        ("/etc/gradatlas", "system folder"),
        ("~/results", "not expanded"),
    ],
)
def test_unsafe_results_folders_are_refused(results, text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(gaconfig.ConfigError, match=text) as error:
        load(results=results)
    assert "config key results" in str(error.value)


def test_results_folder_may_not_be_or_contain_home_or_the_repository(tmp_path, monkeypatch):
    from pathlib import Path

    home = tmp_path / "home" / "someone"
    home.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    for results, text in [
        (str(home), "is the home folder"),
        (str(home.parent), "contains the home folder"),
        (str(gaconfig.REPO), "the repository"),
        (str(gaconfig.REPO.parent), "contains"),
    ]:
        with pytest.raises(gaconfig.ConfigError, match=text):
            gaconfig.check_results_folder(results)
    for fine in ["results", "results/demo", str(home / "studies" / "one"), str(Path(tmp_path) / "shared-results")]:
        gaconfig.check_results_folder(fine)


@pytest.mark.parametrize(
    "content, text",
    [
        ('__use_yte__: true\nstudy: ?"x"\n', "__use_yte__"),
        ("study: x\n# __use_yte__: true\n", "__use_yte__"),
        ("study: !!python/name:os.system\n", "not plain YAML"),
        ("- a list\n", "mapping"),
        ("study: [unclosed\n", "not plain YAML"),
    ],
)
def test_check_file_refuses_templates_and_non_plain_files(tmp_path, content, text):
    path = tmp_path / "study.yaml"
    path.write_text(content)
    with pytest.raises(gaconfig.ConfigError, match=text) as error:
        gaconfig.check_file(path)
    assert str(path) in str(error.value)


def test_check_file_passes_the_shipped_configs():
    for path in [gaconfig.REPO / "config.yaml", *sorted((gaconfig.REPO / "studies").glob("*.yaml"))]:
        gaconfig.check_file(path)
    assert gaconfig.main(["check-file", str(gaconfig.REPO / "config.yaml")]) == 0


def test_config_arguments_become_the_types_the_schema_wants():
    """`snakemake --config` leaves every scalar of a nested value a string (YAML's BaseLoader)."""
    from snakemake.cli import parse_config
    from snakemake.utils import update_config

    given = parse_config(
        [
            "train={pack_size: 256, clipnorm: null}",
            "seeds=[0, 1]",
            "data={source: idx, path: '007', allow_unusual_split: false}",
            "techniques={dropout: {rate: 0.3}}",
        ]
    )
    cfg = copy.deepcopy(BASE)
    update_config(cfg, given)
    gaconfig.typed_overrides(cfg, given)
    assert cfg["train"] == {"pack_size": 256, "clipnorm": None} and cfg["seeds"] == [0, 1]
    assert cfg["data"]["path"] == "007" and cfg["data"]["allow_unusual_split"] is False  # text stays text
    assert cfg["techniques"]["dropout"]["rate"] == 0.3
    gaconfig.check(gaconfig.validate_schema(cfg))
    with pytest.raises(WorkflowError, match="0 is less than the minimum of 1"):
        given = parse_config(["train={epochs: 0}"])
        update_config(cfg, given)
        gaconfig.validate_schema(gaconfig.typed_overrides(cfg, given))


def test_check_size_refuses_alias_bombs_endless_and_oversized_documents(tmp_path):
    import yaml

    levels = "".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 7))
    bomb = yaml.safe_load("a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + levels)  # 9**6 values: loads at once
    with pytest.raises(gaconfig.ConfigError, match="aliases .* expanded it holds more than 100000 values"):
        gaconfig.check_size(bomb)
    with pytest.raises(gaconfig.ConfigError, match="refers to the value that contains it"):
        gaconfig.check_size(yaml.safe_load("a: &a [1, *a]"))
    with pytest.raises(gaconfig.ConfigError, match="characters of text"):
        gaconfig.validate_schema(copy.deepcopy(BASE) | {"study": "x" * (2 << 20)})
    gaconfig.check_size(yaml.safe_load((gaconfig.REPO / "config.yaml").read_text()))
    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * 200_000 + "seeds: [0]\n")
    with pytest.raises(gaconfig.ConfigError, match="bytes, more than the 1048576 a config may have"):
        gaconfig.check_file(big)


@pytest.mark.parametrize("value", [True, False])
def test_removed_train_deterministic_is_refused_with_what_to_do(value):
    """It was read by nothing: accepting it would pretend it decides something."""
    with pytest.raises(gaconfig.ConfigError, match=r"train\.deterministic: removed.*Delete the line"):
        load(train__deterministic=value)
    assert (
        "deterministic"
        not in grid.run_spec(
            load(),
            {"initializer": "he_normal", "activation": "relu", "optimizer": "sgd", "regularizer": "none", "seed": 0},
        ).as_dict()
    )
