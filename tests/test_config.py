"""Config: the schema, the catalog checks, the grid and one run's spec."""

import copy

import pytest
from snakemake.exceptions import WorkflowError

from gradatlas import config as gaconfig

BASE = {
    "data": {"source": "idx", "path": "/data/mnist"},
    "grid": {"initializer": ["he_normal", "glorot_uniform"], "activation": ["relu"], "optimizer": ["adam", "sgd"],
             "regularizer": ["none"]},  # fmt: skip
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
    assert cfg["train"]["epochs"] == 10 and cfg["train"]["backend"] == "tensorflow"
    assert cfg["diagnostics"]["probe_size"] == 1000 and cfg["diagnostics"]["early_steps"] == [1, 10, 100]


def test_grid_has_one_row_per_cell_and_seed_in_path_order():
    frame = gaconfig.grid_frame(load(grid__learning_rate=[0.1, 0.01]))
    assert len(frame) == 2 * 1 * 2 * 1 * 2 * 2
    assert list(frame.columns) == ["initializer", "activation", "optimizer", "regularizer", "learning_rate", "seed"]


def test_run_spec_takes_the_learning_rate_per_optimizer_or_from_the_axis():
    cfg = load()
    spec = gaconfig.run_spec(cfg, {"initializer": "he_normal", "activation": "relu", "optimizer": "sgd",
                                   "regularizer": "none", "seed": 1})  # fmt: skip
    assert spec["learning_rate"] == 0.01 and spec["depth"] == 5 and spec["seed"] == 1
    cfg = load(grid__learning_rate=[0.3])
    cell = gaconfig.typed_cell(cfg, gaconfig.grid_frame(cfg).iloc[0].to_dict())
    assert cell["learning_rate"] == 0.3 and gaconfig.run_spec(cfg, cell)["learning_rate"] == 0.3


def test_optional_axes_override_model_and_train_settings():
    cfg = load(grid__depth=[2, 20], grid__clipnorm=[None, 1.0], grid__lr_schedule=["inverse_time"])
    rows = gaconfig.grid_frame(cfg)
    assert set(rows["clipnorm"]) == {"none", "1.0"}
    cell = gaconfig.typed_cell(cfg, rows[(rows.depth == "20") & (rows.clipnorm == "none")].iloc[0].to_dict())
    spec = gaconfig.run_spec(cfg, cell)
    assert spec["depth"] == 20 and spec["clipnorm"] is None and spec["lr_schedule"] == "inverse_time"
    assert spec["lr_schedule_params"] == {"k": 0.5}


def test_technique_parameters_reach_the_spec():
    cfg = load(techniques={"random_normal": {"stddev": 0.5}})
    spec = gaconfig.run_spec(cfg, {"initializer": "random_normal", "activation": "relu", "optimizer": "adam",
                                   "regularizer": "none", "seed": 0})  # fmt: skip
    assert spec["initializer_params"] == {"stddev": 0.5}


@pytest.mark.parametrize(
    "changes, key, hint",
    [
        ({"grid__initializer": ["he_norml"]}, "grid.initializer[0]", "he_normal"),
        ({"grid__activation": ["Relu"]}, "grid.activation[0]", "relu"),
        ({"techniques": {"dropout": {"rat": 0.1}}}, "techniques.dropout.rat", "rate"),
        ({"techniques": {"drop_out": {}}}, "techniques.drop_out", "dropout"),
        ({"train__lr_schedule": "cosin"}, "train.lr_schedule", "cosine"),
        ({"grid__optimizer": ["adam", "nadam"], "train__learning_rate": {"adam": 0.001}}, "train.learning_rate.nadam", ""),
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


def test_data_key_depends_on_the_origin():
    a = gaconfig.data_key({"source": "idx", "path": "/a", "url": "u"})
    assert a == gaconfig.data_key({"source": "idx", "path": "/a", "url": "other"})
    assert a != gaconfig.data_key({"source": "idx", "path": "/b", "url": "u"})
