# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-slow bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch first: the CPU wheel on disk satisfies torch>=2.4, so pip does not fetch a CUDA build.
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[dev,data]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/alternators-ppl lorenz

# Each test process uses one torch thread (tests/conftest.py), and so do the subprocesses the
# tests start (OMP_NUM_THREADS): two processes use both cores without oversubscribing them.
# `make test` is the suite without the tests marked slow (minutes each: the default Lorenz job,
# torchrun, 100,000-step rollouts); `make test-slow` runs those; CI runs both. worksteal: an
# idle worker takes queued tests from the busy one, so a run of long tests does not end on one
# core (2 cores, idle: 428 s; the last run with the default scheduling took 638 s).
test: $(VENV)/.installed-dev
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --dist worksteal -m "not slow"

test-slow: $(VENV)/.installed-dev
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --dist worksteal -m slow

bench: $(VENV)/.installed-dev
	$(BIN)/python -m benchmarks.run

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build dist *.egg-info
