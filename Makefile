# Two entry points for a fresh machine: `make quickstart` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install browser quickstart quickstart-tokenizer test test-all bench clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,atari]'
	touch $(STAMP)

install: $(STAMP)

# Debian's chromium + chromedriver for the browser test of `genie-jax play` (never a downloaded
# browser build). Skipped when both are on PATH; if apt cannot install them the test is skipped.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	  || echo "make browser: could not install chromium (the browser test will be skipped)"; \
	else echo "make browser: no apt-get; install chromium and chromedriver to run the browser test"; fi

# The whole pipeline on a small generated CoinRun set: 25-30 minutes on 2 CPU cores.
quickstart: $(STAMP)
	$(PY) experiments/coinrun_pipeline.py --budget=quick

# The tokenizer alone on the built-in procedural video (~10 minutes, > 30 dB).
quickstart-tokenizer: $(STAMP)
	$(VENV)/bin/genie-jax train --config=experiments/configs/tokenizer.py:size=tiny --workdir=runs/quickstart

# Two pytest-xdist workers: most test time is XLA compiling, which runs on one core.
TEST_WORKERS ?= 2
test: $(STAMP) browser
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal

test-all: $(STAMP) browser
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal -m ""

bench: $(STAMP)
	$(PY) experiments/bench.py --out=bench_results/bench.json

clean:
	rm -rf $(VENV) runs
