# Two entry points: `make demo` (install, start the embedded stack, serve the dashboards) and
# `make test` (install, lint, type-check, run every test against the real embedded stack).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=

.PHONY: install chromium lint typecheck test demo up down clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU build of torch first: anything later that asks for torch is then satisfied.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(STAMP)

# The request-validating mock of the connector conformance tests (@stoplight/prism-cli).
node_modules/.package-lock.json: package-lock.json
	npm ci --no-audit --no-fund --loglevel=error

# Browser tests drive Debian's chromium (never a browser download of Playwright's own).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends chromium; }

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

test: install node_modules/.package-lock.json chromium lint typecheck
	$(BIN)/python -m pytest $(PYTEST_ARGS)

up: install
	$(BIN)/dictamesh up

down:
	@[ -x $(BIN)/dictamesh ] && $(BIN)/dictamesh down || true

demo: install
	$(BIN)/dictamesh up
	$(BIN)/dictamesh migrate up
	$(BIN)/dictamesh connectors demo
	$(BIN)/dictamesh billing demo
	$(BIN)/dictamesh serve --demo

clean: down
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
