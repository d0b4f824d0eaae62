# The README's commands: `make demo`, `make report`, `make study` and `make test`.
# All create the project's environment in .venv/ (Python 3.11+) on first use.
# MNIST ships with the project (resources/mnist/, the default data.source: bundled): no download.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# MNIST=<folder with the four IDX files> uses that copy instead of the shipped one
MNIST ?=
# CONFIG=<file> overlays a study file (checked first: no YTE templates, plain YAML or JSON only)
CONFIG ?=
comma := ,
DATA := $(if $(MNIST),--config 'data={source: idx$(comma) path: $(abspath $(MNIST))}')
# The jobs of `make demo` and `make study` run on this machine: without an NVIDIA GPU here, a
# training asks for none
LOCAL := $(if $(wildcard /dev/nvidia[0-9]*),,profiles/local/no-gpu.yaml)
# The console: progress, failures and one line per pack epoch, without the host banner and the
# job blocks (each lists every run file of its pack; the job logs are in <results>/logs/)
SNAKEMAKE = $(BIN)/snakemake --cores all --quiet rules host
DEMO = $(DATA) --configfile $(LOCAL) studies/demo.yaml $(CONFIG)
# snakemake evaluates a config file marked `__use_yte__: true` as code, even in a dry run: refuse
# such files (and anything that is not plain YAML/JSON) before snakemake reads them
CHECK = $(BIN)/python -m gradatlas.config check-file

.PHONY: install demo report study bench test lint
install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-test.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# setuptools >= 77 reads pyproject's SPDX license; tests/test_package.py builds with this one (offline)
	$(BIN)/pip install --quiet --upgrade pip setuptools==84.0.0
	$(BIN)/pip install --quiet -r requirements-test.txt -e .
	touch $@

demo: install
	$(CHECK) config.yaml studies/demo.yaml $(CONFIG)
	$(SNAKEMAKE) $(DEMO)
	@echo "report: $(CURDIR)/results/demo/report/index.html"

# Snakemake's own report (a zip) of the demo, CONFIG= as given to `make demo`. It brings the demo up
# to date first: a report of a study not run through warns once per missing file, then fails.
report: demo
	$(BIN)/snakemake --cores 1 --report results/demo/report/snakemake-report.zip $(DEMO)
	@echo "snakemake report: $(CURDIR)/results/demo/report/snakemake-report.zip"

study: install
	$(CHECK) config.yaml $(CONFIG)
	$(SNAKEMAKE) $(DATA) $(if $(LOCAL)$(CONFIG),--configfile $(LOCAL) $(CONFIG))
	@echo "report: $(CURDIR)/results/report/index.html"

# the demo and a full-size slice of the default grid end to end, against this machine's FLOP floor
# (bench/study.py; about 5 min on 2 cores; figures also to bench/latest-study.txt)
bench: install
	$(BIN)/python bench/study.py

# the lint and format checks (the workflow's, then ruff on the Python), then every test
test: install lint
	$(BIN)/python -m pytest

lint: install
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile workflow
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
