"""Where a result came from: library versions, backend, device, host, git commit, job ids."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import socket
import subprocess
from pathlib import Path

from gradatlas import backend

PACKAGES = ("keras", "tensorflow", "tensorflow-cpu", "jax", "jaxlib", "numpy", "pandas")
JOB_VARIABLES = ("SLURM_JOB_ID", "SLURM_STEP_GPUS", "CUDA_VISIBLE_DEVICES")
DETERMINISM_VARIABLES = ("PYTHONHASHSEED", "XLA_FLAGS", "JAX_ENABLE_X64", "JAX_DEFAULT_MATMUL_PRECISION")


def git_commit(where: Path = Path(__file__).resolve().parent) -> str:
    """The commit of the checkout holding `where` (`-dirty` with uncommitted changes), or `unknown`."""
    try:
        out = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        )
        dirty = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict:
    found = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            found[package] = md.version(package)
        except md.PackageNotFoundError:
            pass
    return found


def of_training(threads: int) -> dict:
    """run.json's provenance block, as this process runs."""
    return {
        "versions": versions(),
        "backend": backend.name(),
        "device": backend.device(),
        "hostname": socket.gethostname(),
        "git_commit": git_commit(),
        "threads": threads,
        "environment": {k: os.environ[k] for k in JOB_VARIABLES if k in os.environ},
        "determinism": {k: os.environ.get(k) for k in DETERMINISM_VARIABLES},
    }
