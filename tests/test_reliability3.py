"""Issue #18, items 3, 4, 5, 10 and 11: seeds across the schema's range, the documented `--config`
forms, YAML alias bombs, a damaged prepared-data cache and clear errors before any job.

Each case is one row of docs/reliability.md; the CLI cases run the real snakemake CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import make_workspace, run_snakemake, write_config

TINY_GRID = {"initializer": ["he_normal"], "activation": ["relu"], "optimizer": ["adam"], "regularizer": ["dropout"]}


def tiny_study(mnist_dir: Path, **overrides) -> dict:
    return {
        "study": "reliability3",
        "data": {"source": "idx", "path": str(mnist_dir), "validation_size": 200, "train_subset": 1000},
        "model": {"depth": 2, "width": 16},
        "train": {"epochs": 1, "threads": 1},
        "diagnostics": {"probe_size": 100, "early_steps": [1]},
        "grid": dict(TINY_GRID),
        "seeds": [0],
    } | overrides


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    return make_workspace(tmp_path_factory.mktemp("reliability3"))


# --- item 3: every seed the schema accepts trains ----------------------------------------------------
def test_layer_seeds_fit_keras_and_keep_todays_values():
    from gradatlas.model import LAYER_SLOTS, SEED_LIMIT, layer_seed

    assert [layer_seed(s, layer) for s, layer in [(0, 1), (7, 3), (4294967, 201)]] == [1, 7003, 4294967201]
    small = {layer_seed(s, layer) for s in (0, 1, 4294966, 4294967) for layer in range(1, 202)}
    for seed in (4294968, 10**9, 2**31 - 1):
        values = [layer_seed(seed, layer) for layer in range(1, 202)]
        assert all(0 <= v < SEED_LIMIT for v in values) and len(set(values)) == len(values)
        assert all(v % 1000 >= LAYER_SLOTS for v in values) and not small.intersection(values)
        assert values == [layer_seed(seed, layer) for layer in range(1, 202)]  # deterministic
    assert layer_seed(2**31 - 1, 1) != layer_seed(2**31 - 2, 1)


def test_the_largest_seeds_train(ws, mnist_dir):
    """Seeds >= 4,294,968 used to crash every training job (OverflowError: out of bounds for uint32)."""
    seeds = [4294968, 2**31 - 1]
    config = write_config(ws, tiny_study(mnist_dir, seeds=seeds), "huge-seeds.yaml")
    run_snakemake(ws, "--cores", "1", "--configfile", str(config), "--omit-from", "aggregate")
    records = [json.loads(p.read_text()) for p in sorted((ws / "results" / "runs").rglob("run.json"))]
    assert sorted(r["spec"]["seed"] for r in records) == seeds
    assert all(r["summary"]["test_accuracy"] > 0.1 for r in records)  # above chance: it trained


# --- item 4: the documented `--config` forms -------------------------------------------------------
def test_documented_config_forms_work(ws, mnist_dir):
    """Snakemake reads nested --config values with YAML's BaseLoader (every scalar a string): the
    forms of README, docs/cluster.md and docs/studies.md used to fail "'256' is not of type 'integer'"."""
    config = str(write_config(ws, tiny_study(mnist_dir), "forms.yaml"))
    plan = run_snakemake(ws, "-n", "--config", "train={pack_size: 256}", "seeds=[0, 1]", "--configfile", config).stdout
    assert "/seed~0/run.json" in plan and "/seed~1/run.json" in plan
    preset = "preset={name: batch_norm, batch_norm: {steps: 2000}}"
    plan = run_snakemake(ws, "-n", "--config", preset, "seeds=[0]", "--configfile", config).stdout
    assert "batch_norm" in plan
    proc = run_snakemake(ws, "-n", "--config", "train={epochs: 0}", "--configfile", config, check=False)
    assert proc.returncode != 0 and "0 is less than the minimum of 1" in proc.stdout + proc.stderr


# --- item 5: YAML alias bombs and oversized documents ------------------------------------------------
def alias_bomb(indent: str = "") -> str:
    """Nine levels of nine aliases: about 500 bytes that expand to 9**9 values."""
    lines = [f"{indent}a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"{indent}a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_at_once(ws, mnist_dir):
    """It passed check-file; then `snakemake -n` was still busy after 120 s (1.1 GB under resources:)."""
    import subprocess
    import sys
    import time

    bomb = ws / "bomb.yaml"
    bomb.write_text(yaml.safe_dump(tiny_study(mnist_dir)) + "resources:\n  train:\n" + alias_bomb("    "))
    check = subprocess.run(
        [sys.executable, "-m", "gradatlas.config", "check-file", str(bomb)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 1 and "aliases (*name) expanded it holds more than 100000 values" in check.stderr
    started = time.monotonic()
    proc = run_snakemake(ws, "-n", "--configfile", str(bomb), check=False, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "aliases (*name) expanded it holds more than 100000 values" in out, out[-3000:]
    assert time.monotonic() - started < 60 and len(out) < 20000  # refused, not expanded into the error


# --- item 10: a damaged prepared-data cache ----------------------------------------------------------
def test_a_damaged_prepared_cache_is_refused(tmp_path, mnist_dir):
    """100 inverted images in x_train.npy used to be trained on, under the canonical data key."""
    import numpy as np

    ws = make_workspace(tmp_path / "ws")
    config = str(write_config(ws, tiny_study(mnist_dir)))
    plan = run_snakemake(ws, "-n", "--configfile", config).stdout
    outputs = [line.split()[-1] for line in plan.splitlines() if "output:" in line]
    prepared = next(f for f in outputs if "resources/prepared/" in f)
    run_snakemake(ws, prepared, "--cores", "1", "--configfile", config)
    images = np.load(ws / prepared / "x_train.npy", mmap_mode="r+")
    images[:100] = 255 - images[:100]
    images.flush()
    del images
    proc = run_snakemake(ws, "--cores", "1", "--configfile", config, "--omit-from", "aggregate", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "x_train.npy: does not match the checksum recorded when it was prepared" in out
    assert "prepare_data rebuilds it" in out and not list((ws / "results").rglob("run.json")), out[-3000:]


# --- item 11: clear errors before any job -------------------------------------------------------------
def dry_run_fails(ws: Path, overlay: dict, name: str, *expected: str) -> str:
    config = write_config(ws, overlay, f"{name}.yaml")
    proc = run_snakemake(ws, "-n", "--configfile", str(config), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out, out[-3000:]
    for text in expected:
        assert text in out, f"{text!r} not in:\n{out[-3000:]}"
    return out


def test_a_results_path_that_is_a_file_or_a_link_to_nowhere_is_named(ws, mnist_dir):
    """They used to fail with a raw NotADirectoryError (Snakemake's DAG code) or FileExistsError (the lock)."""
    (ws / "a-file").write_text("")
    dry_run_fails(
        ws,
        tiny_study(mnist_dir, results="a-file/study"),
        "file-results",
        "config key results: 'a-file/study'",
        "a-file is not a folder",
    )
    (ws / "gone").symlink_to(ws / "nowhere")
    dry_run_fails(
        ws,
        tiny_study(mnist_dir, results="gone"),
        "dangling-results",
        "config key results: 'gone'",
        "gone is a link to nowhere",
    )


def test_train_subset_beyond_custom_data_is_refused_before_any_job(ws, mnist_dir, tmp_path):
    """It was refused only inside each training job, after prepare_data."""
    import struct

    from gradatlas import data

    mnist = data.read_idx_folder(mnist_dir)
    small = tmp_path / "small-mnist"
    small.mkdir()
    for key, name in data.FILES.items():
        array = getattr(mnist, key)[: 600 if key.endswith("train") else 100]
        (small / name).write_bytes(
            struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
        )
    overlay = tiny_study(mnist_dir)
    overlay["data"] |= {"path": str(small), "train_subset": 1000}
    dry_run_fails(ws, overlay, "subset", "config key data.train_subset: 1000 is too large", "holds 600 training images")


def test_an_unreadable_run_record_is_named_when_it_is_retrained(ws, mnist_dir):
    """A broken run.json used to be retrained silently."""
    config = str(write_config(ws, tiny_study(mnist_dir, seeds=[5]), "broken-record.yaml"))
    plan = run_snakemake(ws, "-n", "--configfile", config).stdout
    outputs = [f.rstrip(",") for line in plan.splitlines() if "output:" in line for f in line.split()[1:]]
    run_json = next(f for f in outputs if f.endswith("seed~5/run.json"))
    (ws / run_json).parent.mkdir(parents=True, exist_ok=True)
    (ws / run_json).write_text('{"spec": ')
    proc = run_snakemake(ws, "-n", "--configfile", config)
    assert f"{run_json}: unreadable (JSONDecodeError" in proc.stdout + proc.stderr
    assert "this run is trained again" in proc.stdout + proc.stderr and "seed~5/run.json" in proc.stdout
