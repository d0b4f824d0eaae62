"""How runs form packs (gradatlas.packs): groups by graph, size limits, and what happens to finished
runs when a study grows or a run folder goes. Run folders are written here as a finished training
leaves them (a run.json with its spec and pack)."""

from __future__ import annotations

import json
from pathlib import Path

from gradatlas import config as gaconfig, grid, packs
from gradatlas.outcomes import RUN_MEASURES


def study(tmp_path: Path, **axes) -> list[grid.Run]:
    cfg = {
        "data": {"source": "idx", "path": "unused"},
        "grid": {
            "initializer": ["glorot_uniform", "he_normal"],
            "activation": ["relu", "tanh"],
            "optimizer": ["adam"],
            "regularizer": ["none", "l2", "batch_norm"],
        }
        | axes,
        "seeds": [0, 1],
    }
    return grid.runs(gaconfig.check(gaconfig.validate_schema(cfg)), tmp_path)


def finish(pack: packs.Pack, written: int | None = None) -> None:
    """What the engine leaves in each member's folder (in the first `written` only: killed then)."""
    for i, run in enumerate(pack.runs[:written]):
        Path(run.run_dir).mkdir(parents=True, exist_ok=True)
        record = {
            "spec": run.spec.as_dict(),
            "summary": dict.fromkeys(RUN_MEASURES),
            "pack": {"name": pack.name, "member": i, "runs": [r.run_dir for r in pack.runs]},
        }
        (Path(run.run_dir) / "run.json").write_text(json.dumps(record))


def test_runs_that_share_a_graph_share_a_pack(tmp_path):
    plan = packs.plan(study(tmp_path), pack_size=64)
    # relu/tanh x (none+l2 | batch_norm): 4 graphs; none and l2 differ only in a per-member factor
    assert sorted(len(p.runs) for p in plan) == [4, 4, 8, 8]
    for pack in plan:
        assert len({packs.graph_key(r.spec) for r in pack.runs}) == 1
        assert pack.name.startswith(f"{pack.runs[0].spec.activation}_adam_")


def test_pack_size_cuts_groups_into_near_equal_packs(tmp_path):
    plan = packs.plan(study(tmp_path), pack_size=3)
    assert sorted(len(p.runs) for p in plan) == [2] * 6 + [3] * 4  # 8 -> 3+3+2 (twice), 4 -> 2+2 (twice)
    assert sum(len(p.runs) for p in packs.plan(study(tmp_path), pack_size=1)) == 24


def test_finished_packs_are_planned_as_they_were(tmp_path):
    first = packs.plan(study(tmp_path), pack_size=64)
    for pack in first:
        finish(pack)
    assert packs.plan(study(tmp_path), pack_size=64) == first  # same rules, same params: nothing to do


def test_a_new_seed_trains_only_new_runs(tmp_path):
    for pack in packs.plan(study(tmp_path), pack_size=64):
        finish(pack)
    grown = study(tmp_path)
    cfg_seed2 = [
        grid.Run(r.spec.replace(seed=2), r.cell | {"seed": 2}, r.run_dir.replace("seed~0", "seed~2"))
        for r in grown
        if r.cell["seed"] == 0
    ]
    plan = packs.plan(grown + cfg_seed2, pack_size=64)
    new = [p for p in plan if any(r.cell["seed"] == 2 for r in p.runs)]
    assert all(r.cell["seed"] == 2 for p in new for r in p.runs)
    assert sum(len(p.runs) for p in new) == 12


def test_a_deleted_or_changed_run_trains_again_alone(tmp_path):
    plan = packs.plan(study(tmp_path), pack_size=64)
    for pack in plan:
        finish(pack)
    gone = plan[0].runs[0]
    (Path(gone.run_dir) / "run.json").unlink()
    changed = plan[1].runs[0]
    record = json.loads((Path(changed.run_dir) / "run.json").read_text())
    record["spec"]["epochs"] = 99  # trained with other settings
    (Path(changed.run_dir) / "run.json").write_text(json.dumps(record))
    again = packs.plan(study(tmp_path), pack_size=64)
    to_train = [r.run_dir for p in again if p not in plan for r in p.runs]
    assert sorted(to_train) == sorted([gone.run_dir, changed.run_dir])


def test_the_plan_survives_a_round_trip(tmp_path):
    plan = packs.plan(study(tmp_path), pack_size=5)
    packs.save(plan, tmp_path / "plan.json")
    assert packs.load(tmp_path / "plan.json") == plan


def test_a_pack_interrupted_while_writing_outputs_is_planned_as_it_was(tmp_path):
    first = packs.plan(study(tmp_path), pack_size=4, pack_root=tmp_path / "packs")
    pack = max(first, key=lambda p: len(p.runs))
    (tmp_path / "packs" / pack.name).mkdir(parents=True)  # its state: killed after training
    finish(pack, written=1)  # ... once its first member's outputs were written
    assert packs.plan(study(tmp_path), pack_size=4, pack_root=tmp_path / "packs") == first  # it resumes
    (tmp_path / "packs" / pack.name).rmdir()  # complete packs have no folder: the rest train anew
    again = packs.plan(study(tmp_path), pack_size=4, pack_root=tmp_path / "packs")
    assert pack not in again and all(pack.runs[0] not in p.runs for p in again)


def test_stale_pack_folders_are_named_and_removed_when_the_plan_is_saved(tmp_path):
    root = tmp_path / "packs"
    old = packs.plan(study(tmp_path), pack_size=64, pack_root=root)
    for pack in old:
        (root / pack.name).mkdir(parents=True)  # killed while training
    new = packs.plan(study(tmp_path), pack_size=3, pack_root=root)  # then pack_size changed
    assert packs.stale(new, root) == sorted(root / p.name for p in old)
    (root / new[0].name).mkdir()
    packs.save(new, root / "plan.json")
    assert sorted(p.name for p in root.iterdir()) == sorted([new[0].name, "plan.json"])
