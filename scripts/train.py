"""Snakemake script: train one pack of runs and write their run folders."""

import gc
import logging
from pathlib import Path

from gradatlas import lock
from gradatlas.files import console_handler, logged

# the job's stderr, where snakemake shows it on the console: taken before `logged` sends it to the log
console = console_handler()
logging.getLogger("gradatlas.lock").addHandler(console)  # waiting for the pack's lease, or losing it
logging.getLogger("gradatlas.lock").setLevel(logging.INFO)
# one process trains a pack at a time, its log included: a lost main snakemake's jobs go on while
# its rerun submits the same packs again (gradatlas/lock.py, docs/cluster.md)
with lock.Lease(snakemake.params.pack_dir), logged(snakemake.log[0]):
    # GradAtlas' lines at INFO, other libraries' at WARNING only (JAX reports every accelerator it
    # does not find, e.g. "Unable to initialize backend 'tpu'", at INFO)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("gradatlas").setLevel(logging.INFO)
    logging.getLogger("gradatlas.engine.progress").addHandler(console)  # and to the log, through the root
    from gradatlas import backend

    members = snakemake.params.members
    backend.select(members[0]["spec"]["backend"], snakemake.threads)  # before anything imports keras
    from gradatlas import engine, grid
    from gradatlas.spec import RunSpec

    records = engine.train_pack(
        [grid.Run(RunSpec.from_dict(m["spec"]), m["cell"], m["run_dir"]) for m in members],
        Path(snakemake.input.prepared),
        Path(snakemake.params.pack_dir),
        threads=snakemake.threads,
    )
    for member, record in zip(members, records):  # the log's last lines: each run's outcome
        summary = record["summary"]
        logging.getLogger("gradatlas").info(
            "%s: %s, test accuracy %.4f", member["run_dir"], summary["status"], summary["test_accuracy"]
        )
# every output is written and closed: spare the interpreter's exit a garbage collection of the
# million objects Keras and JAX leave behind (0.3 s of every job)
gc.freeze()
