"""SIGKILL a whole `snakemake` (process group) while it trains a pack, rerun it: the pack resumes
from its last epoch backup and every member ends bit-identical to an uninterrupted run
(deterministic CPU, same machine). No hang points in the product: the test watches the pack's
backup file and kills as soon as an epoch has been committed, i.e. somewhere in the next epoch.
The library-level kills at exact points (mid-epoch, while rotating a backup, while writing the
outputs) are in tests/test_engine.py; here the CLI is also killed (and interrupted with Ctrl-C) at
each point where the pack writes its members' outputs, once some members are finished and others
not: the rerun must plan the same pack again, not a new one of the unfinished members.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import SNAKEMAKE, committed_epoch, kill_when, make_workspace, run_snakemake, write_config

pytestmark = pytest.mark.integration
TIMINGS = ["seconds", "train_seconds", "pack_seconds", "samples_per_second"]


def tiny_study(mnist_dir: Path, results: str) -> dict:
    return {
        "study": "resume",
        "results": results,
        "data": {"source": "idx", "path": str(mnist_dir), "validation_size": 500, "train_subset": 4000},
        "model": {"depth": 3, "width": 32},
        "train": {"epochs": 6, "patience": 10, "threads": 1},
        "diagnostics": {"probe_size": 200, "early_steps": [1, 10]},
        "grid": {
            "initializer": ["he_normal", "glorot_uniform"],
            "activation": ["relu"],
            "optimizer": ["adam"],
            "regularizer": ["dropout", "none"],
        },
        "seeds": [0],
    }


def start(ws: Path, config: Path, rerun: bool) -> subprocess.Popen:
    args = [str(SNAKEMAKE), "--cores", "1", "--configfile", str(config)]
    if rerun:
        args += ["--rerun-incomplete"]
    return subprocess.Popen(args, cwd=ws, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def kill_after_epoch(ws: Path, config: Path, results: str, epoch: int, rerun: bool) -> None:
    """Run snakemake until the pack has committed `epoch` epochs, then SIGKILL its process group."""
    proc = start(ws, config, rerun)
    kill_when(proc, lambda: committed_epoch(ws / results) >= epoch, f"the pack's committed epoch {epoch}")


@pytest.fixture(scope="module")
def resumed(tmp_path_factory, mnist_dir):
    ws = make_workspace(tmp_path_factory.mktemp("resume"))
    base = write_config(ws, tiny_study(mnist_dir, "results/base"), "base.yaml")
    killed = write_config(ws, tiny_study(mnist_dir, "results/killed"), "killed.yaml")
    run_snakemake(ws, "--cores", "1", "--configfile", str(base))
    kill_after_epoch(ws, killed, "results/killed", 2, rerun=False)
    # a killed snakemake leaves its locks behind: `snakemake --unlock`, then rerun (the results
    # folder's own lock of the dead process is taken over)
    run_snakemake(ws, "--unlock", "--configfile", str(killed))
    kill_after_epoch(ws, killed, "results/killed", 4, rerun=True)
    run_snakemake(ws, "--unlock", "--configfile", str(killed))
    run_snakemake(ws, "--cores", "1", "--rerun-incomplete", "--configfile", str(killed))
    return ws / "results/base/runs", ws / "results/killed/runs"


# where a pack writes its outputs after training (gradatlas.engine.Trainer._write, members in run
# folder order): the run folder's index and the file just written; the kills and the Ctrl-C follow
# one another on one study, each rerun resuming what the previous one left
OUTPUT_POINTS = [(0, "history.csv"), (0, "model.keras"), (0, "run.json"), (2, "run.json")]
INTERRUPT_POINT = (1, "run.json")


@pytest.fixture(scope="module")
def killed_while_writing(resumed, mnist_dir):
    """The tiny study killed (SIGKILL) at each of OUTPUT_POINTS and interrupted (SIGINT to the
    process group, as Ctrl-C) at INTERRUPT_POINT, each time rerun; then run to the end."""
    base, _ = resumed
    ws = base.parents[2]
    config = write_config(ws, tiny_study(mnist_dir, "results/writing"), "writing.yaml")
    members = [ws / "results/writing/runs" / run.relative_to(base) for run in run_folders(base)]

    def written(member: int, name: str, since: float):
        path = members[member] / name  # written by this attempt: snakemake removed the last one's
        return lambda: path.exists() and path.stat().st_mtime >= since

    for i, (member, name) in enumerate(OUTPUT_POINTS):
        since = time.time()
        kill_when(start(ws, config, rerun=i > 0), written(member, name, since), f"member {member}'s {name}")
        run_snakemake(ws, "--unlock", "--configfile", str(config))
    since, proc = time.time(), start(ws, config, rerun=True)
    done = written(*INTERRUPT_POINT, since)

    def interrupted():
        if not done():
            return False
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: snakemake and the job end on their own
        proc.wait(timeout=120)
        return True

    kill_when(proc, interrupted, f"member {INTERRUPT_POINT[0]}'s {INTERRUPT_POINT[1]}")
    run_snakemake(ws, "--unlock", "--configfile", str(config))
    run_snakemake(ws, "--cores", "1", "--rerun-incomplete", "--configfile", str(config))
    return base, ws / "results/writing/runs"


def run_folders(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob("run.json"))


def assert_bit_identical(base: Path, other: Path) -> list[dict]:
    """Every run of `other` equals its run in `base` bit for bit (timings aside); returns `other`'s run.json records."""
    import keras

    pairs = list(zip(run_folders(base), run_folders(other), strict=True))
    assert len(pairs) == 4
    records = []
    for a, b in pairs:
        assert a.relative_to(base) == b.relative_to(other)
        wa = keras.saving.load_model(a / "model.keras", safe_mode=True).get_weights()
        wb = keras.saving.load_model(b / "model.keras", safe_mode=True).get_weights()
        assert all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(wa, wb, strict=True))
        pd.testing.assert_frame_equal(
            pd.read_csv(a / "history.csv").drop(columns="seconds"),
            pd.read_csv(b / "history.csv").drop(columns="seconds"),
        )
        pd.testing.assert_frame_equal(
            pd.read_parquet(a / "diagnostics.parquet"), pd.read_parquet(b / "diagnostics.parquet")
        )
        ra, rb = (json.loads((r / "run.json").read_text()) for r in (a, b))
        assert {k: v for k, v in ra["summary"].items() if k not in TIMINGS} == {
            k: v for k, v in rb["summary"].items() if k not in TIMINGS
        }
        assert ra["resumed_from_epoch"] == 0
        records.append(rb)
    return records


