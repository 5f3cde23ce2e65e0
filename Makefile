# The two commands: `make run` and `make test`. Everything else is a helper of theirs.
PYTHON ?= python3.11
VENV := .venv
VENV_PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: run test lint bench quality-bench browser

# Re-install whenever the pinned dependencies change.
$(INSTALLED): pyproject.toml constraints.txt
	test -x $(VENV_PY) || $(PYTHON) -m venv $(VENV)
	$(VENV_PY) -m pip install --quiet --upgrade "pip==26.3"
	$(VENV_PY) -m pip install --quiet -c constraints.txt -e ".[test,bench]"
	touch $(INSTALLED)

# Local use: a demo model is trained once if the default model path has none, a JWT secret is generated and
# kept in DATA_DIR, and the embedded database starts unless MONGODB_URL is set.
run: $(INSTALLED)
	cd backend && ../$(VENV_PY) -m app.demo_model
	cd backend && ../$(VENV_PY) -m app.serve --local

test: $(INSTALLED) browser
	$(VENV_PY) -m ruff check backend benchmarks
	$(VENV_PY) -m pytest

# The web page's tests drive Debian's Chromium through Playwright, which never downloads a browser here.
browser:
	test -x /usr/bin/chromium || ($(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)

lint: $(INSTALLED)
	$(VENV_PY) -m ruff check backend benchmarks
	$(VENV_PY) -m mypy backend/app

# Speed benchmarks in one run (about 20 minutes here): one table in benchmarks/results/bench.md, a chart in bench.png.
bench: $(INSTALLED)
	$(VENV_PY) benchmarks/bench.py

quality-bench: $(INSTALLED)
	$(VENV_PY) benchmarks/quality.py --output benchmarks/results/quality.md
