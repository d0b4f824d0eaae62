"""Study presets (studies/*.yaml): they plan, their library functions measure what they claim on
real MNIST, and one preset runs end to end through the real snakemake CLI."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import MNIST, REPO, SNAKEMAKE, make_workspace, run_snakemake, write_config
from gradatlas import backend, grid

if "keras" not in sys.modules:  # the engine's default backend, when this module decides
    backend.select("jax")

PRESETS = sorted(p.name for p in (REPO / "studies").glob("*.yaml"))
MINE = ["batch_norm.yaml", "depth_init.yaml", "nielsen.yaml", "transfer.yaml"]


@pytest.fixture(scope="module")
def mnist_split(mnist_dir):
    from gradatlas import data

    return data.split(data.read_idx_folder(mnist_dir), validation_size=1000, train_subset=7000)


@pytest.mark.parametrize("offline", [False, True], ids=["download", "idx"])
def test_every_preset_plans(tmp_path, offline):
    """`snakemake -n --configfile studies/X.yaml` succeeds for every preset (run side by side), with
    the default data source and with a local MNIST folder overlaid."""
    assert set(MINE) <= set(PRESETS)
    ws = make_workspace(tmp_path / "ws")
    env = os.environ | {"TF_CPP_MIN_LOG_LEVEL": "2"}
    extra = [str(write_config(ws, {"data": {"source": "idx", "path": str(MNIST)}}, "data.yaml"))] if offline else []
    procs = {
        p: subprocess.Popen(
            [str(SNAKEMAKE), "-n", "--cores", "1", "--configfile", f"studies/{p}", *extra, "--nolock"],
            cwd=ws,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for p in PRESETS
    }
    for preset, proc in procs.items():
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{preset}:\n{out[-3000:]}"
        if preset in MINE:
            assert "study_report" in out, f"{preset} does not plan its study page"
    assert any("transfer" in (REPO / "studies" / p).read_text() for p in PRESETS)


def test_preset_section_is_checked_by_the_schema():
    from gradatlas import config as gaconfig

    base = yaml.safe_load((REPO / "config.yaml").read_text())
    ok = dict(base, preset={"name": "nielsen"})
    gaconfig.validate_schema(ok)
    assert ok["preset"]["nielsen"]["hidden_layers"] == [2, 3, 4] and ok["preset"]["main_grid"] is False
    with pytest.raises(Exception):
        gaconfig.validate_schema(dict(base, preset={"name": "nielsen", "nielsen": {"hidden": [2]}}))
    with pytest.raises(Exception):
        gaconfig.validate_schema(dict(base, preset={"name": "dropout_paper"}))


def test_fan_in_normal_is_untruncated_with_variance_one_over_fan_in():
    from gradatlas import catalog

    w = np.asarray(catalog.initializer("fan_in_normal", {}, 3)((400, 300)))
    assert w.var() == pytest.approx(1 / 400, rel=0.03)
    # a truncated normal has nothing beyond 2 sigma; N(0, 1/n) has 4.55% there
    assert np.mean(np.abs(w) > 2 / np.sqrt(400)) == pytest.approx(0.0455, abs=0.004)


def test_nielsen_norms_probe_and_numpy_agree_and_shrink_toward_the_input(mnist_split):
    from gradatlas.studies import nielsen

    x, y = mnist_split.x_train[:1000], mnist_split.y_train[:1000]
    norms = nielsen.gradient_norms(x, y, [3], 30, [0, 1])
    ga = norms[norms["head"] == "gradatlas"]
    # our numpy backward pass and the project's probe give the same dL/dz
    np.testing.assert_allclose(ga["norm"], ga["probe_norm"], rtol=1e-4)
    res = nielsen.assess(norms).set_index("head")
    for head in nielsen.HEADS:
        assert all(r > 1 for r in res.loc[head, "adjacent_ratios"])  # gradients vanish toward the input
    # his head gives his magnitudes: last hidden layer around 0.28
    assert 0.1 < res.loc["nielsen", "ours"][-1] < 0.6


def test_nielsen_takes_the_largest_seeds(mnist_split):
    """Every seed the schema accepts builds Nielsen's networks: their layers' seeds come from
    `model.layer_seed`. Before, seed * 1000 + layer overflowed Keras' uint32 seeds (2**31 - 1), and
    the biases' seed * 1000 + 500 + layer did from seed 4,294,967 on."""
    from gradatlas.studies import nielsen

    x, y = mnist_split.x_train[:50], mnist_split.y_train[:50]
    norms = nielsen.gradient_norms(x, y, [2], 8, [4_294_967, 2**31 - 1])
    ga = norms[norms["head"] == "gradatlas"]
    np.testing.assert_allclose(ga["norm"], ga["probe_norm"], rtol=1e-4)
    assert (norms["norm"] > 0).all() and np.isfinite(norms["norm"]).all()
    first, second = (g["norm"].to_numpy() for _, g in norms.groupby("seed"))
    assert not np.allclose(first, second)  # the two seeds are different networks


