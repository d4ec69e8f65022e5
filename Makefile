# The two commands of the README's Quickstart. Both create the environment first if it is
# missing or out of date (.venv, from requirements.lock: exact versions, ~7.7 GB, ~2.5 min).
#   make demo   the whole workflow in the miniature world, offline, on a CPU (config/demo.yaml)
#   make test   the test suite: everything but the tests marked slow (~16 min on 2 cores; CI runs it)
#   make test-all   every test, the slow ones too (~50 min: the full world controls, SLURM, the plumbing run)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.agfsync-installed
CORES ?= 2
# xformers has wheels for Linux x86_64 only; elsewhere the default attention (SDPA) needs none
EXTRAS ?= test$(if $(filter Linux-x86_64,$(shell uname -s)-$(shell uname -m)),$(comma)xformers)
comma := ,

.PHONY: demo test test-all env dryrun lint unlock clean-demo

env: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@py=$(BIN)/python; test -x $$py || py=$(PYTHON); $$py -c 'import sys; v = sys.version_info[:2]; \
	  sys.exit(0 if v >= (3, 11) else "agfsync needs Python 3.11 or newer; %s is %d.%d (make PYTHON=python3.12 ..., after rm -rf $(VENV) if it was made with it)" % (sys.executable, *v))'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e ".[$(EXTRAS)]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --configfile config/demo.yaml --rerun-incomplete
	@echo "agfsync demo: the report is results/report.html, every number in results/metrics.tsv (the experiment: docs/world.md)"

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

test-all: $(STAMP)
	$(BIN)/python -m pytest

dryrun: $(STAMP)
	$(BIN)/snakemake -n

lint: $(STAMP)
	$(BIN)/snakemake --lint

# After Snakemake was killed: removes its stale lock once nothing of that run still runs
# (no Snakemake in this directory on this host, no SLURM job of it queued): agfsync unlock
unlock: $(STAMP)
	$(BIN)/agfsync unlock

clean-demo:
	rm -rf results logs benchmarks resources/tiny_models resources/llm_cache .snakemake .agfsync
