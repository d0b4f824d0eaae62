"""Snakemake script: train one pack of runs and write their run folders."""

import gc
import logging
from pathlib import Path

from gradatlas.files import logged

with logged(snakemake.log[0]):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    from gradatlas import backend

    members = snakemake.params.members
    backend.select(members[0]["spec"]["backend"], snakemake.threads)  # before anything imports keras
    from gradatlas import engine
    from gradatlas.spec import RunSpec

    records = engine.train_pack(
        [engine.Member(RunSpec.from_dict(m["spec"]), m["cell"], Path(m["run_dir"])) for m in members],
        Path(snakemake.input.prepared),
        Path(snakemake.params.pack_dir),
        threads=snakemake.threads,
    )
    for record in records:
        print(record["cell"], record["spec"]["seed"], record["summary"]["status"], record["summary"]["test_accuracy"])
# every output is written and closed: spare the interpreter's exit a garbage collection of the
# million objects Keras and JAX leave behind (0.3 s of every job)
gc.freeze()
