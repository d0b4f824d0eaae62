"""A pack SIGKILLed at exact points and rerun writes the same TensorBoard events as an
uninterrupted one: the same tags at the same steps with the same values, each (tag, step) once, in
one event file per run. Before, every event before a kill was there twice, across two event files.
The kills and the uninterrupted run are those of tests/test_engine.py's resume test.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import metadata

from conftest import RESUMABLE, killed_and_uninterrupted

# epoch 2's events written but its backup not committed (the rerun resumes after epoch 1, behind
# the events); mid-epoch 4; after member 0's run folder, with its hparams and summary, is written
KILL_POINTS = ["backup-written-2", "segment-3-63", "output-model-1"]
TIMINGS = {"epoch/seconds"}


def events(run: Path) -> list[tuple]:
    """The run's events in file order as (tag, step, value); the hparams as their values, timings as None."""
    out = []
    for path in sorted((run / "tensorboard").glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag == metadata.SESSION_START_INFO_TAG:
                    info = metadata.parse_session_start_info_plugin_data(value.metadata.plugin_data.content)
                    out.append((value.tag, event.step, sorted((k, str(v)) for k, v in info.hparams.items())))
                else:
                    out.append((value.tag, event.step, None if value.tag in TIMINGS else value.simple_value))
    return out


@pytest.fixture(scope="module")
def runs(mnist_dir, tmp_path_factory):
    base, killed = killed_and_uninterrupted(tmp_path_factory, mnist_dir, KILL_POINTS, prefix="tb-")
    return base / "runs", killed / "runs"


def test_a_resumed_run_has_the_events_of_an_uninterrupted_one(runs):
    base, killed = runs
    for i in RESUMABLE:
        a, b = events(base / f"member-{i}"), events(killed / f"member-{i}")
        assert len({(tag, step) for tag, step, _ in b}) == len(b)  # no step twice
        assert {tag for tag, _, _ in a} >= {"epoch/val_accuracy", "layer_1/delta_rms", "summary/test_accuracy"}
        assert b == a
        assert len(list((killed / f"member-{i}" / "tensorboard").glob("events.out.tfevents.*"))) == 1
