# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
SNS    := $(VENV)/bin/sns
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test test-slow bench-throughput bench-fashion fashion-mnist clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# extra arguments for the demo, e.g. `make demo DEMO_ARGS=precision=fp32` (what a CPU without bf16 hardware runs)
DEMO_ARGS ?=

demo: $(STAMP)
	$(SNS) demo $(DEMO_ARGS)

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest

test-slow: $(STAMP)
	$(PY) -m pytest -m slow

# Benchmarks (bench/, on the library's public API); their pages are in docs/results/.
bench-throughput: $(STAMP)
	$(SNS) bench throughput

bench-fashion: $(STAMP)
	test -d /usr/share/datasets/fashion-mnist || $(MAKE) fashion-mnist
	$(SNS) bench fashion --quick

fashion-mnist:
	apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist

clean:
	rm -rf runs .pytest_cache
