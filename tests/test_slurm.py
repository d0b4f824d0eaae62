"""End to end on a real SLURM: a small real study through `--profile profiles/slurm`.

A module fixture starts the single-node local SLURM of scripts/slurm/start-local-slurm.sh (root and
apt, two fake GPUs) and stops it afterwards, if it started it. Where that cannot run the tests are
skipped, unless GRADATLAS_REQUIRE_SLURM=1 (set by .ci/run): then they fail.

The study (4 trainings, 1 epoch: sigmoid and relu, two initializers each) trains as two packs of 2,
two sbatch jobs. A lost main snakemake's rerun leaves the pack to the job it had submitted (the
pack's lease, gradatlas/lock.py). The cancel/retry/resume test (GRADATLAS_SLURM_RESUME_TEST=1) submits a
single training, scancels it once its pack has committed an epoch and checks that the retry resumes there.
Snakemake's --verbose output has every `sbatch call:`; the resource flags of the train jobs are printed (run
with `pytest -s` to see them, and the wall time).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, SNAKEMAKE, committed_epoch, make_workspace, write_config

pytestmark = [pytest.mark.slurm, pytest.mark.integration]

START = REPO / "scripts" / "slurm" / "start-local-slurm.sh"
STOP = REPO / "scripts" / "slurm" / "stop-local-slurm.sh"
RUN_DIR = Path(os.environ.get("GRADATLAS_SLURM_RUN", "/run/gradatlas-slurm"))
PROFILES = ["--profile", "profiles/slurm", "--profile", "profiles/slurm-local"]
PER_JOB = 2  # trainings per sbatch job: 4 trainings in two graphs (sigmoid, relu) -> two packs of 2
STUDY_TIMEOUT = 360  # seconds, for `timeout -k`
# the env knobs this test sets itself; an outer value must not leak into the runs
OWN_ENV = ("GRADATLAS_SLURM_PARTITION",)


def slurm_study(mnist_dir: Path, results: str = "results", train_subset: int = 2000, **train) -> dict:
    return {
        "study": "slurm-e2e",
        "results": results,
        "data": {"source": "idx", "path": str(mnist_dir), "validation_size": 500, "train_subset": train_subset},
        "model": {"depth": 3, "width": 32},
        "train": {"epochs": 1, "threads": 1, **train},
        "diagnostics": {"probe_size": 200, "early_steps": [1]},
        "grid": {
            "initializer": ["glorot_uniform", "he_normal"],
            "activation": ["sigmoid", "relu"],
            "optimizer": ["adam"],
            "regularizer": ["none"],
        },
        "seeds": [0],
    }


def unavailable(reason: str):
    if os.environ.get("GRADATLAS_REQUIRE_SLURM") == "1":
        pytest.fail(f"GRADATLAS_REQUIRE_SLURM=1, but the local SLURM cannot run here: {reason}")
    pytest.skip(f"local SLURM unavailable: {reason} (set GRADATLAS_REQUIRE_SLURM=1 to make this a failure)")


@pytest.fixture(scope="module")
def local_slurm(mnist_dir) -> dict:
    """Environment for SLURM clients; starts the local SLURM, stops it at the end if started here."""
    if os.name != "posix" or os.geteuid() != 0:
        unavailable("scripts/slurm/start-local-slurm.sh must run as root (it installs packages, starts daemons)")
    if not shutil.which("timeout"):
        unavailable("coreutils `timeout` not found")
    if not shutil.which("sbatch") and not shutil.which("apt-get"):
        unavailable("SLURM is not installed and apt-get is not available to install it")
    try:
        proc = subprocess.run(["timeout", "-k", "10", "300", str(START)], capture_output=True, text=True, timeout=330)
    except subprocess.TimeoutExpired:
        unavailable("start-local-slurm.sh did not finish in 300 s")
    if proc.returncode != 0:
        unavailable(
            f"start-local-slurm.sh failed (rc {proc.returncode}):\n{proc.stdout[-1500:]}\n{proc.stderr[-3000:]}"
        )
    print(f"\n[slurm] {proc.stdout.strip()}")
    started_here = "already running" not in proc.stdout
    yield {"SLURM_CONF": str(RUN_DIR / "slurm.conf")}
    if started_here:
        stop = subprocess.run([str(STOP)], capture_output=True, text=True, timeout=120)
        print(f"\n[slurm] {stop.stdout.strip()} {stop.stderr.strip()}")
        assert stop.returncode == 0, f"stop-local-slurm.sh failed:\n{stop.stdout}\n{stop.stderr}"


def snakemake_cmd(*args: str, timeout: int = STUDY_TIMEOUT) -> list[str]:
    return ["timeout", "-k", "15", str(timeout), str(SNAKEMAKE), *PROFILES, "--verbose", *args]


def run_env(slurm_env: dict, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in OWN_ENV}
    return env | slurm_env | extra


def sbatch_calls(output: str) -> list[str]:
    """The plugin's `sbatch call:` lines (--verbose), without the long --wrap'ed command."""
    return [m.group(1).split(" --wrap=")[0].strip() for m in re.finditer(r"sbatch call: (.*)", output)]


def flag(call: str, name: str) -> list[str]:
    """Values of an sbatch option in `call`: `--gpus=1`, `-t 90`, `--mem 1500` forms."""
    return re.findall(rf"(?:^|\s){re.escape(name)}(?:=|\s+)'?([^\s']+)", call)


@pytest.fixture(scope="module")
def study(local_slurm, mnist_dir, tmp_path_factory) -> dict:
    ws = make_workspace(tmp_path_factory.mktemp("slurm-study"))
    config = write_config(ws, slurm_study(mnist_dir))
    t0 = time.monotonic()
    proc = subprocess.run(
        snakemake_cmd("--configfile", str(config)),
        cwd=ws,
        capture_output=True,
        text=True,
        env=run_env(local_slurm),
        timeout=STUDY_TIMEOUT + 30,
    )
    wall = time.monotonic() - t0
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"snakemake on SLURM failed ({proc.returncode}):\n{output[-8000:]}"
    calls = sbatch_calls(output)
    print(f"\n[slurm] study: 4 trainings, {PER_JOB} per job, wall {wall:.1f} s; sbatch calls:")
    for call in calls:
        print(f"[slurm]   {call}")
    runs = {p: json.loads(p.read_text()) for p in sorted((ws / "results" / "runs").rglob("run.json"))}
    return {"ws": ws, "output": output, "calls": calls, "runs": runs, "wall": wall}


def test_every_training_ran_as_a_slurm_job_with_a_gpu(study):
    assert len(study["runs"]) == 4
    for path, run in study["runs"].items():
        env = run["provenance"]["environment"]
        assert env.get("SLURM_JOB_ID", "").isdigit(), f"{path}: no SLURM job id in {env}"
        # the local cluster has two fake GPUs (gres.conf): SLURM granted one of them
        assert env.get("CUDA_VISIBLE_DEVICES") in {"0", "1"}, f"{path}: no granted GPU in {env}"


def test_trainings_were_packed_into_fewer_jobs(study):
    job_ids = {run["provenance"]["environment"]["SLURM_JOB_ID"] for run in study["runs"].values()}
    assert 1 < len(job_ids) < len(study["runs"]), f"job ids {job_ids} for {len(study['runs'])} trainings"
    per_job = sorted(
        sum(r["provenance"]["environment"]["SLURM_JOB_ID"] == j for r in study["runs"].values()) for j in job_ids
    )
    assert per_job == [PER_JOB, PER_JOB]


def test_every_train_job_asked_for_exactly_one_gpu(study):
    train_calls = [c for c in study["calls"] if "train" in " ".join(flag(c, "--comment"))]
    assert len(train_calls) == 2, f"expected 2 sbatch jobs for 4 trainings, {PER_JOB} per job: {study['calls']}"
    for call in train_calls:
        assert flag(call, "--gpus") == ["1"], call
        assert not flag(call, "--gres"), call
        # a pack trains its members together: one job's cpus and memory, the sum of their runtimes
        assert flag(call, "--cpus-per-task") == ["1"], call
        assert flag(call, "--mem") == ["1500"], call
    assert [int(flag(c, "-t")[0]) for c in train_calls] == [30 * PER_JOB] * 2
    # aggregate, analyze, report and prepare_data are local rules: nothing else went to SLURM
    assert len(study["calls"]) == len(train_calls), study["calls"]


def test_tables_and_report_were_produced(study):
    ws = study["ws"]
    runs = pd.read_parquet(ws / "results" / "tables" / "runs.parquet")
    assert len(runs) == 4
    assert (ws / "results" / "report" / "index.html").stat().st_size > 0
    # the packed jobs' logs were kept (profiles/slurm-local)
    assert list((ws / ".snakemake" / "slurm_logs").rglob("*.log"))


def squeue_jobs_in(ws: Path, env: dict) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i|%Z"], capture_output=True, text=True, env=env, timeout=30).stdout
    return [line.split("|")[0] for line in out.splitlines() if line.split("|")[-1].rstrip("/") == str(ws).rstrip("/")]


@pytest.mark.skipif(
    os.environ.get("GRADATLAS_SLURM_RESUME_TEST") != "1",
    reason="cancel/retry/resume on SLURM takes 1.5-4 more minutes: set GRADATLAS_SLURM_RESUME_TEST=1 to run it",
)
def test_cancelled_job_is_retried_and_resumes_from_its_last_epoch(study, local_slurm, mnist_dir):
    """scancel a training once its pack has committed an epoch: the profile's `retries` resubmits
    it, and it resumes from the pack's backup instead of starting over."""
    ws = study["ws"]
    epochs = 8
    config = write_config(
        ws,
        slurm_study(mnist_dir, results="results-resume", train_subset=20000, epochs=epochs, patience=10),
        "resume.yaml",
    )
    cell = "initializer~he_normal/activation~relu/optimizer~adam/regularizer~none/seed~0"
    target = f"results-resume/runs/{cell}/run.json"
    env = run_env(local_slurm)
    log = (ws / "resume.log").open("w")
    t0 = time.monotonic()
    proc = subprocess.Popen(
        snakemake_cmd(target, "--configfile", str(config)),
        cwd=ws,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        while committed_epoch(ws / "results-resume") < 1:
            assert proc.poll() is None, (
                f"snakemake ended before the first epoch:\n{(ws / 'resume.log').read_text()[-5000:]}"
            )
            assert time.monotonic() - t0 < 180, "no epoch finished within 180 s"
            time.sleep(0.2)
        jobs = squeue_jobs_in(ws, env)
        assert len(jobs) == 1, f"expected one SLURM job of this workspace, got {jobs}"
        subprocess.run(["scancel", jobs[0]], check=True, env=env, timeout=30)
        rc = proc.wait(timeout=STUDY_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    output = (ws / "resume.log").read_text()
    print(
        f"\n[slurm] cancel + retry + resume: wall {time.monotonic() - t0:.1f} s, cancelled job {jobs[0]}; sbatch calls:"
    )
    for call in sbatch_calls(output):
        print(f"[slurm]   {call}")
    assert rc == 0, f"snakemake did not recover from the cancelled job ({rc}):\n{output[-8000:]}"
    run = json.loads((ws / target).read_text())
    assert 1 <= run["resumed_from_epoch"] < epochs, run["resumed_from_epoch"]
    assert run["summary"]["epochs_run"] == epochs
    calls = sbatch_calls(output)
    # the target's pack holds both relu runs (the two initializers): 2 x 30 minutes
    assert len(calls) == 2 and all(flag(c, "--gpus") == ["1"] and flag(c, "-t") == ["60"] for c in calls), calls
    assert run["provenance"]["environment"]["SLURM_JOB_ID"] != jobs[0]
    assert not list((ws / "results-resume" / "packs").glob("*/state.npz"))


def test_a_lost_main_snakemake_leaves_one_job_per_pack(local_slurm, mnist_dir, tmp_path):
    """#18 item 8: SIGKILL only the main snakemake once its pack has committed an epoch (its login
    node is lost): its job trains on. `--unlock` and the rerun submit the pack again; the new job
    finds the pack's lease held, waits (GRADATLAS_LEASE_WAIT_S, 5 s here) and fails naming the
    orphan's job id; the orphan's training is undisturbed."""
    ws = make_workspace(tmp_path / "lease")
    config = write_config(
        ws,
        slurm_study(mnist_dir, results="results-lease", train_subset=20000, epochs=1000, patience=1000),
        "lease.yaml",
    )
    cell = "initializer~he_normal/activation~relu/optimizer~adam/regularizer~none/seed~0"
    target = f"results-lease/runs/{cell}/run.json"
    env = run_env(local_slurm, GRADATLAS_LEASE_WAIT_S="5")
    main = subprocess.Popen(
        [str(SNAKEMAKE), *PROFILES, target, "--configfile", str(config)],
        cwd=ws,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    orphan = None
    try:
        t0 = time.monotonic()
        while committed_epoch(ws / "results-lease") < 1:
            assert main.poll() is None, "snakemake ended before the first epoch"
            assert time.monotonic() - t0 < 180, "no epoch finished within 180 s"
            time.sleep(0.2)
        main.kill()  # the main snakemake only, as when its host is lost
        main.wait()
        (orphan,) = squeue_jobs_in(ws, env)
        subprocess.run(
            snakemake_cmd("--unlock", "--configfile", str(config)),
            cwd=ws,
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        rerun = subprocess.run(
            snakemake_cmd(target, "--configfile", str(config), "--retries", "0"),
            cwd=ws,
            env=env,
            capture_output=True,
            text=True,
            timeout=STUDY_TIMEOUT + 30,
        )
        output = rerun.stdout + rerun.stderr
        assert rerun.returncode != 0, output[-5000:]
        (new,) = [c for c in re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+)", output) if c != orphan]
        logs = "".join(p.read_text() for p in (ws / ".snakemake" / "slurm_logs").rglob(f"{new}.log"))
        assert f"is being trained by SLURM job {orphan}, pid" in logs, logs[-5000:]

        # the orphan trains on alone: still running, still holding the lease, its checkpoint replaced
        # again at its next epoch end (its log is not watched: the rerun's job may have taken its path)
        def checkpoint_time():
            return max((p.stat().st_mtime_ns for p in (ws / "results-lease" / "packs").glob("*/state.npz")), default=0)

        before = checkpoint_time()
        assert squeue_jobs_in(ws, env) == [orphan]
        (lease,) = (ws / "results-lease" / "packs").glob("*.lease")
        assert json.loads(lease.read_text())["slurm_job_id"] == orphan
        while checkpoint_time() <= before:
            assert time.monotonic() - t0 < STUDY_TIMEOUT, "the orphan stopped training"
            time.sleep(0.2)
    finally:
        if main.poll() is None:
            main.kill()
        if orphan:
            subprocess.run(["scancel", orphan], env=env, timeout=30)
