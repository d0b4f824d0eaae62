# The two commands of the README:  `make demo`  and  `make test`.
# Both create the project's environment in .venv/ (Python 3.11+) on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# MNIST=<folder with the four IDX files> uses a local copy instead of downloading it once
MNIST ?=
comma := ,
DATA := $(if $(MNIST),--config 'data={source: idx$(comma) path: $(abspath $(MNIST))}')

.PHONY: install demo study test lint
install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-test.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-test.txt -e .
	touch $@

demo: install
	$(BIN)/snakemake --cores all --configfile studies/demo.yaml $(DATA)
	@echo "report: $(CURDIR)/results/demo/report/index.html"

study: install
	$(BIN)/snakemake --cores all $(DATA)
	@echo "report: $(CURDIR)/results/report/index.html"

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/snakemake --lint