def test_nielsen_verdict_uses_the_tolerance():
    from gradatlas.studies import nielsen

    def table(norms):
        return pd.DataFrame(
            [
                {"hidden_layers": len(norms), "seed": 0, "head": "nielsen", "layer": i + 1, "norm": n}
                for i, n in enumerate(norms)
            ]
        )

    assert nielsen.assess(table([0.07, 0.31]))["reproduced"].item()
    assert not nielsen.assess(table([0.07, 0.8]))["reproduced"].item()  # ratio 11x: outside 3-7x
    assert not nielsen.assess(table([0.012, 0.03, 0.283]))["reproduced"].item()


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, mnist_split):
    import keras

    from gradatlas.studies import transfer

    spec = _tiny_spec()
    run_dir = tmp_path_factory.mktemp("transfer") / "pretrain"
    path, record = transfer.pretrain(spec, mnist_split, epochs=1, patience=1, run_dir=run_dir)
    assert record["test_accuracy_a"] > 0.8 and record["epochs_run"] == 1
    assert (run_dir / "run.json").exists() and (run_dir / "diagnostics.parquet").exists()  # the engine's run folder
    return path, keras.models.load_model(path)


def _tiny_spec():
    from gradatlas import config as gaconfig

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["data"].update(source="idx", path="unused")
    gaconfig.validate_schema(cfg)
    cell = {
        "initializer": "he_normal",
        "activation": "elu",
        "optimizer": "adam",
        "regularizer": "none",
        "seed": 0,
        "depth": 3,
        "width": 16,
    }
    return grid.run_spec(cfg, cell).replace(batch_size=64, backend=backend.name())


def test_transfer_variants_set_trainable_flags_and_reuse_weights(pretrained):
    from gradatlas.studies import transfer

    path, original = pretrained
    expected = {
        "frozen_all": [False] * 3,
        "frozen_cached": [False] * 3,
        "frozen_all_but_top1": [False, False, True],
        "frozen_all_but_top2": [False, True, True],
        "fine_tuned": [True] * 3,
    }
    frozen_dense = transfer.frozen_dense_class()
    for variant, flags in expected.items():
        model = transfer.variant_model(variant, path, _tiny_spec(), 5)
        dense = transfer.hidden_dense(model)
        assert [d.trainable for d in dense] == flags, variant
        assert model.layers[-1].trainable and model.layers[-1].units == 5
        for reused, source in zip(dense, transfer.hidden_dense(original)):
            np.testing.assert_array_equal(np.asarray(reused.kernel), np.asarray(source.kernel))
        assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == (
            16 * 5 + 5 + sum(d.kernel.shape[0] * 16 + 16 for d, f in zip(dense, flags) if f)
        )
        # what the engine trains: the frozen Dense layers as FrozenDense, same names and weights
        packed = transfer.packed_variant_model(variant, path, _tiny_spec(), 5)
        packed_dense = transfer.hidden_dense(packed)
        assert [not isinstance(d, frozen_dense) for d in packed_dense] == flags, variant
        assert [v.path for v in packed.weights] == [v.path for v in model.weights]
        for a, b in zip(packed_dense, dense):
            np.testing.assert_array_equal(np.asarray(a.kernel), np.asarray(b.kernel))
    scratch = transfer.variant_model("scratch", path, _tiny_spec(), 5)
    assert all(d.trainable for d in transfer.hidden_dense(scratch))
    assert not np.array_equal(
        np.asarray(transfer.hidden_dense(scratch)[0].kernel), np.asarray(transfer.hidden_dense(original)[0].kernel)
    )


