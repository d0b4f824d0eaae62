"""TensorBoard event files written with the `tensorboard` package's own protobufs and record
writer, so that a training on the JAX backend never imports TensorFlow.

Per run: the epoch metrics (`epoch/loss`, `epoch/val_accuracy`, ...), every probe's per-layer
diagnostics (`layer_<l>/<stat>`), and at the end the run's hparams (grid axes and seed) with its
summary metrics (`summary/<metric>`), so that the HParams dashboard can sort and filter runs:
`tensorboard --logdir <results>/runs`. Every scalar's step is the optimizer step (an epoch's
metrics at the step that ends it), so epoch metrics and probes share one axis. A resumed run's
events are those of an uninterrupted run: each start rewrites them from the state it starts from.
"""

from __future__ import annotations

import math
import socket
import time
from pathlib import Path

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import metadata, plugin_data_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

from gradatlas.diagnostics import STATS

EPOCH_TAGS = ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds")
SUMMARY_TAGS = (
    "test_accuracy",
    "test_loss",
    "best_val_accuracy",
    "epochs_run",
    "vanishing_ratio_init",
    "vanishing_ratio_final",
)


class RunLog:
    """One run's event file in `folder`, begun by `start`."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._file = None
        self._probes_written = 0

    def start(self, history: list[dict], probes: list[dict], steps_per_epoch: int) -> None:
        """Begin the run's events as an uninterrupted run would have written them up to the state the
        training starts from (nothing, or a restored backup's history and probes). An interrupted
        attempt's event files go: they may reach beyond that state (events are written before the
        epoch's backup), and TensorBoard would show each step of theirs again beside the new file's."""
        for old in self.folder.glob("events.out.tfevents.*"):
            old.unlink()
        for row in history:
            step = row["epoch"] * steps_per_epoch
            self.epoch(row, [p for p in probes if p["step"] <= step], step)

    def _write(self, event: event_pb2.Event) -> None:
        if self._file is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            name = f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.gradatlas"
            self._file = open(self.folder / name, "wb")
            self._writer = RecordWriter(self._file)
            self._writer.write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2").SerializeToString())
        self._writer.write(event.SerializeToString())

    def scalars(self, step: int, values: dict) -> None:
        finite = [summary_pb2.Summary.Value(tag=k, simple_value=float(v)) for k, v in values.items() if _finite(v)]
        if finite:
            self._write(
                event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary_pb2.Summary(value=finite))
            )

    def epoch(self, row: dict, probes: list[dict], step: int) -> None:
        """The epoch's metrics at optimizer step `step` (the epoch's last), and the probes recorded
        since the last call."""
        self.scalars(step, {f"epoch/{k}": row[k] for k in EPOCH_TAGS})
        for probe in probes[self._probes_written :]:
            self.scalars(probe["step"], {f"layer_{probe['layer']}/{s}": probe[s] for s in STATS})
        self._probes_written = len(probes)
        if self._file is not None:
            self._file.flush()

    def finish(self, hparams: dict, summary: dict) -> None:
        """The run's hparams and summary metrics; closes the file."""
        info = plugin_data_pb2.SessionStartInfo(start_time_secs=time.time())
        for key, value in hparams.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                info.hparams[key].string_value = "none" if value is None else str(value)
            else:
                info.hparams[key].number_value = float(value)
        content = plugin_data_pb2.HParamsPluginData(session_start_info=info)
        value = summary_pb2.Summary.Value(
            tag=metadata.SESSION_START_INFO_TAG, metadata=metadata.create_summary_metadata(content)
        )
        self._write(event_pb2.Event(wall_time=time.time(), step=0, summary=summary_pb2.Summary(value=[value])))
        self.scalars(0, {f"summary/{k}": summary.get(k) for k in SUMMARY_TAGS})
        self._file.close()


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
