# One run at a time per results folder, across working folders (gradatlas/lock.py): a real run
# takes <results>/.gradatlas.lock when it starts and releases it when it ends; a second run that
# finds it held stops before any job, naming the holder. Snakemake calls onstart only for real
# runs (not -n, --summary, --unlock) and never in the job steps it spawns (--no-hooks).
from gradatlas import lock as galock


onstart:
    galock.acquire(RESULTS)


onsuccess:
    galock.release(RESULTS)


onerror:
    galock.release(RESULTS)