def test_every_member_resumed_bit_identical(resumed):
    assert all(record["resumed_from_epoch"] >= 4 for record in assert_bit_identical(*resumed))


def test_a_kill_or_ctrl_c_while_writing_outputs_resumes_the_same_pack(killed_while_writing):
    base, writing = killed_while_writing
    records = assert_bit_identical(base, writing)
    # the last attempts only wrote the outputs again, from the state after the last epoch, as the
    # pack it was (a new pack of the unfinished members would have trained them from epoch 0)
    assert all(record["resumed_from_epoch"] == 6 for record in records)
    assert len({record["pack"]["name"] for record in records}) == 1
    assert not [p for p in (writing.parent / "packs").iterdir() if p.is_dir()]  # no orphaned pack folder


def test_finished_run_folders_are_clean(resumed):
    _, killed = resumed
    for run in run_folders(killed):
        assert sorted(p.name for p in run.iterdir()) == [
            "diagnostics.parquet",
            "history.csv",
            "model.keras",
            "run.json",
            "tensorboard",
        ]
    assert not list(killed.parent.glob("packs/*/state.npz"))  # backups go with a complete pack
    umask = os.umask(0)
    os.umask(umask)
    for path in killed.rglob("*"):  # ordinary permissions: what the umask gives
        mode = path.stat().st_mode & 0o777
        assert mode == (0o777 if path.is_dir() else 0o666) & ~umask, f"{path}: mode {oct(mode)}"
