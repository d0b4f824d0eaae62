"""The spine end to end: the real snakemake CLI on a small real-MNIST study, and the physics of
vanishing gradients and saturation at initialization."""

import json
import math
import re

import pandas as pd
import pytest
import yaml

from conftest import REPO, make_workspace, pending, planned_runs, run_snakemake, train_runs, write_config
from gradatlas import config as gaconfig, data, diagnostics, grid, model as gamodel
from gradatlas.outcomes import STATUSES

pytestmark = pytest.mark.integration
RUN = "results/runs/initializer~he_normal/activation~relu/optimizer~adam/regularizer~none/seed~0"


def test_tables_have_one_row_per_run_and_documented_columns(small_study):
    runs = pd.read_parquet(small_study / "results/tables/runs.parquet")
    assert len(runs) == 16
    for column in [
        "initializer",
        "activation",
        "optimizer",
        "regularizer",
        "seed",
        "test_accuracy",
        "test_loss",
        "best_val_accuracy",
        "best_epoch",
        "epochs_run",
        "epochs_to_target",
        "status",
        "train_seconds",
        "samples_per_second",
        "vanishing_ratio_init",
        "vanishing_ratio_final",
        "health_init",
        "health_final",
    ]:
        assert column in runs.columns
    assert set(runs["status"]) <= set(STATUSES)
    assert runs[["initializer", "activation", "optimizer", "regularizer"]].drop_duplicates().shape[0] == 16
    curves = pd.read_parquet(small_study / "results/tables/curves.parquet")
    assert len(curves) == runs["epochs_run"].sum()
    assert {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"} <= set(curves.columns)
    diag = pd.read_parquet(small_study / "results/tables/diagnostics.parquet")
    assert set(diag["phase"]) == {"init", "early", "epoch"}
    assert sorted(diag["step"].unique())[:3] == [0, 1, 10]
    assert (diag.groupby(["initializer", "activation", "optimizer", "regularizer", "step"]).size() == 5).all()
    assert pd.read_csv(small_study / "results/tables/runs.csv").shape == runs.shape


def test_run_folder_holds_outputs_and_provenance(small_study):
    run = small_study / RUN
    for name in ["run.json", "history.csv", "diagnostics.parquet", "model.keras"]:
        assert (run / name).is_file()
    assert any((run / "tensorboard").rglob("events.out.tfevents.*"))
    assert not (run / "_resume").exists()
    record = json.loads((run / "run.json").read_text())
    prov = record["provenance"]
    assert {"keras", "python", "numpy"} <= set(prov["versions"]) and prov["hostname"] and prov["device"]
    assert prov["git_commit"]
    assert record["spec"]["depth"] == 4 and record["cell"]["seed"] == 0
    assert record["summary"]["test_accuracy"] > 0.5  # he_normal + relu + adam learns even in 2 short epochs


def test_report_is_one_self_contained_file(small_study):
    html = (small_study / "results/report/index.html").read_text()
    sources = re.findall(r'<img[^>]+src="([^"]+)"', html)
    assert len(sources) >= 3 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert html.count("<script") == 1 and "table.sortable" in html  # only the per-run table's sorting


def test_finished_study_has_nothing_to_do_and_a_new_seed_trains_only_new_cells(small_study):
    again = run_snakemake(small_study, "-n", "--cores", "1", "--configfile", "test.yaml")
    assert "Nothing to be done" in again.stdout + again.stderr
    write_config(small_study, {"seeds": [0, 1]}, "more-seeds.yaml")
    runs = planned_runs(small_study, "--configfile", "test.yaml", "more-seeds.yaml")
    assert len(runs) == 16 and all(r.endswith("seed~1") for r in runs), runs


def test_default_config_plans_one_training_per_cell_and_seed(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    plan = pending(ws)
    cfg = gaconfig.check(gaconfig.validate_schema(yaml.safe_load((REPO / "config.yaml").read_text())))
    expected = math.prod(len(v) for v in cfg["grid"].values()) * len(cfg["seeds"])
    runs = train_runs(plan)
    assert len(runs) == len(set(runs)) == expected
    packs = {rule for rule in plan.values() if rule.startswith("train_")}
    assert len(packs) < expected / 8  # runs that share a graph train together


@pytest.fixture(scope="module")
def probe_batch(mnist_dir):
    split = data.split(data.read_idx_folder(mnist_dir), validation_size=5000)
    return split.x_train[:1000], split.y_train[:1000]


def init_statistics(probe_batch, initializer, activation):
    """Per-layer diagnostics at step 0 of the default 5x100 MLP."""
    cfg = {
        "data": {"source": "idx", "path": "unused"},
        "grid": {
            "initializer": [initializer],
            "activation": [activation],
            "optimizer": ["adam"],
            "regularizer": ["none"],
        },
        "seeds": [0],
    }
    gaconfig.check(gaconfig.validate_schema(cfg))
    spec = grid.run_spec(cfg, grid.typed_cell(cfg, grid.frame(cfg).iloc[0].to_dict()))
    x, y = probe_batch
    return diagnostics.probe(gamodel.build(spec), spec, x, y)


def test_sigmoid_with_glorot_vanishes_far_more_than_relu_with_he(probe_batch):
    def ratio(frame):
        hidden = frame[frame.layer_kind == "hidden"]
        return hidden.delta_rms.iloc[0] / hidden.delta_rms.iloc[-1]

    glorot_sigmoid = ratio(init_statistics(probe_batch, "glorot_uniform", "sigmoid"))
    he_relu = ratio(init_statistics(probe_batch, "he_normal", "relu"))
    assert he_relu / glorot_sigmoid >= 100
    # delta shrinks by roughly the sigmoid's slope (<= 1/4) times the weights' gain at every layer
    per_layer = glorot_sigmoid ** (1 / 4)
    assert 0.1 < per_layer < 0.5


def test_naive_init_saturates_sigmoid_units(probe_batch):
    naive = init_statistics(probe_batch, "random_normal", "sigmoid")
    glorot = init_statistics(probe_batch, "glorot_uniform", "sigmoid")

    def hidden(f):
        return f[f.layer_kind == "hidden"].saturated_frac.mean()

    assert hidden(naive) >= hidden(glorot) + 0.2


def test_make_demo_passes_a_local_mnist_folder_to_snakemake(tmp_path):
    import shlex
    import subprocess

    out = subprocess.run(
        ["make", "-n", "-C", str(REPO), "demo", f"MNIST={tmp_path}"], capture_output=True, text=True, check=True
    ).stdout
    line = next(x for x in out.splitlines() if "snakemake" in x and "--configfile" in x)
    args = shlex.split(line)  # the shell must be able to parse it
    assert args[args.index("--config") + 1] == f"data={{source: idx, path: {tmp_path}}}"


def test_a_deleted_run_folder_is_retrained_and_the_tables_rebuilt(small_study, tmp_path):
    import shutil

    ws = tmp_path / "copy"
    shutil.copytree(small_study, ws, symlinks=True)
    shutil.rmtree(ws / RUN)
    plan = pending(ws, "--configfile", "test.yaml")
    assert train_runs(plan) == [RUN]  # only the missing run trains again
    for rule in ("aggregate", "analyze", "report"):
        assert rule in plan.values(), rule
