"""The programs tests run in a fresh Python process: `python tests/worker.py <command> <arguments>`.

A process of its own is needed where a test wants a Keras backend other than its own (Keras picks
one per process, at import) or a training it can SIGKILL. Each command selects its backend before
anything imports Keras; gradatlas comes from the installed package (or PYTHONPATH), and this
folder is on sys.path because Python runs this file from it.

Commands:
  train-same-weights BACKEND ROOT MNIST RUNS_JSON  members of RUNS_JSON, each a pack of one, from
      weights drawn by NumPy (the same on every backend); prints {member: {summary, backend}}
  probe-presets BACKEND MNIST  the Nielsen preset's stacked probe equals its networks' lone probes;
      prints "refused: <why>" when the backend cannot vectorize a stacked pack
  train-one BACKEND CONFIG_JSON PREPARED RUN_DIR  the config's first cell; prints its record's
      backend and summary, whether TensorFlow was imported and how many XLA programs it compiled
      and loaded from the compilation cache
  pinned THREADS  a training job's start (backend.select("jax", THREADS)); prints its CPU affinity
      and the CPU seconds per wall second of a matmul loop, then holds its CPUs until stdin closes
  hang BACKEND ROOT POINT MNIST MEMBERS_JSON  test_engine's members in one pack, sleeping at hook
      point POINT (after writing the file $HANG_FLAG) until killed; no POINT ("") trains through
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from gradatlas import grid


def _select(name: str) -> None:
    from gradatlas import backend

    backend.select(name)


def _same_weights_build(spec, **kw):
    """model.build, then every kernel drawn by NumPy from the spec's seed (He normal)."""
    import numpy as np

    from gradatlas import model

    net = model.build(spec, **kw)
    rng = np.random.default_rng(spec.seed)
    net.set_weights(
        [
            rng.normal(0, (2 / w.shape[0]) ** 0.5, w.shape).astype("float32") if w.ndim == 2 else w
            for w in net.get_weights()
        ]
    )
    return net


def train_same_weights(backend: str, root: str, mnist: str, runs_json: str) -> None:
    _select(backend)
    from gradatlas import config as C, data, engine

    root_dir = Path(root)
    split = data.split(data.read_idx_folder(Path(mnist)), 500, 2500)
    records = {}
    for i, (activation, optimizer, regularizer, schedule, changes) in enumerate(json.loads(runs_json)):
        cell = {
            "initializer": "he_normal",
            "activation": activation,
            "optimizer": optimizer,
            "regularizer": regularizer,
            "seed": 0,
        }
        cfg = C.check(
            C.validate_schema(
                {
                    "data": {"source": "idx", "path": "unused", "validation_size": 500, "train_subset": 2500},
                    "model": {"depth": 3, "width": 32},
                    "train": {"epochs": 3, "patience": 3, "lr_schedule": schedule},
                    "diagnostics": {"probe_size": 200, "early_steps": [1, 10]},
                    "seeds": [0],
                    "grid": {k: [v] for k, v in cell.items() if k != "seed"},
                }
            )
        )
        spec = grid.run_spec(cfg, cell).replace(backend=backend, **changes)
        member = grid.Run(spec, cell, root_dir / "runs" / f"member-{i}")
        [record] = engine.train_pack([member], split, root_dir / f"state-{i}", build=_same_weights_build)
        records[i] = {"summary": record["summary"], "backend": record["provenance"]["backend"]}
    print(json.dumps(records))


def probe_presets(backend: str, mnist: str) -> None:
    _select(backend)
    import numpy as np

    from gradatlas import backend as gabackend, data
    from gradatlas.studies import nielsen

    digits = data.read_idx_folder(Path(mnist))
    x, y = digits.x_train[:200].reshape(200, -1).astype("float32") / 255, digits.y_train[:200].astype("int32")
    models = [nielsen.build(2, 16, seed) for seed in (0, 1, 2)]
    together = nielsen.probe_norms(models, x, y)
    alone = np.concatenate([nielsen.probe_norms([m], x, y) for m in models])
    assert together.shape == (3, 3) and len({tuple(r) for r in together}) == 3, together
    np.testing.assert_allclose(together, alone, rtol=1e-5)
    try:
        gabackend.vmap(lambda t: t * 2)(np.ones((2, 3), "float32"))
    except ValueError as e:
        print("refused:", e)


def train_one(backend: str, config_json: str, prepared: str, run_dir: str) -> None:
    _select(backend)
    from gradatlas import config as C, engine

    programs = {"compiled": 0, "loaded": 0}  # XLA programs this process compiled, loaded from the cache
    if backend == "jax":
        import jax

        def count(event, **_):
            if event == "/jax/compilation_cache/compile_requests_use_cache":
                programs["compiled"] += 1
            elif event == "/jax/compilation_cache/cache_hits":
                programs["compiled"] -= 1
                programs["loaded"] += 1

        jax.monitoring.register_event_listener(count)

    cfg = json.loads(config_json)
    C.validate_schema(cfg)
    C.check(cfg)
    cell = grid.typed_cell(cfg, grid.frame(cfg).iloc[0].to_dict())
    member = grid.Run(grid.run_spec(cfg, cell), cell, Path(run_dir))
    [record] = engine.train_pack([member], Path(prepared), Path(run_dir).parent / "pack", threads=1)
    tensorflow_imported = sys.modules.get("tensorflow") is not None
    print(
        json.dumps(
            {
                "backend": record["provenance"]["backend"],
                "summary": record["summary"],
                "tensorflow_imported": tensorflow_imported,
                "programs": programs,
            }
        )
    )


def hang(backend: str, root: str, point: str, mnist: str, members_json: str) -> None:
    _select(backend)
    from gradatlas import data, engine
    from test_engine import make_members

    class Hang(engine.Hooks):
        """Stops (sleeps until killed) at one named point, after creating the flag file."""

        def _at(self, name):
            if name == point:
                Path(os.environ["HANG_FLAG"]).write_text(name)
                time.sleep(3600)

        def on_segment_end(self, engine, epoch, step):
            self._at(f"segment-{epoch}-{step}")

        def on_backup(self, engine, epoch, stage):
            self._at(f"backup-{stage}-{epoch}")

        def on_output(self, engine, member, stage):
            self._at(f"output-{stage}-{member}")

    root_dir = Path(root)
    split = data.split(data.read_idx_folder(Path(mnist)), 500, 2500)
    members = [
        grid.Run(m.spec.replace(backend=backend), m.cell, m.run_dir)
        for m in make_members(root_dir / "runs", json.loads(members_json))
    ]
    engine.train_pack(members, split, root_dir / "state", hooks=[Hang()] if point else [])


def pinned(threads: str) -> None:
    from gradatlas import backend

    backend.select("jax", int(threads))
    import jax
    import jax.numpy as jnp

    a = jnp.ones((1024, 1024))
    matmul = jax.jit(lambda a: a @ a)
    matmul(a).block_until_ready()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(60):
        matmul(a).block_until_ready()
    load = (time.process_time() - cpu) / (time.perf_counter() - wall)
    print(json.dumps({"cpus": sorted(os.sched_getaffinity(0)), "cpu_per_wall": load}), flush=True)
    sys.stdin.read()  # the CPUs stay held until the test closes stdin


COMMANDS = {
    "train-same-weights": train_same_weights,
    "probe-presets": probe_presets,
    "train-one": train_one,
    "hang": hang,
    "pinned": pinned,
}

if __name__ == "__main__":
    COMMANDS[sys.argv[1]](*sys.argv[2:])
