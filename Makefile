# Two commands for users: `make demo` and `make test`. Both create (or reuse) .venv and install
# what they need into it, so a fresh Linux machine with Python 3.11 needs nothing else.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.edgekit-installed
PYTEST_ARGS ?=
# `make test` runs on two workers (pytest-xdist): most of its time is single-threaded (conversion, emulation,
# child processes), so two workers on two cores finish sooner; tests/conftest.py keeps the tests that share a
# trained model in one worker and hands out the biggest groups first.
JOBS ?= 2

.PHONY: demo test test-fast test-zoo lint venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip uninstall --quiet --yes edgekit 2>/dev/null || true  # the distribution's old name
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The demo's job is the report: exit 1 (a variant failed its gate) is shown, not treated as an error.
demo: $(STAMP)
	$(VENV)/bin/edgekit pipeline --out demo-output || { rc=$$?; [ $$rc -eq 1 ] && \
		echo "make demo: some variants failed their gates; see demo-output/report.html"; [ $$rc -eq 1 ]; }

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest -n $(JOBS) --dist loadgroup --no-loadscope-reorder --durations=25 $(PYTEST_ARGS)

# The architecture zoo with its three heavy backbones (ResNet50, DenseNet121, ConvNeXtTiny) too.
test-zoo: lint
	EDGEKIT_ZOO_HEAVY=1 $(PY) -m pytest tests/test_zoo.py $(PYTEST_ARGS)

# Everything that neither trains nor converts (tests/conftest.py marks those slow).
test-fast: lint
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) demo-output .pytest_cache
