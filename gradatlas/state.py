"""The state of a pack as one named pytree, and its checkpoint.

`State` holds everything a resumed pack needs and nothing else: the variables the compiled
programs update (`train`: trainable, non-trainable, optimizer; each a list of (K, ...) arrays,
member first), the best weights of early stopping (`best`), the epochs done, which members still
train, each member's host-side `Progress` (its history, probes, early-stopping counters) and a
slot for the hooks' own state (`hooks`: key -> JSON value). `save` writes it as one unit; `load`
reads the newest readable checkpoint of the same pack.

On disk: `<pack_dir>/state.npz` (the previous one kept as state.prev.npz), written atomically at
every epoch end: one array per leaf, named by its path (`train.trainable.0`), and the rest as JSON.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import keras
import numpy as np

from gradatlas.files import jsonable

log = logging.getLogger("gradatlas.engine")

CHECKPOINT, PREVIOUS_CHECKPOINT = "state.npz", "state.prev.npz"
FORMAT = 2  # 1: the engine's dict of "tv"/"ntv"/"ov" lists


class Train(NamedTuple):
    """What one step updates: lists of stacked values in the order of the template network's and
    optimizer's variables."""

    trainable: list
    non_trainable: list
    optimizer: list


class Weights(NamedTuple):
    trainable: list
    non_trainable: list


@dataclass
class Progress:
    """The host-side record of one member: what its run folder will hold."""

    history: list = field(default_factory=list)
    diagnostics: list = field(default_factory=list)
    best_value: float = -math.inf
    best_epoch: int | None = None
    wait: int = 0
    stopped: bool = False
    diverged: bool = False
    probe_seconds: float = 0.0


class State(NamedTuple):
    """The pack's state (see the module's docstring); replaced, never changed in place by the
    engine's programs. `active` is a (K,) bool array."""

    train: Train
    best: Weights
    epoch: int
    active: np.ndarray
    progress: list
    hooks: dict

    @classmethod
    def initial(cls, train: Train) -> "State":
        k = int(train.trainable[0].shape[0])
        best = Weights(list(train.trainable), list(train.non_trainable))
        return cls(train, best, 0, np.ones(k, dtype=bool), [Progress() for _ in range(k)], {})


def _arrays(state: State) -> dict:
    """The array leaves by path: `train.trainable.0`, ..., `best.non_trainable.3`."""
    return {
        f"{part}.{group}.{i}": value
        for part in ("train", "best")
        for group, values in getattr(state, part)._asdict().items()
        for i, value in enumerate(values)
    }


def save(state: State, folder: Path, key: str, stage=lambda name: None) -> None:
    """Write `state` atomically as `folder`/state.npz, keeping the previous one; `key` names the
    pack's settings (a checkpoint of others is never resumed). `stage(name)` after "written" (the
    new file, not yet in place), "rotated" (the old one moved aside) and "committed"."""
    arrays = {name: keras.ops.convert_to_numpy(v) for name, v in _arrays(state).items()}
    meta = {
        "format": FORMAT,
        "key": key,
        "epoch": state.epoch,
        "active": np.asarray(state.active).tolist(),
        "progress": [p.__dict__ for p in state.progress],
        "hooks": state.hooks,
    }
    arrays["meta"] = np.array(json.dumps(meta, default=jsonable))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    latest, partial = folder / CHECKPOINT, folder / f".{CHECKPOINT}.partial"
    with open(partial, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    stage("written")
    if latest.exists():
        os.replace(latest, folder / PREVIOUS_CHECKPOINT)
    stage("rotated")
    os.replace(partial, latest)
    stage("committed")


def load(folder: Path, like: State, key: str) -> State | None:
    """The newest readable checkpoint in `folder` of the pack `key` whose arrays fit `like`'s, or
    None (then the pack starts afresh)."""
    folder = Path(folder)
    (folder / f".{CHECKPOINT}.partial").unlink(missing_ok=True)
    for path in (folder / CHECKPOINT, folder / PREVIOUS_CHECKPOINT):
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            meta = json.loads(str(arrays.pop("meta")))
        except FileNotFoundError:
            continue
        except Exception as error:  # torn or foreign file: try the previous one
            log.warning("%s: unreadable backup (%s); trying the previous one", path, error)
            continue
        if meta.get("key") != key:
            log.warning("%s: a backup of other settings; starting afresh", path)
            return None
        expected = _arrays(like)
        if (
            meta.get("format") != FORMAT
            or set(arrays) != set(expected)
            or any(tuple(arrays[name].shape) != tuple(v.shape) for name, v in expected.items())
        ):
            log.warning("%s: variables do not fit this pack; starting afresh", path)
            return None
        value = {name: keras.ops.convert_to_tensor(a) for name, a in arrays.items()}

        def group(part, cls):
            return cls(
                *([value[f"{part}.{g}.{i}"] for i in range(len(getattr(getattr(like, part), g)))] for g in cls._fields)
            )

        log.info("resumed from %s after epoch %d", path, meta["epoch"])
        return State(
            train=group("train", Train),
            best=group("best", Weights),
            epoch=int(meta["epoch"]),
            active=np.array(meta["active"], dtype=bool),
            progress=[Progress(**p) for p in meta["progress"]],
            hooks=dict(meta.get("hooks") or {}),
        )
    return None
