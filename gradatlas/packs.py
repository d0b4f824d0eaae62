"""How runs form packs: the runs one training job trains together (gradatlas.engine).

1. Only runs still to train form new packs: a run whose folder holds a `run.json` recorded with
   the spec the config now gives it is finished and never retrained, so adding a seed or a grid
   value to a finished study trains just the new runs (a run whose spec changed trains again).
   The pack that trained finished runs is planned again as it was (its run.json files record it),
   so its rule exists, with the same parameters, and Snakemake finds it complete; so is a pack
   interrupted while writing its members' outputs (its folder still holds its state: it resumes).
2. Runs that can share one compiled graph (`graph_key`: everything but the per-member settings)
   form a group; members may differ in seed, initializer, learning rate (constant schedule),
   clipnorm / clipvalue, and the regularizer among none / l1 / l2 / l1_l2 / dropout / max_norm.
   Activation, optimizer, batch normalization, depth, width, batch size and schedule split groups.
3. Each group is cut into ceil(n / pack_size) packs of near-equal size, in run-path order. On
   the TensorFlow backend every pack has one run (`backend.packs`).

A pack's name is its group's activation and optimizer plus a hash of its members' run folders:
the same runs always make the same pack (and the same rule, `train_<name>`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from gradatlas import backend, catalog
from gradatlas.grid import Run
from gradatlas.outcomes import RUN_MEASURES
from gradatlas.spec import RunSpec

# the spec fields in which members of one pack may differ (the last three only steer the host's
# per-member bookkeeping: early stopping and the run's status)
PER_MEMBER = (
    "seed",
    "initializer",
    "initializer_params",
    "clipnorm",
    "clipvalue",
    "regularizer",
    "regularizer_params",
    "patience",
    "target_accuracy",
    "stall_accuracy",
)
# regularizers whose catalog entry makes them per-member scalars; any other one is part of the graph
SCALAR_REGULARIZERS = tuple(name for name, entry in catalog.REGULARIZERS.items() if entry.member_scalars is not None)


@dataclass(frozen=True)
class Pack:
    name: str
    runs: tuple[Run, ...]

    def params(self) -> list[dict]:
        """What the train script needs, as plain values (Snakemake tracks them as params)."""
        return [{"cell": r.cell, "spec": r.spec.as_dict(), "run_dir": r.run_dir} for r in self.runs]


def graph_key(spec: RunSpec) -> str:
    values = dict(vars(spec))  # a shallow copy serializes alike, without as_dict's deep copy per run
    for name in PER_MEMBER:
        values.pop(name)
    if spec.regularizer not in SCALAR_REGULARIZERS:
        values["regularizer"], values["regularizer_params"] = spec.regularizer, spec.regularizer_params
    if spec.lr_schedule == "constant":  # the learning rate is a per-member variable only then
        values.pop("learning_rate")
    return json.dumps(values, sort_keys=True, default=str)


def recorded(runs: list[Run]) -> list[Run]:
    """The runs whose folder holds a `run.json`, found in one walk of the folder the run folders
    share: planning a large grid, mostly untrained, reads no file for each run."""
    if not runs:
        return []
    found = {
        os.path.normpath(folder)
        for folder, _, files in os.walk(os.path.commonpath([run.run_dir for run in runs]))
        if "run.json" in files
    }
    return [run for run in runs if os.path.normpath(run.run_dir) in found]


def finished_record(run: Run, warn=None) -> dict | None:
    """`run`'s run.json when its folder is complete and was trained with the spec it has now (a
    record without today's run measures, from an older GradAtlas, trains again). A record that
    cannot be read counts as unfinished too; `warn(message)` names the file and the reason."""
    path = Path(run.run_dir) / "run.json"
    try:
        record = json.loads(path.read_text())
        spec, summary = record["spec"], record["summary"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        if warn is not None:
            warn(f"{path}: unreadable ({type(exc).__name__}: {exc}); this run is trained again")
        return None
    try:
        current = set(RUN_MEASURES) <= set(summary)
        return record if current and RunSpec.from_dict(spec) == run.spec else None
    except (ValueError, KeyError, TypeError):
        return None


def plan(runs: list[Run], pack_size: int, pack_root=None, warn=None) -> list[Pack]:
    """The packs of `runs`: the packs that trained finished runs, as they were (so Snakemake finds
    their outputs complete and up to date), and new packs for every run still to train.

    `pack_root` holds the packs' folders (`<pack_root>/<name>`, their training state): a pack whose
    folder is still there was interrupted while it wrote its members' outputs. It too is planned as
    it was, so it resumes from its final state and writes every member again; a new pack of its
    members without `run.json` would train them afresh, in another composition, hence differently.
    `warn(message)`: told of each run.json that cannot be read (`finished_record`)."""
    by_dir = {run.run_dir: run for run in runs}
    done = {run.run_dir: record for run in recorded(runs) if (record := finished_record(run, warn)) is not None}
    packs, kept = [], set()
    for record in done.values():
        pack = record.get("pack", {})
        members = pack.get("runs", [])
        if not members or kept.intersection(members) or not all(m in by_dir for m in members):
            continue
        if all(m in done for m in members) or (pack_root is not None and Path(pack_root, pack["name"]).is_dir()):
            packs.append(_pack(tuple(by_dir[m] for m in members)))
            kept.update(members)
    groups: dict[str, list[Run]] = {}
    for run in runs:
        if run.run_dir not in done and run.run_dir not in kept:
            groups.setdefault(graph_key(run.spec), []).append(run)
    for key in sorted(groups):
        members = sorted(groups[key], key=lambda r: r.run_dir)
        count = math.ceil(len(members) / (pack_size if backend.packs(members[0].spec.backend) else 1))
        packs += [_pack(tuple(members[i::count])) for i in range(count)]
    return sorted(packs, key=lambda p: p.name)


def _pack(runs: tuple[Run, ...]) -> Pack:
    runs = tuple(sorted(runs, key=lambda r: r.run_dir))
    return Pack(_name(runs), runs)


def _name(runs: tuple[Run, ...]) -> str:
    digest = hashlib.sha1("\n".join(sorted(r.run_dir for r in runs)).encode()).hexdigest()[:10]
    first = runs[0].spec
    return f"{first.activation}_{first.optimizer}_{digest}"


def stale(packs: list[Pack], pack_root) -> list[Path]:
    """The folders in `pack_root` of packs not in `packs`: the state of a pack interrupted before
    `train.pack_size` or the grid changed. No planned pack can resume from it; its runs are in
    other packs now, which train them afresh."""
    root = Path(pack_root)
    planned = {p.name for p in packs}
    return sorted(f for f in root.iterdir() if f.is_dir() and f.name not in planned) if root.is_dir() else []


def save(packs: list[Pack], path: Path) -> None:
    """The plan, for the cluster job steps, which must find the same packs (see `load`). Saved when
    a run starts, holding the results folder's lock: the stale pack folders beside it go then (a
    dry run only names them, and a run refused by the lock may not touch another run's packs)."""
    from gradatlas.files import write_json

    for folder in stale(packs, Path(path).parent):
        shutil.rmtree(folder)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_json(path, [{"name": p.name, "runs": p.params()} for p in packs])


def load(path: Path) -> list[Pack]:
    """The plan the main snakemake process saved. A job step on a cluster node parses the workflow
    again, when some runs of the study may already be finished; re-planning there could form other
    packs than the one it was sent to run."""
    out = []
    for p in json.loads(Path(path).read_text()):
        runs = tuple(Run(RunSpec.from_dict(r["spec"]), r["cell"], r["run_dir"]) for r in p["runs"])
        out.append(Pack(p["name"], runs))
    return out
