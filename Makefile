# The two commands: `make run` and `make test`. Everything else is a helper of theirs.
PYTHON ?= python3.11
VENV := .venv
VENV_PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: run test lint bench quality-bench

# Re-install whenever the pinned dependencies change.
$(INSTALLED): pyproject.toml constraints.txt
	test -x $(VENV_PY) || $(PYTHON) -m venv $(VENV)
	$(VENV_PY) -m pip install --quiet --upgrade "pip==26.3"
	$(VENV_PY) -m pip install --quiet -c constraints.txt -e ".[test,bench]"
	touch $(INSTALLED)

test: $(INSTALLED)
	$(VENV_PY) -m ruff check backend benchmarks
	$(VENV_PY) -m pytest

lint: $(INSTALLED)
	$(VENV_PY) -m ruff check backend benchmarks
	$(VENV_PY) -m mypy backend/app

quality-bench: $(INSTALLED)
	$(VENV_PY) benchmarks/quality.py
