# Two entry points for a fresh machine: `make quickstart` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install quickstart quickstart-tokenizer test test-all bench clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,atari]'
	touch $(STAMP)

install: $(STAMP)

# The whole pipeline on a small generated CoinRun set, <= 30 minutes on 2 CPU cores.
quickstart: $(STAMP)
	$(PY) experiments/coinrun_pipeline.py --budget=quick

# The tokenizer alone on the built-in procedural video (~10 minutes, > 30 dB).
quickstart-tokenizer: $(STAMP)
	$(VENV)/bin/genie-jax train --config=experiments/configs/tokenizer.py:size=tiny --workdir=runs/quickstart

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m ""

bench: $(STAMP)
	$(PY) experiments/bench.py --out=bench_results/bench.json

clean:
	rm -rf $(VENV) runs
