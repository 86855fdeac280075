# Set-up is part of every target: a fresh machine needs only `make demo` or `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.ticlip-installed
DATA   ?= data/emoji

.PHONY: setup demo test test-fast bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/install-system-deps.sh
	./scripts/install-system-deps.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# Builds the emoji stream and prints its table, then runs every method on it (ticlip demo).
demo: setup
	$(VENV)/bin/ticlip data build emoji --out $(DATA) --quiet
	$(VENV)/bin/ticlip data info $(DATA)
	$(VENV)/bin/ticlip demo --set stream.path=$(DATA)

# The full tier (every test, slow ones included): what CI runs.
test: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q --full

# The default tier: every test not marked slow (under 3 minutes on 2 cores).
test-fast: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/bench_build.py
	$(PY) benchmarks/bench_trainer.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_demo.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_eval.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
