"""GradAtlas installs as a real package: a wheel built from the repository holds every subpackage
and the config schema, and the workflow runs from it (a dry run and a one-run study) in a fresh
virtual environment, with no copy of the source beside it and no sys.path tricks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from conftest import REPO

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # built from a copy: setuptools leaves build/ and *.egg-info beside the sources it builds
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "gradatlas", source / "gradatlas", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return next(out.glob("gradatlas-*.whl"))


def test_the_wheel_holds_every_subpackage_and_the_schema(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = {p.parent.relative_to(REPO).as_posix() for p in (REPO / "gradatlas").rglob("__init__.py")}
    assert packages >= {"gradatlas", "gradatlas/studies"}
    for package in packages:
        assert f"{package}/__init__.py" in names, package
    assert "gradatlas/schemas/config.schema.yaml" in names
    assert all(
        f"gradatlas/{p.relative_to(REPO / 'gradatlas').as_posix()}" in names for p in (REPO / "gradatlas").rglob("*.py")
    )


def test_the_wheel_states_its_license_as_a_spdx_expression(wheel):
    """pyproject's `license = "MIT"`: the older TOML-table form makes setuptools print a deprecation
    banner at every build step of an install."""
    with zipfile.ZipFile(wheel) as z:
        metadata = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: MIT" in metadata.splitlines()


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment with the wheel installed; the libraries it depends on come from
    this test environment's site-packages (a path, not an install: no network needed), never the
    repository's source."""
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    site = next(root.glob("lib/python*/site-packages"))
    deps = next(p for p in map(Path, sys.path) if p.name == "site-packages" and (p / "keras").is_dir())
    (site / "deps.pth").write_text(f"{deps}\n")
    with zipfile.ZipFile(wheel) as z:  # what pip does for a pure-Python wheel
        z.extractall(site)
    return root


def run(venv: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        [str(venv / "bin" / "python"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_the_package_imports_from_the_wheel(venv, tmp_path):
    proc = run(
        venv,
        tmp_path,
        "-c",
        "import gradatlas.engine, gradatlas.studies, gradatlas.config as c; print(c.__file__, c.SCHEMA.is_file())",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    where, schema = proc.stdout.split()
    assert Path(where).is_relative_to(venv) and schema == "True"


def test_the_workflow_runs_from_the_installed_package(venv, tmp_path, mnist_dir):
    ws = tmp_path / "ws"
    ws.mkdir()
    for name in ("Snakefile", "config.yaml", "workflow", "scripts", "envs"):  # no gradatlas/ here
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy2)(REPO / name, ws / name)
    overlay = {
        "data": {"source": "idx", "path": str(mnist_dir), "validation_size": 500, "train_subset": 2000},
        "model": {"depth": 2, "width": 16},
        "train": {"epochs": 1},
        "diagnostics": {"probe_size": 100, "early_steps": [1]},
        "grid": {"initializer": ["he_normal"], "activation": ["relu"], "optimizer": ["adam"], "regularizer": ["none"]},
        "seeds": [0],
    }
    (ws / "one.yaml").write_text(yaml.safe_dump(overlay))
    dry = run(venv, ws, "-m", "snakemake", "-n", "--cores", "1", "--configfile", "one.yaml")
    assert dry.returncode == 0, dry.stdout[-2000:] + dry.stderr[-3000:]
    real = run(venv, ws, "-m", "snakemake", "--cores", "1", "--configfile", "one.yaml")
    assert real.returncode == 0, real.stdout[-2000:] + real.stderr[-3000:]
    assert list((ws / "results" / "runs").rglob("run.json")) and (ws / "results" / "report" / "index.html").is_file()
