"""The conda environments in envs/ agree with requirements.txt, install the gradatlas package of
this checkout, and cover what the rules run.

Static and fast: it reads the YAML files, the rule files and the scripts' import statements, and the
installed packages' metadata in this environment; pip resolves the package line offline (no conda,
no network).
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import json
import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
ENVS = sorted((REPO / "envs").glob("*.yaml"))
RULE_FILES = sorted((REPO / "workflow" / "rules").glob("*.smk"))

# An env may pin a GPU build of a package whose CPU build requirements.txt pins; the version must
# be the same. Extras (tensorflow[and-cuda], jax[cuda12]) are dropped before the lookup.
GPU_BUILD_OF: dict[str, str] = {}  # a GPU build pinned under another name than the CPU one
# needed at run time without an import statement: pandas reads and writes parquet through pyarrow
RUNTIME_ONLY = {"pyarrow"}
# provided by snakemake itself: a `script:` preamble puts snakemake's own package on sys.path
PROVIDED = {"snakemake"}


def requirement_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line or line.startswith("-"):
            continue
        req = Requirement(line)
        (spec,) = req.specifier
        assert spec.operator == "==", f"requirements.txt: {line!r} is not an exact pin"
        pins[canonicalize_name(req.name)] = spec.version
    return pins


def env_file(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def pip_lines(env: dict) -> list[str]:
    return [line for dep in env.get("dependencies", []) if isinstance(dep, dict) for line in dep.get("pip", [])]


def pip_requirements(env: dict) -> list[Requirement]:
    """The pinned libraries (the lines that are not pip options, such as the package's `-e`)."""
    return [Requirement(line) for line in pip_lines(env) if not line.startswith("-")]


def test_there_are_cpu_cuda_and_analysis_envs():
    assert {p.name for p in ENVS} >= {"train-cpu.yaml", "train-cuda.yaml", "analysis.yaml"}


@pytest.mark.parametrize("path", ENVS, ids=lambda p: p.name)
def test_env_pins_match_requirements(path):
    pins = requirement_pins()
    env = env_file(path)
    reqs = pip_requirements(env)
    assert reqs, f"{path.name}: no pip section"
    for req in reqs:
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{path.name}: {req} is not an exact pin"
        name = canonicalize_name(req.name)
        pinned_as = name if name in pins else canonicalize_name(GPU_BUILD_OF.get(name, name))
        assert pinned_as in pins, f"{path.name}: {req.name} is not in requirements.txt"
        assert specs[0].version == pins[pinned_as], (
            f"{path.name}: {req.name}=={specs[0].version} but requirements.txt pins {pinned_as}=={pins[pinned_as]}"
        )
    # conda itself provides only python and pip: every library version comes from the pins above
    conda_deps = [d for d in env["dependencies"] if isinstance(d, str)]
    assert {re.split(r"[=<> ]", d)[0] for d in conda_deps} <= {"python", "pip"}, conda_deps
    python = next(d for d in conda_deps if d.startswith("python"))
    requires_python = SpecifierSet(
        re.search(r'requires-python\s*=\s*"([^"]+)"', (REPO / "pyproject.toml").read_text()).group(1)
    )
    assert python.split("=", 1)[1] + ".0" in requires_python, f"{path.name}: {python} vs {requires_python}"


def names(path: Path) -> set[str]:
    return {
        canonicalize_name(GPU_BUILD_OF.get(canonicalize_name(r.name), r.name)) for r in pip_requirements(env_file(path))
    }


def test_the_tensorflow_env_is_the_cpu_env_plus_tensorflow():
    assert names(REPO / "envs" / "train-tensorflow.yaml") == names(REPO / "envs" / "train-cpu.yaml") | {
        "tensorflow-cpu"
    }


def test_cpu_and_cuda_training_envs_pin_the_same_libraries():
    # jax[cuda12] brings its own jaxlib, of jax's version
    assert names(REPO / "envs" / "train-cuda.yaml") | {"jaxlib"} == names(REPO / "envs" / "train-cpu.yaml")
    cuda = {canonicalize_name(r.name): r for r in pip_requirements(env_file(REPO / "envs" / "train-cuda.yaml"))}
    assert "cuda12" in cuda["jax"].extras
    assert "tensorflow" not in cuda  # the engine never imports it


# --- rules -> env files --------------------------------------------------------------------------------
# named rules, and rules made in a loop (`rule:` with a `name:` f-string, e.g. train_<pack>)
RULE_RE = re.compile(r"^\s*(?:rule|checkpoint)\s*(\w*)\s*:(?:\s*\n\s+name:\s*\n?\s*f?[\"']([a-z_]+))?", re.M)
CONDA_RE = re.compile(r"^\s+conda:\s*(?:\n\s*)?(f?)([\"'])(.+?)\2", re.M)
SCRIPT_RE = re.compile(r"^\s+script:\s*(?:\n\s*)?([\"'])(.+?)\1", re.M)


def rule_blocks() -> list[tuple[Path, str, str]]:
    """(rule file, rule name, rule text) for every rule."""
    blocks = []
    for path in RULE_FILES:
        text = path.read_text()
        starts = list(RULE_RE.finditer(text))
        for i, m in enumerate(starts):
            end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
            body = text[m.end() : end]
            # the rule ends at the first statement at or left of its own indentation
            indent = len(m.group(0)) - len(m.group(0).lstrip())
            top = re.compile(rf"^(?=\s{{0,{indent}}}[^\s#])", re.M).search(body, body.find("\n") + 1)
            blocks.append((path, m.group(1) or m.group(2), body[: top.start()] if top else body))
    return blocks


def conda_envs_of(path: Path, body: str) -> list[Path]:
    m = CONDA_RE.search(body)
    if not m:
        return []
    is_f, value = m.group(1), m.group(3)
    if is_f:  # f"../../envs/train-{X}.yaml": any env file of that shape
        pattern = Path(re.sub(r"\{[^}]*\}", "*", value))
        return sorted((path.parent / pattern.parent).resolve().glob(pattern.name))
    return [(path.parent / value).resolve()]


def test_rules_found():
    names = {name for _, name, _ in rule_blocks()}
    assert {"prepare_data", "train_", "aggregate", "report"} <= names  # train_<pack>: one rule per pack


@pytest.mark.parametrize("block", rule_blocks(), ids=lambda b: b[1])
def test_every_rule_has_a_conda_env_that_exists(block):
    path, name, body = block
    assert "conda:" in body, f"rule {name} ({path.relative_to(REPO)}) has no `conda:` directive"
    envs = conda_envs_of(path, body)
    assert envs and all(p.is_file() and p.parent == REPO / "envs" for p in envs), (
        f"rule {name}: its conda env {CONDA_RE.search(body).group(3)!r} is not a file in envs/"
    )


# --- what the scripts import -> what their env provides --------------------------------------------------
def module_file(module: str) -> Path | None:
    parts = module.split(".")
    for candidate in (REPO.joinpath(*parts).with_suffix(".py"), REPO.joinpath(*parts, "__init__.py")):
        if candidate.is_file():
            return candidate
    return None


def module_level_imports(path: Path) -> set[str]:
    """Modules imported when `path` is imported or run: imports outside functions (a function's own
    import, such as the TensorFlow-only code in gradatlas.backend, runs only when it is called)."""
    found = set()

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.add(child.module)
                found.update(f"{child.module}.{alias.name}" for alias in child.names)
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def third_party_imports(script: Path) -> set[str]:
    """Top-level names of the non-stdlib modules `script` needs, following gradatlas's own modules."""
    seen, todo, external = set(), [script], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in module_level_imports(path):
            top = module.split(".")[0]
            if top == "gradatlas":
                if (f := module_file(module)) is not None:
                    todo.append(f)
                    if (pkg := module_file(top)) is not None:
                        todo.append(pkg)
            elif top not in sys.stdlib_module_names and top != "__future__":
                external.add(top)
    return external


@cache
def distribution_requires(name: str) -> frozenset[str]:
    """Canonical names of what distribution `name` installs with it (no extras), transitively."""
    out, todo = set(), [name]
    while todo:
        dist = todo.pop()
        try:
            requires = md.requires(dist) or []
        except md.PackageNotFoundError:
            continue
        for line in requires:
            req = Requirement(line)
            if req.marker and not req.marker.evaluate({"extra": ""}):
                continue
            dep = canonicalize_name(req.name)
            if dep not in out:
                out.add(dep)
                todo.append(dep)
    return frozenset(out)


def env_provides(env_path: Path) -> set[str]:
    pinned = {
        canonicalize_name(GPU_BUILD_OF.get(canonicalize_name(r.name), r.name))
        for r in pip_requirements(env_file(env_path))
    }
    provided = set(pinned)
    for name in pinned:
        provided |= distribution_requires(name)
    return provided


def distributions_of(module: str) -> set[str]:
    return {canonicalize_name(d) for d in md.packages_distributions().get(module, [])}


def scripts_by_env() -> dict[Path, set[Path]]:
    out: dict[Path, set[Path]] = {}
    for path, _, body in rule_blocks():
        script, envs = SCRIPT_RE.search(body), conda_envs_of(path, body)
        if script and envs:
            for env in envs:
                out.setdefault(env, set()).add((path.parent / script.group(2)).resolve())
    return out


@pytest.mark.parametrize("env_name", ["analysis.yaml", "train-cpu.yaml"])
def test_env_provides_what_its_rules_scripts_import(env_name):
    env = (REPO / "envs" / env_name).resolve()
    scripts = scripts_by_env().get(env, set())
    assert scripts, f"no rule runs a script in {env_name}"
    if env_name == "analysis.yaml":
        assert {s.name for s in scripts} >= {"aggregate.py", "report.py"}
    provided = env_provides(env)
    missing = {}
    for script in sorted(scripts):
        for module in sorted(third_party_imports(script) - PROVIDED):
            dists = distributions_of(module)
            assert dists, f"{script.name} imports {module}, which is not installed here: cannot map it"
            if not dists & provided:
                missing.setdefault(script.name, []).append(f"{module} ({', '.join(sorted(dists))})")
    for name in RUNTIME_ONLY:
        if canonicalize_name(name) not in provided:
            missing.setdefault("(runtime)", []).append(name)
    assert not missing, f"{env_name} lacks: {missing}"


# --- the gradatlas package itself ----------------------------------------------------------------------
# Snakemake copies an env file into its env folder (.snakemake/conda/<hash>.yaml) and conda runs pip
# from there, so a relative path would name a folder under .snakemake, not the checkout: the line
# names the checkout through a variable that pip expands and the workflow sets.
PACKAGE_LINE = "-e ${GRADATLAS_REPO}"


@pytest.mark.parametrize("path", ENVS, ids=lambda p: p.name)
def test_env_installs_the_package_from_the_checkout(path):
    options = [line for line in pip_lines(env_file(path)) if line.startswith("-")]
    assert options == [PACKAGE_LINE], f"{path.name}: pip options {options}"


def test_the_workflow_sets_gradatlas_repo_to_the_repository_root():
    common = (REPO / "workflow" / "rules" / "common.smk").read_text()
    assert re.search(r"^os\.environ\.update\(GRADATLAS_REPO=os\.path\.abspath\(workflow\.basedir\)\)$", common, re.M)
    assert (REPO / "Snakefile").is_file()  # workflow.basedir: the main Snakefile's folder, the repository root


@cache
def package_install() -> dict:
    """What pip makes of the package line where conda runs it (a folder that is not the checkout),
    with GRADATLAS_REPO as the workflow sets it: pip's install report, resolved offline."""
    import tempfile

    with tempfile.TemporaryDirectory() as env_folder:
        Path(env_folder, "requirements.txt").write_text(PACKAGE_LINE + "\n")
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--dry-run",
                "--no-deps",
                "--no-index",
                "--no-build-isolation",
                "--quiet",
                "--report",
                "-",
                "-r",
                "requirements.txt",
            ],
            cwd=env_folder,
            env=os.environ | {"GRADATLAS_REPO": str(REPO)},
            capture_output=True,
            text=True,
            check=True,
        )
    (install,) = json.loads(out.stdout)["install"]
    return install


def test_the_package_line_installs_this_checkout_editable():
    install = package_install()
    assert install["metadata"]["name"] == "gradatlas"
    assert install["download_info"] == {"url": REPO.as_uri(), "dir_info": {"editable": True}}


@pytest.mark.parametrize("path", ENVS, ids=lambda p: p.name)
def test_env_pins_every_requirement_of_the_package(path):
    """pip installs what the package requires: each is pinned in the env (at requirements.txt's version,
    test_env_pins_match_requirements), none left to pip's latest."""
    pinned = {canonicalize_name(r.name): r for r in pip_requirements(env_file(path))}
    for line in package_install()["metadata"]["requires_dist"]:
        req = Requirement(line)
        if req.marker and not req.marker.evaluate({"extra": ""}):
            continue  # an extra ([cuda], [tensorflow], [slurm])
        name = canonicalize_name(req.name)
        assert name in pinned, f"{path.name}: the package requires {req}, which it does not pin"
        (spec,) = pinned[name].specifier
        assert req.specifier.contains(spec.version), f"{path.name}: {name}=={spec.version} does not satisfy {req}"
