# The two commands of the README:  `make demo`  and  `make test`.
# Both create the project's environment in .venv/ (Python 3.11+) on first use.
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
# snakemake evaluates a config file marked `__use_yte__: true` as code, even in a dry run: refuse
# such files (and anything that is not plain YAML/JSON) before snakemake reads them
CHECK = $(BIN)/python -m gradatlas.config check-file

.PHONY: install demo study test lint
install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-test.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-test.txt -e .
	touch $@

demo: install
	$(CHECK) config.yaml studies/demo.yaml $(CONFIG)
	$(BIN)/snakemake --cores all --configfile studies/demo.yaml $(CONFIG) $(DATA)
	@echo "report: $(CURDIR)/results/demo/report/index.html"

study: install
	$(CHECK) config.yaml $(CONFIG)
	$(BIN)/snakemake --cores all $(if $(CONFIG),--configfile $(CONFIG)) $(DATA)
	@echo "report: $(CURDIR)/results/report/index.html"

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/snakemake --lint