def test_frozen_dense_gets_no_gradient():
    import keras

    from gradatlas.studies import transfer

    layer = transfer.frozen_dense_class()(3, name="f")
    layer.build((None, 4))
    x = keras.ops.ones((2, 4))

    def loss(kernel, bias):
        out, _ = layer.stateless_call([kernel, bias], [], x)
        return keras.ops.sum(out**2), None

    (_, _), grads = backend.value_and_grad(lambda tv: loss(*tv))([layer.kernel.value, layer.bias.value])
    assert all(float(keras.ops.max(keras.ops.abs(g))) == 0.0 for g in grads)


def test_transfer_variants_train_through_the_engine(pretrained, mnist_split, tmp_path):
    import keras

    from gradatlas.studies import transfer

    path, original = pretrained
    # 100 images in batches of 64: 2 steps per epoch, so 6 steps = 3 epochs
    table = transfer.run_variants(
        _tiny_spec(),
        mnist_split,
        path,
        per_class=20,
        max_steps=6,
        patience_steps=6,
        variants=("scratch", "frozen_all", "frozen_all_but_top1", "frozen_cached"),
        runs_dir=tmp_path,
    )
    acc = table.set_index("variant")["test_accuracy"]
    assert acc["frozen_cached"] == pytest.approx(acc["frozen_all"], abs=0.01)  # cached = recomputed
    assert (table["train_images"] == 100).all() and table.loc[
        table["variant"] == "frozen_cached", "cache_seconds"
    ].item() > 0
    assert (table["epochs_run"] == 3).all() and (table["max_epochs"] == 3).all()
    source = [np.asarray(d.kernel) for d in transfer.hidden_dense(original)]
    for variant, trained_top in (("frozen_all", 0), ("frozen_cached", 0), ("frozen_all_but_top1", 1)):
        run = json.loads((tmp_path / variant / "run.json").read_text())
        assert len(run["pack"]["runs"]) == 1 and run["summary"]["epochs_run"] == 3
        saved = keras.models.load_model(tmp_path / variant / "model.keras")  # the whole task-B network
        kernels = [np.asarray(d.kernel) for d in transfer.hidden_dense(saved)]
        for i, (k, s) in enumerate(zip(kernels, source)):
            if i < len(source) - trained_top:
                np.testing.assert_array_equal(k, s)  # frozen: exactly unchanged by the engine's optimizer
            else:
                assert not np.array_equal(k, s), variant
        assert saved.layers[-1].units == 5


def test_batch_norm_tracks_accuracy_and_the_sigmoid_input(mnist_split, tmp_path):
    from gradatlas.studies import batch_norm

    settings = {"init_stddev": 0.01, "learning_rate": 0.5, "batch_size": 60, "eval_every": 20, "bn_momentum": 0.99}
    seeds = [0, 1] if backend.name() == "jax" else [0]  # one pack of the seeds
    curves = []
    for variant in batch_norm.VARIANTS:
        specs = [batch_norm.spec_for(_tiny_spec().replace(seed=s), variant, settings) for s in seeds]
        run_dirs = [tmp_path / variant / f"seed~{s}" for s in seeds]
        got, records = batch_norm.run(
            specs,
            mnist_split,
            steps=60,
            eval_every=20,
            unit=0,
            fixed_images=200,
            run_dirs=run_dirs,
            pack_dir=tmp_path / variant / ".pack",
        )
        for seed, curve, record, run_dir in zip(seeds, got, records, run_dirs):
            assert list(curve["step"]) == [0, 20, 40, 60] and record["steps"] == 60
            assert record["pack_size"] == len(seeds) and (run_dir / "diagnostics.parquet").exists()
            curves.append(curve.assign(variant=variant, seed=seed))
        if len(seeds) > 1:  # the seeds are different networks
            assert got[0]["p50"].iloc[0] != got[1]["p50"].iloc[0]
    curves = pd.concat(curves)
    assert (curves["p15"] <= curves["p50"]).all() and (curves["p50"] <= curves["p85"]).all()
    result = batch_norm.assess(curves)
    assert set(result["location_drift"]) == set(result["scale_drift"]) == set(batch_norm.VARIANTS)
    assert 0 <= result["ahead_share"] <= 1 and all(v >= 1 for v in result["scale_drift"].values())


