"""Faults and bad inputs, through the real snakemake CLI (or the library where that is the point).

Each case is one row of docs/reliability.md ("what happens when..."). Kill-and-resume lives in
tests/test_resume.py.
"""

from __future__ import annotations

import ast
import functools
import gzip
import http.server
import shutil
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO, SNAKEMAKE, idx_bytes, make_workspace, pending, run_snakemake, write_config

FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
TINY_GRID = {"initializer": ["he_normal"], "activation": ["relu"], "optimizer": ["sgd"], "regularizer": ["none"]}


def study(data: dict, **overrides) -> dict:
    base = {
        "study": "faults",
        "data": {"validation_size": 200, "train_subset": 1000} | data,
        "model": {"depth": 2, "width": 16},
        "train": {"epochs": 2, "threads": 1},
        "diagnostics": {"probe_size": 100, "early_steps": [1]},
        "grid": dict(TINY_GRID),
        "seeds": [0],
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = base[key] | value
        else:
            base[key] = value
    return base


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    return make_workspace(tmp_path_factory.mktemp("faults"))


@functools.cache
def mnist_arrays(mnist_dir: Path) -> dict[str, np.ndarray]:
    from gradatlas import data

    mnist = data.read_idx_folder(mnist_dir)
    return {key: getattr(mnist, key) for key in FILES}


def fails_cleanly(ws: Path, overlay: dict, name: str, *expected: str) -> str:
    """Run the study; it must stop with an error naming `expected`, before any training, with no
    prepared data (complete-looking or half-written) left in resources/."""
    config = write_config(ws, overlay, f"{name}.yaml")
    proc = run_snakemake(ws, "--cores", "1", "--configfile", str(config), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    for text in expected:
        assert text in out, f"{text!r} not in snakemake's output:\n{out[-4000:]}"
    assert not list((ws / "results").rglob("history.csv")), "a training ran on bad data"
    prepared = [p for p in (ws / "resources").rglob("*") if "mnist-download" not in p.parts]
    assert not [p for p in prepared if p.suffix == ".npy" or p.name.startswith(".")], prepared
    return out


# --- bad data -------------------------------------------------------------------------------------
def bad_idx_folder(ws: Path, mnist_dir: Path, name: str, key: str, content: bytes, gz: bool) -> Path:
    """A copy of MNIST whose `key` file is replaced by `content` (raw or gzip'ed)."""
    folder = ws / "data" / name
    folder.mkdir(parents=True)
    for other, stem in FILES.items():
        if other != key:
            shutil.copy(mnist_dir / f"{stem}.gz", folder / f"{stem}.gz")
    target = folder / (FILES[key] + (".gz" if gz else ""))
    target.write_bytes(gzip.compress(content, compresslevel=1) if gz else content)
    return folder


@pytest.mark.integration
def test_truncated_idx_file(ws, mnist_dir):
    folder = ws / "data" / "truncated"
    folder.mkdir(parents=True)
    for stem in FILES.values():
        shutil.copy(mnist_dir / f"{stem}.gz", folder / f"{stem}.gz")
    whole = (mnist_dir / "train-images-idx3-ubyte.gz").read_bytes()
    (folder / "train-images-idx3-ubyte.gz").write_bytes(whole[: len(whole) // 3])
    fails_cleanly(
        ws, study({"source": "idx", "path": str(folder)}), "truncated", "DataError", "train-images-idx3-ubyte.gz"
    )


@pytest.mark.integration
def test_corrupt_gzip(ws, mnist_dir):
    folder = ws / "data" / "corrupt"
    folder.mkdir(parents=True)
    for stem in FILES.values():
        shutil.copy(mnist_dir / f"{stem}.gz", folder / f"{stem}.gz")
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(256)) * 8)
    fails_cleanly(ws, study({"source": "idx", "path": str(folder)}), "corrupt", "t10k-labels-idx1-ubyte.gz", "gzip")


@pytest.mark.integration
def test_wrong_magic(ws, mnist_dir):
    labels = mnist_arrays(mnist_dir)["y_train"]
    content = b"\x12\x34" + idx_bytes(labels)[2:]
    folder = bad_idx_folder(ws, mnist_dir, "magic", "y_train", content, gz=False)
    fails_cleanly(ws, study({"source": "idx", "path": str(folder)}), "magic", "train-labels-idx1-ubyte")


@pytest.mark.integration
def test_wrong_image_shape(ws, mnist_dir):
    images = mnist_arrays(mnist_dir)["x_test"][:, :, :27].copy()
    folder = bad_idx_folder(ws, mnist_dir, "shape", "x_test", idx_bytes(images), gz=True)
    fails_cleanly(ws, study({"source": "idx", "path": str(folder)}), "shape", "t10k-images-idx3-ubyte", "28 x 28")


@pytest.mark.integration
def test_label_out_of_range(ws, mnist_dir):
    labels = mnist_arrays(mnist_dir)["y_train"].copy()
    labels[3] = 10
    folder = bad_idx_folder(ws, mnist_dir, "labels", "y_train", idx_bytes(labels), gz=True)
    fails_cleanly(
        ws, study({"source": "idx", "path": str(folder)}), "labels", "train-labels-idx1-ubyte", "label 10 at position 3"
    )


@pytest.mark.integration
def test_missing_folder(ws):
    missing = ws / "data" / "no-such-folder"
    fails_cleanly(ws, study({"source": "idx", "path": str(missing)}), "missing", str(missing), "not found")


@pytest.mark.integration
def test_npz_missing_array(ws, mnist_dir):
    arrays = mnist_arrays(mnist_dir)
    path = ws / "data" / "missing-array.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x_train=arrays["x_train"], y_train=arrays["y_train"], x_test=arrays["x_test"])
    fails_cleanly(ws, study({"source": "npz", "path": str(path)}), "npz-missing", "missing-array.npz", "y_test")


@pytest.mark.integration
def test_npz_wrong_shape_and_not_a_zip(ws, mnist_dir):
    arrays = dict(mnist_arrays(mnist_dir))
    arrays["x_train"] = arrays["x_train"].reshape(len(arrays["x_train"]), -1)  # flattened 784
    path = ws / "data" / "flat.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    fails_cleanly(ws, study({"source": "npz", "path": str(path)}), "npz-shape", "flat.npz", "x_train", "28 x 28")
    garbage = ws / "data" / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    fails_cleanly(ws, study({"source": "npz", "path": str(garbage)}), "npz-garbage", "garbage.npz", "not an .npz")


@pytest.mark.integration
def test_canonical_train_and_test_files_swapped(ws, mnist_dir):
    """Each file valid, images and labels agree in number: only the roles are wrong."""
    folder = ws / "data" / "swapped"
    folder.mkdir(parents=True)
    for a, b in (
        ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"),
        ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"),
    ):
        shutil.copy(mnist_dir / f"{a}.gz", folder / f"{b}.gz")
        shutil.copy(mnist_dir / f"{b}.gz", folder / f"{a}.gz")
    out = fails_cleanly(ws, study({"source": "idx", "path": str(folder)}), "swapped", "look swapped")
    assert str(folder / "train-images-idx3-ubyte.gz") in out and str(folder / "t10k-images-idx3-ubyte.gz") in out


@pytest.fixture
def mnist_server(tmp_path, mnist_dir):
    """A local HTTP server over a folder of MNIST .gz files: (base url, folder, stop)."""
    folder = tmp_path / "served"
    folder.mkdir()
    for stem in FILES.values():
        shutil.copy(mnist_dir / f"{stem}.gz", folder / f"{stem}.gz")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/", folder, server
    server.shutdown()
    server.server_close()


@pytest.mark.integration
def test_download_checksum_mismatch_then_cached_data_needs_no_network(ws, mnist_server):
    url, served, server = mnist_server
    cache = ws / "download-cache"
    good = (served / "t10k-labels-idx1-ubyte.gz").read_bytes()
    (served / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(gzip.decompress(good)[:-1] + b"\x07"))
    overlay = study({"source": "download", "path": str(cache), "url": url})
    fails_cleanly(ws, overlay, "checksum", "t10k-labels-idx1-ubyte.gz", "sha256", "discarded")
    assert not (cache / "t10k-labels-idx1-ubyte.gz").exists() and not list(cache.glob(".*")), "a bad download was kept"

    # the right file: the study prepares its data; then, with the server gone, it prepares again
    # from the cache alone
    (served / "t10k-labels-idx1-ubyte.gz").write_bytes(good)
    config = write_config(ws, overlay, "download.yaml")
    plan = run_snakemake(ws, "-n", "--configfile", str(config)).stdout
    target = next(line.split()[-1] for line in plan.splitlines() if "resources/" in line and "output:" in line)
    run_snakemake(ws, target, "--cores", "1", "--configfile", str(config))
    server.shutdown()
    server.server_close()
    shutil.rmtree(ws / target)
    run_snakemake(ws, target, "--cores", "1", "--configfile", str(config))
    assert (ws / target / "x_train.npy").exists()


# --- bad config: refused at parse time, before any job (dry-run is enough) ------------------------
BAD_CONFIGS = {
    "unknown-name": ({"grid": TINY_GRID | {"activation": ["rleu"]}}, ["grid.activation[0]", "Did you mean 'relu'"]),
    "unknown-optimizer": ({"grid": TINY_GRID | {"optimizer": ["adamm"]}}, ["grid.optimizer[0]", "Did you mean 'adam'"]),
    "wrong-type": ({"train": {"epochs": "ten"}}, ["epochs", "'ten' is not of type 'integer'"]),
    "zero-epochs": ({"train": {"epochs": 0}}, ["epochs", "0 is less than the minimum of 1"]),
    "negative-batch": ({"train": {"batch_size": -32}}, ["batch_size", "-32 is less than the minimum of 1"]),
    "zero-width": ({"model": {"width": 0}}, ["width", "0 is less than the minimum of 1"]),
    "empty-axis": ({"grid": TINY_GRID | {"regularizer": []}}, ["regularizer", "should be non-empty"]),
    "duplicate-values": ({"seeds": [0, 1, 0]}, ["seeds", "has non-unique elements"]),
    "unsafe-name": ({"grid": TINY_GRID | {"activation": ["../relu"]}}, ["activation", "does not match"]),
    "unsafe-results": ({"results": "out/{seed}"}, ["config key results", "wildcards"]),
    "escaping-results": ({"results": "../../elsewhere"}, ["config key results", ".."]),
    "unknown-key": ({"train": {"epoch": 3}}, ["Additional properties are not allowed ('epoch' was unexpected)"]),
    "unknown-parameter": ({"techniques": {"dropout": {"rat": 0.5}}}, ["techniques.dropout.rat", "Allowed: rate"]),
    "bad-source": ({"data": {"source": "ftp"}}, ["source", "'ftp' is not one of"]),
    "seed-too-large": ({"seeds": [4294967296]}, ["seeds", "4294967296 is greater than the maximum of 2147483647"]),
    "fractional-seed": ({"seeds": [1.5]}, ["seeds", "1.5 is not of type 'integer'"]),
    "dropout-rate": ({"techniques": {"dropout": {"rate": 1.5}}}, ["techniques.dropout.rate", "must be in [0, 1)"]),
    "negative-l2": ({"techniques": {"l2": {"factor": -0.1}}}, ["techniques.l2.factor", "must be >= 0"]),
    "huge-width-axis": (
        {"grid": TINY_GRID | {"width": [100000000]}},
        ["width", "100000000 is greater than the maximum of 10000"],
    ),
    "nan-learning-rate": (
        {"train": {"learning_rate": {"sgd": float("nan")}}},
        ["train.learning_rate.sgd", "not a finite number"],
    ),
    "root-results": ({"results": "/"}, ["config key results", "filesystem root"]),
    "repo-results": ({"results": "."}, ["config key results", "working folder"]),
}


def bad_overlay(mnist_dir: Path, case: str) -> dict:
    overlay = study({"source": "idx", "path": str(mnist_dir)})
    for key, value in BAD_CONFIGS[case][0].items():
        overlay[key] = overlay[key] | value if isinstance(value, dict) and isinstance(overlay.get(key), dict) else value
    return overlay


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_bad_config_is_refused_by_the_checks(mnist_dir, case):
    """What the Snakefile runs at parse time (schema with snakemake's validate, then check)."""
    from gradatlas import config as gaconfig

    with pytest.raises(Exception) as error:
        gaconfig.check(gaconfig.validate_schema(bad_overlay(mnist_dir, case)))
    for text in BAD_CONFIGS[case][1]:
        assert text in str(error.value), f"{text!r} not in {error.value}"


@pytest.mark.integration
@pytest.mark.parametrize(
    "case",
    [
        "unknown-name",
        "wrong-type",
        "unsafe-results",
        "unknown-key",
        "seed-too-large",
        "dropout-rate",
        "huge-width-axis",
        "root-results",
    ],
)
def test_bad_config_stops_snakemake_before_any_job(ws, mnist_dir, case):
    config = write_config(ws, bad_overlay(mnist_dir, case), f"config-{case}.yaml")
    proc = run_snakemake(ws, "-n", "--configfile", str(config), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-2000:]
    for text in BAD_CONFIGS[case][1]:
        assert text in out, f"{text!r} not in:\n{out[-3000:]}"
    assert "Job stats" not in out and "rule train" not in out  # nothing was scheduled


@pytest.mark.integration
def test_whole_floats_are_the_integers_they_are(ws, mnist_dir):
    """seeds: [1.0] used to crash while snakemake built the DAG; width/batch size 32.0 inside Keras."""
    overlay = study(
        {"source": "idx", "path": str(mnist_dir)},
        seeds=[1.0],
        model={"depth": 2, "width": 32.0},
        train={"epochs": 1, "batch_size": 64.0},
        grid=TINY_GRID | {"depth": [2.0]},
    )
    config = write_config(ws, overlay, "floats.yaml")
    plan = run_snakemake(ws, "-n", "--configfile", str(config)).stdout
    assert "/depth~2/seed~1/run.json" in plan and "seed~1.0" not in plan and "depth~2.0" not in plan


# --- config files that are code (YTE), the shipped data ----------------------------------------------
YTE = '__use_yte__: true\nstudy: ?"x" if __import__("os").system("touch PWNED") == 0 else "y"\n'


@pytest.mark.integration
def test_a_yte_config_runs_code_when_given_straight_to_snakemake(tmp_path):
    """The limit the README states: snakemake itself evaluates it, even in a dry run, before any
    line of GradAtlas runs. Only the Makefile (and a careful user) can refuse it first."""
    ws = make_workspace(tmp_path / "ws")
    (ws / "y.yaml").write_text(YTE)
    run_snakemake(ws, "-n", "--configfile", "y.yaml", check=False)
    assert (ws / "PWNED").exists()


def test_make_refuses_a_yte_config_before_snakemake_reads_it(tmp_path):
    import subprocess
    import sys

    ws = make_workspace(tmp_path / "ws")
    shutil.copy(REPO / "Makefile", ws / "Makefile")
    (ws / "y.yaml").write_text(YTE)
    venv = Path(sys.executable).parent.parent
    for target in ("demo", "study"):
        # -o: treat the environment as installed (never pip install from a test)
        proc = subprocess.run(
            ["make", "-o", f"{venv}/.installed", target, "CONFIG=y.yaml", f"VENV={venv}"],
            cwd=ws,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode != 0, proc.stdout + proc.stderr
        assert "ConfigError: config file y.yaml" in proc.stderr and "__use_yte__" in proc.stderr, proc.stderr
    assert not (ws / "PWNED").exists() and not (ws / ".snakemake").exists()


@pytest.mark.integration
def test_shipped_mnist_is_the_default_and_needs_no_network(tmp_path):
    """make demo's data with no MNIST= argument: the prepared data comes from resources/mnist/ with
    every connection attempt refused."""
    import os
    import subprocess

    from gradatlas import config as gaconfig

    ws = make_workspace(tmp_path / "ws")
    shutil.copytree(REPO / "resources" / "mnist", ws / "resources" / "mnist")
    guard = ws / "netguard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(NO_NETWORK)
    netlog = ws / "network.log"
    target = f"resources/prepared/{gaconfig.data_key({'source': 'bundled', 'path': 'shipped'})}"
    env = os.environ | {"PYTHONPATH": str(guard), "GRADATLAS_TEST_NETLOG": str(netlog), "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [str(SNAKEMAKE), target, "--cores", "1", "--configfile", "studies/demo.yaml"],
        cwd=ws,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not netlog.exists(), netlog.read_text()
    source = yaml.safe_load((ws / target / "source.json").read_text())
    assert source["source"] == "bundled" and source["path"] == str(ws / "resources" / "mnist")
    assert source["counts"]["x_train"] == 60000

    make = subprocess.run(["make", "-n", "-C", str(REPO), "demo"], capture_output=True, text=True, check=True).stdout
    line = next(x for x in make.splitlines() if "snakemake" in x and "--configfile" in x)
    import shlex

    assert "--config" not in shlex.split(line) and "download" not in line


@pytest.mark.integration
def test_moving_the_mnist_folder_does_not_retrain(tmp_path, mnist_dir):
    """The prepared data is keyed by the files' content: the same bytes elsewhere are the same data."""
    ws = make_workspace(tmp_path / "ws")
    first = tmp_path / "mnist-here"
    shutil.copytree(mnist_dir, first, ignore=shutil.ignore_patterns("README*"))
    overlay = study(
        {"source": "idx", "path": str(first), "train_subset": 3000, "validation_size": 500},
        model={"depth": 2, "width": 32},
        train={"epochs": 1},
    )
    run = "results/runs/initializer~he_normal/activation~relu/optimizer~sgd/regularizer~none/seed~0/run.json"
    run_snakemake(ws, run, "--cores", "1", "--configfile", str(write_config(ws, overlay, "here.yaml")))
    assert (ws / run).exists()

    moved = tmp_path / "elsewhere" / "mnist"
    moved.parent.mkdir()
    first.rename(moved)
    overlay["data"]["path"] = str(moved)
    plan = pending(ws, "--configfile", str(write_config(ws, overlay, "moved.yaml")))
    assert "prepare_data" not in plan.values() and run not in plan, plan


@pytest.mark.integration
def test_prepared_data_is_found_where_the_data_folder_cannot_be_seen(tmp_path, mnist_dir):
    """A cluster node re-reads the config but may not see the submit host's data folder
    (prepare_data is a local rule): the key falls back to the folder prepared from that origin."""
    from gradatlas import config as gaconfig

    ws = make_workspace(tmp_path / "ws")
    folder = tmp_path / "submit-host-only"
    shutil.copytree(mnist_dir, folder, ignore=shutil.ignore_patterns("README*"))
    config = write_config(ws, study({"source": "idx", "path": str(folder)}), "local.yaml")
    prepared = f"resources/prepared/{gaconfig.data_key({'source': 'idx', 'path': str(folder)})}"
    run_snakemake(ws, prepared, "--cores", "1", "--configfile", str(config))
    shutil.rmtree(folder)
    plan = run_snakemake(ws, "-n", "--configfile", str(config)).stdout
    assert "rule prepare_data" not in plan and "rule train" in plan and f"input: {prepared}" in plan, plan[-3000:]


@pytest.mark.integration
def test_a_damaged_shipped_copy_is_refused(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    shutil.copytree(REPO / "resources" / "mnist", ws / "resources" / "mnist")
    damaged = ws / "resources" / "mnist" / "train-labels-idx1-ubyte.gz"
    damaged.chmod(0o644)
    damaged.write_bytes(damaged.read_bytes()[:-10])
    out = fails_cleanly(
        ws,
        study({"source": "bundled"}),
        "damaged",
        str(damaged),
        "expected 3552534a",
        "git checkout -- resources/mnist",
    )
    assert "DataError" in out


# --- a diverging training, stale and partial run folders, no network ------------------------------
NO_NETWORK = """
import os, socket
_log = os.environ["GRADATLAS_TEST_NETLOG"]
def _refuse(self, address, *args):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        with open(_log, "a") as f:
            f.write(f"{os.getpid()} {address}\\n")
        raise OSError("network access refused by the test")
    return _connect(self, address, *args)
_connect = socket.socket.connect
socket.socket.connect = _refuse
socket.socket.connect_ex = _refuse
"""


@pytest.fixture(scope="module")
def diverging_study(tmp_path_factory, mnist_dir):
    """A 2-cell study (sgd at lr 1e4 diverges, adam does not), run to the report with the network cut off."""
    ws = make_workspace(tmp_path_factory.mktemp("diverge"))
    guard = ws / "netguard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(NO_NETWORK)
    overlay = study(
        {"source": "idx", "path": str(mnist_dir)},
        grid=TINY_GRID | {"optimizer": ["sgd", "adam"]},
        train={"learning_rate": {"sgd": 10000.0, "adam": 0.001}},
    )
    config = write_config(ws, overlay, "diverge.yaml")
    import os

    netlog = ws / "network.log"
    env_before = os.environ.copy()
    os.environ["PYTHONPATH"] = str(guard)
    os.environ["GRADATLAS_TEST_NETLOG"] = str(netlog)
    try:
        run_snakemake(ws, "--cores", "2", "--configfile", str(config))
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    return ws, config, netlog


@pytest.mark.integration
def test_divergence_is_a_result(diverging_study):
    ws, _, _ = diverging_study
    runs = pd.read_parquet(ws / "results/tables/runs.parquet").set_index("optimizer")
    assert runs.loc["sgd", "status"] == "diverged"
    assert runs.loc["adam", "status"] != "diverged"
    curves = pd.read_parquet(ws / "results/tables/curves.parquet")
    kept = curves[curves["optimizer"] == "sgd"]
    # its history is kept, exploded (or NaN) loss and all
    assert len(kept) >= 1 and (~np.isfinite(kept["loss"]) | (kept["loss"] > 1e6)).any()
    assert "diverged" in (ws / "results/report/index.html").read_text()


@pytest.mark.integration
def test_models_load_in_keras_safe_mode(diverging_study):
    import keras

    ws, _, _ = diverging_study
    for path in (ws / "results/runs").rglob("model.keras"):
        model = keras.saving.load_model(path, safe_mode=True)
        assert model.output_shape == (None, 10)


@pytest.mark.integration
def test_no_network_at_run_time(diverging_study):
    _, _, netlog = diverging_study
    assert not netlog.exists(), f"network access during the study: {netlog.read_text()}"


@pytest.mark.integration
def test_partial_files_and_incomplete_runs_are_not_aggregated(diverging_study):
    ws, config, _ = diverging_study
    run = next((ws / "results/runs").rglob("run.json")).parent
    (run / ".history.partial.csv").write_text("epoch,loss\n1,")  # a crash mid-write
    stray = run.parent / "seed~7"  # a run killed before run.json, not in the config
    stray.mkdir()
    (stray / "history.csv").write_text("epoch,loss\n1,0.5\n")
    run_snakemake(
        ws, "results/tables/runs.parquet", "--cores", "1", "--forcerun", "aggregate", "--configfile", str(config)
    )
    runs = pd.read_parquet(ws / "results/tables/runs.parquet")
    assert len(runs) == 2 and set(runs["seed"]) == {0}


@pytest.mark.integration
def test_stale_run_is_refused_by_aggregation(diverging_study):
    ws, config, _ = diverging_study
    overlay = yaml.safe_load(config.read_text())
    overlay["train"]["patience"] = 7  # not a wildcard: the run folders stay, their spec is stale
    changed = write_config(ws, overlay, "changed.yaml")
    proc = run_snakemake(
        ws,
        "results/tables/runs.parquet",
        "--cores",
        "1",
        "--forcerun",
        "aggregate",
        "--rerun-triggers",
        "mtime",
        "--configfile",
        str(changed),
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "StaleRunError" in out and "patience: ran with 3, config now says 7" in out, out[-3000:]
    # the failed aggregation leaves no table behind that looks complete
    assert not (ws / "results/tables/runs.parquet").exists()


# --- safety ---------------------------------------------------------------------------------------
def test_no_eval_or_exec_of_config_values():
    """No eval/exec/compile, no pickle or unsafe yaml anywhere in the package and scripts."""
    forbidden_calls = {"eval", "exec", "compile", "__import__"}
    forbidden_attrs = {("pickle", "load"), ("pickle", "loads"), ("yaml", "load"), ("yaml", "unsafe_load")}
    for path in [*REPO.glob("gradatlas/**/*.py"), *REPO.glob("scripts/*.py")]:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                if isinstance(func, ast.Name):
                    assert func.id not in forbidden_calls, f"{path}:{node.lineno}: {func.id}()"
                if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                    assert (func.value.id, func.attr) not in forbidden_attrs, f"{path}:{node.lineno}"
                for kw in node.keywords:
                    if kw.arg in ("allow_pickle", "safe_mode"):
                        assert not (
                            isinstance(kw.value, ast.Constant) and kw.value.value is True and kw.arg == "allow_pickle"
                        )
                        assert not (
                            isinstance(kw.value, ast.Constant) and kw.value.value is False and kw.arg == "safe_mode"
                        )


@pytest.mark.integration
def test_a_pack_orphaned_by_a_new_pack_size_is_named_and_removed(tmp_path, mnist_dir):
    """Killed mid-training, then `train.pack_size` changed: the old pack's state fits no planned pack.
    It used to stay in results/packs/ for good, without a word."""
    import subprocess

    from conftest import committed_epoch, kill_when

    ws = make_workspace(tmp_path)
    overlay = study({"source": "idx", "path": str(mnist_dir)}, train={"epochs": 4}, seeds=[0, 1])
    first = write_config(ws, overlay, "first.yaml")
    proc = subprocess.Popen(
        [str(SNAKEMAKE), "--cores", "1", "--configfile", str(first)],
        cwd=ws,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    kill_when(proc, lambda: committed_epoch(ws / "results") >= 1, "the pack's first epoch")
    [orphan] = [p for p in (ws / "results/packs").iterdir() if p.is_dir()]
    smaller = write_config(
        ws, study(overlay["data"], train={"epochs": 4, "pack_size": 1}, seeds=[0, 1]), "smaller.yaml"
    )
    run_snakemake(ws, "--unlock", "--configfile", str(smaller))
    dry = run_snakemake(ws, "-n", "--configfile", str(smaller))
    assert (
        f"{orphan.relative_to(ws)}: the state of an interrupted pack that is no longer planned"
        in dry.stdout + dry.stderr
    )
    assert orphan.exists()  # a dry run changes nothing
    run_snakemake(ws, "--cores", "1", "--rerun-incomplete", "--configfile", str(smaller))
    assert not [p for p in (ws / "results/packs").iterdir() if p.is_dir()]  # no pack folder is left
    assert len(list((ws / "results/runs").rglob("run.json"))) == 2


@pytest.mark.integration
def test_a_grid_beyond_the_planning_limit_is_refused_before_planning(ws, mnist_dir):
    """A million runs used to be planned for hours (tens of GB); the refusal comes from the config
    check, before the grid is expanded. Not timed: bench/plan.py measures planning."""
    from gradatlas.config import MAX_RUNS

    seeds = list(range(2605))  # x 384 cells of the default grid: 1,000,320 runs
    grid = {
        "initializer": ["random_normal", "glorot_uniform", "he_normal", "lecun_normal"],
        "activation": ["sigmoid", "tanh", "relu", "leaky_relu", "elu", "selu"],
        "optimizer": ["sgd", "momentum", "rmsprop", "adam"],
        "regularizer": ["none", "l2", "dropout", "batch_norm"],
    }
    config = write_config(ws, study({"source": "idx", "path": str(mnist_dir)}, grid=grid, seeds=seeds), "million.yaml")
    proc = run_snakemake(ws, "-n", "--configfile", str(config), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-2000:]
    assert (
        "config key grid: the grid has 1,000,320 runs "
        "(4 initializer x 6 activation x 4 optimizer x 4 regularizer x 2605 seeds); "
        f"one study plans at most {MAX_RUNS:,}. Split it into at least 11 studies, each with its own results folder: "
        "at most 260 seeds each, or some of the values of a grid axis each"
    ) in out, out[-3000:]
    assert "rule train" not in out
