# `make demo` and `make test` work on a fresh machine with only Python 3.10-3.12:
# each creates .venv and installs wild3d with its test extras when missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint format venv clean

venv: $(STAMP)

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m wild3d_tf.demo --output_dir demo_output

# The linter runs first: style and unused names fail the build like a failing test.
# --dist loadgroup: tests marked with one xdist_group share a worker (and their module fixtures).
test: lint
	$(PY) -m pytest -n 2 --dist loadgroup --durations=15 tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Rewrites the tree in the project's style (2-space indentation, 100 columns; pyproject.toml).
format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) demo_output .pytest_cache
