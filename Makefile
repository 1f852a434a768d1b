# One venv, made on first use; every target installs what it needs itself.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test lint lock bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## Run the proxy on 127.0.0.1:8080 with the public index upstream (flags: make serve ARGS="--port 9000")
serve: $(STAMP)
	$(BIN)/pypi-proxy serve $(ARGS)

## Format check, lint, types, then the whole test suite (the same command CI runs)
test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile

## Rewrite requirements.lock (what the image installs: exact versions and hashes) from
## pyproject.toml's dependencies, plus setuptools to build the project. Run after changing them.
lock: $(STAMP)
	printf 'setuptools>=69\n' | $(BIN)/uv pip compile pyproject.toml - --universal \
	  --python-version 3.12 --generate-hashes --custom-compile-command 'make lock' \
	  --quiet -o requirements.lock

## The benchmark (bench/README.md): installs through this proxy vs direct, proxpi and devpi, hot
## figures vs proxpi and nginx, prefetch vs bandersnatch, on a look-alike upstream; prints one
## table of ratios and writes a PNG chart. A run of a few minutes: make bench ARGS=--quick
bench: $(STAMP)
	$(BIN)/python -m bench.bench $(ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache
