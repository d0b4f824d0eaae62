"""Writing outputs so that a crash never leaves a file that looks complete."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np


def atomic_write(path: Path, write) -> None:
    """`write(tmp_path)` then rename over `path`: readers never see a half-written file."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    write(tmp)
    os.replace(tmp, path)


def write_json(path: Path, obj) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=2, default=_jsonable) + "\n"))


def jsonable(value):
    """The one JSON sanitizer (json.dumps' `default`): numpy scalars and arrays, pandas tables and
    series, paths; anything else is a TypeError naming its type."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "to_dict") and type(value).__module__.startswith("pandas"):
        return value.to_dict("records") if hasattr(value, "columns") else value.to_dict()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


_jsonable = jsonable


def git_commit(where: Path | None = None) -> str:
    """The one git-commit lookup: the full commit of the checkout holding `where` (default: this
    package), with "-dirty" when tracked files changed; "unknown" outside a checkout or without git."""
    where = Path(where) if where else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        )
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()  # fmt: skip
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
