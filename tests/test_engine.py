"""The packed training engine: a pack of heterogeneous members against the same runs trained alone,
isolation of diverging and early-stopping members, and resume after SIGKILL (bit-identical on CPU).

Everything trains for real on a small real-MNIST split; members are built from the config like a
study's runs. No timings are asserted (bench/run.py measures speed).
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from conftest import RESUMABLE, killed_and_uninterrupted, run_script as run_script  # run_script: test_tensorflow's
from gradatlas import config as gaconfig, data, engine, grid, packs, rundir

CONFIG = {
    "data": {"source": "idx", "path": "unused", "validation_size": 500, "train_subset": 2500},
    "model": {"depth": 3, "width": 32},
    "train": {"epochs": 4, "patience": 3},
    "diagnostics": {"probe_size": 200, "early_steps": [1, 10]},
    "grid": {"initializer": ["he_normal"], "activation": ["relu"], "optimizer": ["adam"], "regularizer": ["none"]},
    "seeds": [0],
    "techniques": {"l2": {"factor": 0.001}, "dropout": {"rate": 0.3}, "max_norm": {"max_value": 1.0}},
}
# (initializer, regularizer, seed, spec changes): one graph, ten different runs
MEMBERS = [
    ("glorot_uniform", "none", 0, {}),
    ("he_normal", "none", 0, {}),
    ("he_normal", "l2", 1, {}),
    ("lecun_normal", "dropout", 2, {}),
    ("random_normal", "max_norm", 0, {}),
    ("glorot_uniform", "l1", 1, {}),
    ("he_normal", "none", 2, {"learning_rate": 0.003}),
    ("glorot_uniform", "l1_l2", 3, {"clipnorm": 0.5, "clipvalue": None}),
    ("he_normal", "none", 4, {"learning_rate": 50.0}),  # diverges
    ("glorot_uniform", "none", 5, {"learning_rate": 0.0, "patience": 1}),  # never improves: stops early
]
DIVERGING, STOPPING = 8, 9


def make_members(root: Path, indices=None) -> list[grid.Run]:
    cfg = gaconfig.check(gaconfig.validate_schema(json.loads(json.dumps(CONFIG))))
    members = []
    for i in indices if indices is not None else range(len(MEMBERS)):
        initializer, regularizer, seed, changes = MEMBERS[i]
        cell = {
            "initializer": initializer,
            "activation": "relu",
            "optimizer": "adam",
            "regularizer": regularizer,
            "seed": seed,
        }
        spec = grid.run_spec(cfg, cell).replace(**changes)
        members.append(grid.Run(spec, cell, root / f"member-{i}"))
    return members


@pytest.fixture(scope="module")
def split(mnist_dir):
    return data.split(data.read_idx_folder(mnist_dir), 500, 2500)


@pytest.fixture(scope="module")
def trained(split, tmp_path_factory):
    """{"pack": records of the 10-member pack, "alone": records of each member trained alone,
    "others": the 8 well-behaved members packed without the diverging and stopping ones}."""
    root = tmp_path_factory.mktemp("engine")
    members = make_members(root / "pack")
    assert len({packs.graph_key(m.spec) for m in members}) == 1  # one graph: a real pack
    out = {"pack": engine.train_pack(members, split, root / "pack-state")}
    out["alone"] = [
        engine.train_pack(make_members(root / f"alone-{i}", [i]), split, root / f"alone-state-{i}")[0]
        for i in range(len(MEMBERS))
    ]
    others = [i for i in range(len(MEMBERS)) if i not in (DIVERGING, STOPPING)]
    out["others"] = dict(
        zip(others, engine.train_pack(make_members(root / "others", others), split, root / "others-state"))
    )
    out["dirs"] = {"pack": root / "pack", "alone": [root / f"alone-{i}" for i in range(len(MEMBERS))]}
    return out


def test_step0_diagnostics_equal_packed_and_alone(trained):
    for i in range(len(MEMBERS)):
        packed = pd.read_parquet(trained["dirs"]["pack"] / f"member-{i}" / "diagnostics.parquet").query("step == 0")
        alone = pd.read_parquet(trained["dirs"]["alone"][i] / f"member-{i}" / "diagnostics.parquet").query("step == 0")
        stats = ["grad_w_norm", "delta_norm", "delta_rms", "weight_norm", "act_mean", "act_std"]
        np.testing.assert_allclose(packed[stats].to_numpy(), alone[stats].to_numpy(), rtol=1e-5, err_msg=f"member {i}")


def test_packed_members_reach_their_lone_results(trained):
    for i, (packed, alone) in enumerate(zip(trained["pack"], trained["alone"])):
        assert packed["summary"]["status"] == alone["summary"]["status"], i
        assert abs(packed["summary"]["test_accuracy"] - alone["summary"]["test_accuracy"]) <= 0.003, i
        assert packed["summary"]["epochs_run"] == alone["summary"]["epochs_run"], i


def test_members_really_differ(trained):
    accuracies = [r["summary"]["test_accuracy"] for r in trained["pack"]]
    assert len(set(accuracies)) >= 8
    assert trained["pack"][0]["summary"]["test_accuracy"] > 0.8  # 4 epochs on 2,000 images


def test_a_diverging_member_is_a_result_and_frozen(trained):
    record = trained["pack"][DIVERGING]
    assert record["summary"]["status"] == "diverged"
    history = pd.read_csv(trained["dirs"]["pack"] / f"member-{DIVERGING}" / "history.csv")
    assert len(history) < CONFIG["train"]["epochs"]  # it stopped training when it diverged
    diag = pd.read_parquet(trained["dirs"]["pack"] / f"member-{DIVERGING}" / "diagnostics.parquet")
    assert diag.query("phase == 'epoch'")["dead_frac"].isna().iloc[-1]  # no made-up dead units


def test_an_early_stopping_member_stops_alone(trained):
    record = trained["pack"][STOPPING]
    assert record["summary"]["epochs_run"] == 2 < CONFIG["train"]["epochs"]
    assert all(
        r["summary"]["epochs_run"] == CONFIG["train"]["epochs"]
        for i, r in enumerate(trained["pack"])
        if i not in (DIVERGING, STOPPING)
    )


def test_diverging_and_stopping_members_leave_the_others_unchanged(trained):
    for i, other in trained["others"].items():
        with_them = trained["pack"][i]["summary"]
        assert other["summary"]["status"] == with_them["status"]
        assert abs(other["summary"]["test_accuracy"] - with_them["test_accuracy"]) <= 1e-4, i


def test_run_folders_hold_every_output(trained):
    for i in range(len(MEMBERS)):
        run = trained["dirs"]["pack"] / f"member-{i}"
        assert sorted(p.name for p in run.iterdir()) == sorted(rundir.RUN_FILES)
        assert list((run / "tensorboard").glob("events.out.tfevents.*"))
        model = keras.saving.load_model(run / "model.keras", safe_mode=True)
        assert model.count_params() > 0
    record = json.loads((trained["dirs"]["pack"] / "member-0" / "run.json").read_text())
    assert record["pack"]["member"] == 0 and len(record["pack"]["runs"]) == len(MEMBERS)


# --- resume after SIGKILL ------------------------------------------------------------------------
# mid-epoch (after epoch 2's 15 full batches: 2,000 images, batch 128), while rotating a backup,
# while writing the outputs
KILL_POINTS = ["segment-1-31", "backup-rotated-3", "output-model-1"]


@pytest.fixture(scope="module")
def resumed(mnist_dir, tmp_path_factory):
    return killed_and_uninterrupted(tmp_path_factory, mnist_dir, KILL_POINTS)


def assert_same_run(a: Path, b: Path) -> None:
    """Run folders `a` and `b` hold the same training, bit for bit (but its timings)."""
    ha, hb = pd.read_csv(a / "history.csv"), pd.read_csv(b / "history.csv")
    pd.testing.assert_frame_equal(ha.drop(columns="seconds"), hb.drop(columns="seconds"))
    pd.testing.assert_frame_equal(
        pd.read_parquet(a / "diagnostics.parquet"), pd.read_parquet(b / "diagnostics.parquet")
    )
    wa = keras.saving.load_model(a / "model.keras").get_weights()
    wb = keras.saving.load_model(b / "model.keras").get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(wa, wb))
    ra, rb = json.loads((a / "run.json").read_text()), json.loads((b / "run.json").read_text())
    assert ra["summary"]["test_accuracy"] == rb["summary"]["test_accuracy"]


def test_a_killed_pack_resumes_bit_identical(resumed):
    base, killed = resumed
    for i in RESUMABLE:
        assert_same_run(base / "runs" / f"member-{i}", killed / "runs" / f"member-{i}")
    assert not (killed / "state").exists()  # the pack's backups go once its run folders are complete


def test_resumed_runs_record_where_they_resumed(resumed):
    _, killed = resumed
    record = json.loads((killed / "runs" / f"member-{RESUMABLE[0]}" / "run.json").read_text())
    assert record["resumed_from_epoch"] == CONFIG["train"]["epochs"]  # the last kill came after training


def test_tensorboard_holds_epoch_metrics_per_layer_diagnostics_and_hparams(trained):
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import metadata

    run = trained["dirs"]["pack"] / "member-3"
    tags, hparams = {}, {}
    for path in (run / "tensorboard").glob("events.out.tfevents.*"):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag == metadata.SESSION_START_INFO_TAG:
                    info = metadata.parse_session_start_info_plugin_data(value.metadata.plugin_data.content)
                    hparams = {k: v.string_value or v.number_value for k, v in info.hparams.items()}
                else:
                    tags.setdefault(value.tag, []).append(event.step)
    assert hparams == {
        "initializer": "lecun_normal",
        "activation": "relu",
        "optimizer": "adam",
        "regularizer": "dropout",
        "seed": 2.0,
    }
    diag = pd.read_parquet(run / "diagnostics.parquet")
    assert tags["layer_1/delta_rms"] == sorted(diag["step"].unique())  # every probe, at its optimizer step
    # one step axis: each of the 4 epochs' metrics at the optimizer step that ends it, beside its probe
    epoch_ends = sorted(diag.loc[diag["phase"] == "epoch", "step"].unique())
    assert len(epoch_ends) == 4 and tags["epoch/val_accuracy"] == epoch_ends
    assert len(tags["epoch/lr"]) == 4 and "epoch/learning_rate" not in tags  # each metric once
    assert "summary/test_accuracy" in tags