def test_batch_norm_curve_survives_a_killed_job(mnist_split, tmp_path):
    """A job killed after a pass resumes from the engine's backup with the curve recorded so far."""
    from gradatlas import engine
    from gradatlas.studies import batch_norm

    settings = {"init_stddev": 0.01, "learning_rate": 0.5, "batch_size": 60, "eval_every": 50, "bn_momentum": 0.99}
    spec = batch_norm.spec_for(_tiny_spec(), "batch_norm", settings)
    args = dict(steps=150, eval_every=50, unit=0, fixed_images=100)  # 100 steps per pass: 2 passes

    class Killed(Exception):
        pass

    class Kill(engine.Hooks):
        def on_backup(self, pack, epoch, stage):
            if epoch == 1 and stage == "committed":
                raise Killed

    (whole,), _ = batch_norm.run([spec], mnist_split, **args, run_dirs=[tmp_path / "a"], pack_dir=tmp_path / "pa")
    with pytest.raises(Killed):
        batch_norm.run([spec], mnist_split, **args, run_dirs=[tmp_path / "b"], pack_dir=tmp_path / "pb", hooks=[Kill()])
    assert (tmp_path / "pb" / batch_norm.ROWS_FILE).exists()
    (resumed,), (record,) = batch_norm.run(
        [spec], mnist_split, **args, run_dirs=[tmp_path / "b"], pack_dir=tmp_path / "pb"
    )
    assert json.loads((tmp_path / "b" / "run.json").read_text())["resumed_from_epoch"] == 1
    assert list(resumed["step"]) == [0, 50, 100, 150]
    pd.testing.assert_frame_equal(resumed, whole, rtol=1e-5)


def _planted_curve(p50, spread, accuracy=0.9):
    """A tracked-input curve: 20 evaluation points (steps 500-10,000) with the given median and
    15-85 spread (symmetric percentiles), after a step-0 row with a wild spread."""
    steps = np.arange(500, 10_001, 500)
    p50, spread = np.broadcast_to(p50, len(steps)), np.broadcast_to(spread, len(steps))
    curve = pd.DataFrame(
        {"step": steps, "test_accuracy": accuracy, "p15": p50 - spread / 2, "p50": p50, "p85": p50 + spread / 2}
    )
    # step 0 (BN's moving averages not yet set) is never counted: a wild value there changes nothing
    return pd.concat([pd.DataFrame([{"step": 0, "test_accuracy": 0.1, "p15": -50.0, "p50": 9.0, "p85": 50.0}]), curve])


def test_batch_norm_drift_separates_location_and_scale_on_planted_curves():
    from gradatlas.studies import batch_norm

    # the median moves by 2 while the spread stays 2: location drift 1 spread, scale constant
    shifted = _planted_curve(np.linspace(0, -2, 20), 2.0)
    assert batch_norm.location_drift(shifted) == pytest.approx(1.0)
    assert batch_norm.scale_drift(shifted) == pytest.approx(1.0)
    # BN-like gamma growth (1 -> 2.2) around a fixed median: scale, never location
    gamma = _planted_curve(0.3, 2.0 * np.linspace(1, 2.2, 20))
    assert batch_norm.location_drift(gamma) == 0.0
    assert batch_norm.scale_drift(gamma) == pytest.approx(2.2)
    # a plain-like input whose spread grows 280x within the first 10% of the run, then stays: counted
    # (the old measure skipped those steps); its median moves 2.5, i.e. 2.5 / 2.8 of its typical spread
    early = _planted_curve(np.linspace(0, -2.5, 20), [0.01, 2.8] + [2.8] * 18)
    assert batch_norm.scale_drift(early) == pytest.approx(280)
    assert batch_norm.location_drift(early) == pytest.approx(2.5 / 2.8)

    def curves(plain, bn, bn_accuracy=0.95):
        return pd.concat(
            [plain.assign(variant="plain", seed=s) for s in (0, 1)]
            + [bn.assign(variant="batch_norm", seed=s, test_accuracy=bn_accuracy) for s in (0, 1)]
        )

    res = batch_norm.assess(curves(early, gamma))
    assert res["reproduced"] and res["location_drift"]["batch_norm"] == 0.0
    assert res["scale_drift"] == pytest.approx({"plain": 280, "batch_norm": 2.2})
    # BN whose median moves as far as plain's (relative to its spread): the location part fails, the scale part holds
    res = batch_norm.assess(curves(early, early.assign(p15=early["p50"] - 1.4, p85=early["p50"] + 1.4)))
    assert not res["reproduced"] and not res["location_ok"] and res["scale_ok"]
    # BN behind in accuracy at one evaluation point: not reproduced however stable
    assert not batch_norm.assess(curves(early, gamma, np.r_[0.1, 0.5, [0.95] * 19]))["ahead_ok"]


