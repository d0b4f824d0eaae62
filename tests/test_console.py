"""What a person sees on the console of a study run as `make demo` runs it: one short line per pack
and epoch from the training jobs, short job lines, no library noise (issue #20)."""

from __future__ import annotations

import re
import shlex
import subprocess

import pytest

from conftest import REPO, make_workspace, run_snakemake, write_config

pytestmark = pytest.mark.integration

EPOCH_LINE = re.compile(
    r"^\d\d:\d\d:\d\d (\S+) epoch (\d+)/2: best val_accuracy \d\.\d{4}, \d+/\d+ runs training, ETA \d+s$"
)


def test_make_demo_console_shows_one_line_per_pack_epoch_and_nothing_long(tmp_path, mnist_dir):
    make = subprocess.run(["make", "-n", "-C", str(REPO), "demo"], capture_output=True, text=True, check=True).stdout
    args = shlex.split(next(line for line in make.splitlines() if "snakemake" in line))[1:]
    ws = make_workspace(tmp_path / "ws")
    overlay = write_config(
        ws,
        {
            "data": {"source": "idx", "path": str(mnist_dir), "train_subset": 3000, "validation_size": 500},
            "train": {"epochs": 2},
            "grid": {
                "initializer": ["he_normal"],
                "activation": ["relu", "tanh"],
                "optimizer": ["adam"],
                "regularizer": ["none"],
            },
            "seeds": [0, 1],
        },
    )
    proc = run_snakemake(ws, *args, str(overlay))  # the overlay joins the --configfile list that ends the line
    console = (proc.stdout + proc.stderr).splitlines()
    epochs = sorted((m[1], int(m[2])) for m in map(EPOCH_LINE.match, console) if m)
    packs = sorted(p.stem for p in (ws / "results" / "demo" / "logs" / "train").glob("*.log"))
    assert len(packs) == 2 and epochs == [(p, e) for p in packs for e in (1, 2)], "\n".join(console)
    assert max(map(len, console)) <= 200, max(console, key=len)  # the job blocks listed every run file
    for text in [*console, *((ws / "results" / "demo" / "logs" / "train" / f"{p}.log").read_text() for p in packs)]:
        assert "Unable to initialize backend" not in text
