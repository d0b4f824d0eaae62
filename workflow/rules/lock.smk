# The run's start and end (Snakemake keeps one handler of each kind, so they all live here).
# One run at a time per results folder, across working folders (gradatlas/lock.py): a real run
# takes <results>/.gradatlas.lock when it starts and releases it when it ends; a second run that
# finds it held stops before any job, naming the holder. Snakemake calls onstart only for real
# runs (not -n, --summary, --unlock) and never in the job steps it spawns (--no-hooks).
# A real run also saves the pack plan that cluster job steps read (train.smk, gradatlas/packs.py).
from gradatlas import lock as galock


onstart:
    galock.acquire(RESULTS)
    if PACKS:
        gapacks.save(PACKS, PACK_PLAN)


onsuccess:
    galock.release(RESULTS)


onerror:
    galock.release(RESULTS)
