# Two commands for users: `make demo` and `make test`. Both create (or reuse) .venv and install
# what they need into it, so a fresh Linux machine with Python 3.11 needs nothing else.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.edgekit-installed
PYTEST_ARGS ?=

.PHONY: demo test test-fast venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/edgekit pipeline --out demo-output

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# Everything except the slow real-data, conversion and emulation cases.
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) demo-output .pytest_cache