def test_transfer_budget_is_in_steps():
    from gradatlas.studies import transfer

    assert transfer.step_budget(500, 20, 5000, 500) == (200, 20)  # Geron's: 200 epochs of 25 steps, patience 20
    assert transfer.step_budget(500, 32, 5000, 500) == (313, 32)  # 16 steps per epoch: the same steps, rounded up


def test_transfer_verdict_within_noise_or_ranking_on_planted_numbers():
    from gradatlas.studies import transfer

    # the per-seed fine-tuned minus scratch: +0.004 +- 0.0075 SE, the interval covers 0
    gain = transfer.compare(pd.Series([-0.009, 0.017, 0.004], index=[0, 1, 2]))
    assert gain["outcome"] == "within noise" and gain["mean"] == pytest.approx(0.004)
    assert gain["se"] == pytest.approx(0.0075, abs=1e-4) and gain["interval"][0] < 0 < gain["interval"][1]
    assert transfer.compare(pd.Series([0.02, 0.03, 0.025]))["outcome"] == "reused ahead"
    assert transfer.compare(pd.Series([-0.02, -0.03, -0.025]))["outcome"] == "scratch ahead"
    assert transfer.compare(pd.Series([0.05]))["outcome"] == "within noise"  # one seed: no spread, no ranking

    def table(fine_tuned):
        acc = {
            "scratch": [0.90, 0.91, 0.905],
            "fine_tuned": fine_tuned,
            "frozen_all": [0.83, 0.84, 0.826],
            "frozen_all_but_top1": [0.86, 0.87, 0.865],
            "frozen_all_but_top2": [0.88, 0.88, 0.877],
            "frozen_cached": [0.83, 0.84, 0.826],
        }
        return pd.DataFrame(
            [
                {
                    "variant": v,
                    "seed": s,
                    "test_accuracy": a[s],
                    "epochs_run": 40,
                    "best_epoch": 20,
                    "max_epochs": 200,
                    "train_seconds": 1.0,
                    "trainable_params": 1,
                    "seconds_per_epoch": 0.001 if v == "frozen_cached" else 0.01,
                }
                for v, a in acc.items()
                for s in range(3)
            ]
        )

    noisy = transfer.assess(table([0.891, 0.927, 0.909]))  # scratch + the per-seed differences
    assert noisy["best_reused"] == "fine_tuned" and noisy["gain_over_scratch"]["outcome"] == "within noise"
    assert not noisy["reproduced"] and noisy["cached_ok"]
    assert noisy["ranking"][:3] == ["fine_tuned", "scratch", "frozen_all_but_top2"]
    clear = transfer.assess(table([0.93, 0.935, 0.932]))
    assert clear["gain_over_scratch"]["outcome"] == "reused ahead" and clear["reproduced"]


def test_depth_init_verdict_from_tables():
    from gradatlas.studies import depth_init

    depth = 10
    diag = pd.DataFrame(
        [
            {
                "initializer": init,
                "seed": s,
                "layer": layer,
                "layer_kind": "hidden",
                "step": 0,
                "act_std": (1.0 if init == "he_normal" else 2 ** (-(layer - 1) / 2)) * (1 + 0.05 * s),
            }
            for init in ("he_normal", "glorot_uniform")
            for s in (0, 1)
            for layer in range(1, depth + 1)
        ]
    )
    runs = pd.DataFrame(
        [
            {
                "initializer": i,
                "seed": s,
                "test_accuracy": a,
                "best_val_accuracy": a,
                "status": st,
                "train_seconds": 1.0,
                "epochs_run": 5,
                "epochs_to_target": e,
            }
            for i, a, st, e in (("he_normal", 0.95, "converged", 2), ("glorot_uniform", 0.11, "stalled", None))
            for s in (0, 1)
        ]
    )
    res = depth_init.assess(runs, diag)
    assert res["reproduced"] and res["forward"]["glorot_uniform"]["predicted"] == pytest.approx(2**-4.5)
    runs.loc[runs["initializer"] == "glorot_uniform", ["test_accuracy", "status", "epochs_to_target"]] = [
        0.94,
        "converged",
        2,
    ]
    assert not depth_init.assess(runs, diag)["reproduced"]


