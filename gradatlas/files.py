"""Writing outputs so that a crash never leaves a file that looks complete."""

from __future__ import annotations

import json
import logging
import os
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
    atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=2, default=jsonable) + "\n"))


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


def console_handler() -> logging.Handler:
    """A log handler writing timed lines to this process's stderr as it is now (a copy of fd 2), where
    snakemake shows a job's output: it stays there after `logged` sends fd 2 to the job's log."""
    handler = logging.StreamHandler(os.fdopen(os.dup(2), "w", buffering=1))
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    return handler


@contextmanager
def logged(log_path: Path):
    """Send this process's output, C++ libraries' included, to `log_path`.

    A failure's message also goes to the original stderr, where snakemake shows it, so a user sees
    e.g. which data file is broken without opening the log.
    """
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    console = os.dup(2)
    with open(log_path, "w") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        except Exception as error:
            os.write(console, f"{type(error).__name__}: {error}\n".encode())
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