# the preset jobs that train: rule -> (script, outputs under the study folder, the folder it leases)
TRAINING_JOBS = {
    "study_transfer_pretrain": (
        "study_transfer.py",
        {"model": "transfer/seed~0/pretrained.keras", "record": "transfer/seed~0/pretrain.json"},
        "transfer/seed~0",
    ),
    "study_transfer": ("study_transfer.py", {"table": "transfer/seed~0/variants.parquet"}, "transfer/seed~0"),
    "study_batch_norm": (
        "study_batch_norm.py",
        {"curves": ["batch_norm/plain/seed~0/curve.parquet"], "records": ["batch_norm/plain/seed~0/run.json"]},
        "batch_norm/plain",
    ),
}


@pytest.mark.parametrize("rule", TRAINING_JOBS)
def test_a_preset_job_waits_for_its_folders_lease_then_fails_naming_the_holder(tmp_path, monkeypatch, rule):
    """A preset job that trains (its real script) holds its folder's lease, as a pack's training does:
    while another process holds it (here this one, as an orphaned job would), the job waits, then
    fails naming the holder, before it opens its log or writes anything."""
    from gradatlas import lock

    script, outputs, folder = TRAINING_JOBS[rule]
    study = tmp_path / "results" / "study"
    log = tmp_path / "logs" / "job.log"
    log.parent.mkdir()
    log.write_text("the holder's log\n")
    monkeypatch.setenv("GRADATLAS_LEASE_WAIT_S", "1")

    def under_study(paths):
        return [str(study / p) for p in paths] if isinstance(paths, list) else str(study / paths)

    job = SimpleNamespace(  # what snakemake hands the script
        rule=rule,
        config={},
        threads=1,
        log=[str(log)],
        wildcards=SimpleNamespace(seed="0", variant="plain"),
        params=SimpleNamespace(seeds=[0]),
        input=SimpleNamespace(
            prepared=str(tmp_path / "prepared"), model=under_study("transfer/seed~0/pretrained.keras")
        ),
        output=SimpleNamespace(**{name: under_study(paths) for name, paths in outputs.items()}),
    )
    with lock.Lease(study / folder) as holder:
        before = sorted(tmp_path.rglob("*"))
        started = time.monotonic()
        with pytest.raises(lock.PackLeased, match=f"pid {os.getpid()} on host") as error:
            runpy.run_path(str(REPO / "scripts" / script), init_globals={"snakemake": job})
        assert time.monotonic() - started >= 1  # it waited for the lease
        assert str(holder.path.resolve()) in str(error.value)
        assert sorted(tmp_path.rglob("*")) == before and log.read_text() == "the holder's log\n"


@pytest.mark.integration
def test_transfer_preset_end_to_end(tmp_path, mnist_dir):
    """The transfer preset, shrunk by an overlay, through the real snakemake CLI to its page and verdict."""
    ws = make_workspace(tmp_path / "ws")
    tiny = {
        "data": {"source": "idx", "path": str(mnist_dir), "train_subset": 6000, "validation_size": 1000},
        "preset": {
            "name": "transfer",
            "transfer": {
                "depth": 2,
                "width": 16,
                "pretrain_epochs": 1,
                "per_class": 10,
                "max_steps": 6,
                "patience_steps": 6,
            },
        },
        "seeds": [0],
    }
    overlay = write_config(ws, tiny, "tiny.yaml")
    run_snakemake(ws, "--cores", "2", "--configfile", "studies/transfer.yaml", str(overlay), timeout=600)
    verdict = json.loads((ws / "results/transfer/report/study.json").read_text())
    assert verdict["preset"] == "transfer" and verdict["verdict"] in ("reproduced", "not reproduced")
    assert {row["variant"] for row in verdict["summary"]} == {
        "scratch",
        "frozen_all",
        "frozen_all_but_top1",
        "frozen_all_but_top2",
        "fine_tuned",
        "frozen_cached",
    }
    page = (ws / "results/transfer/report/study.html").read_text()
    assert "Verdict:" in page and "data:image/png;base64," in page
    assert not (ws / "results/transfer/report/index.html").exists()  # the preset does not train the grid


def test_preset_names_have_one_source():
    """gradatlas.studies.PRESETS is the list; the schema's enum, the preset files and the pages follow it."""
    import yaml

    from gradatlas import config as gaconfig, studies
    from gradatlas.studies import report as study_report

    schema = yaml.safe_load(gaconfig.SCHEMA.read_text())
    assert tuple(schema["properties"]["preset"]["properties"]["name"]["enum"]) == studies.PRESETS
    assert tuple(study_report.SECTIONS) == tuple(study_report.COMMANDS) == studies.PRESETS
    assert {f"{name}.yaml" for name in studies.PRESETS} <= set(PRESETS)
