# The README's two commands: `make demo` (the main job on the built-in lab) and `make test`.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
RIGS ?= 6
PROFILE ?= mixed
# Lab-backed tests mostly wait (boots, reboots, SSH): two workers fit two cores.
PYTEST_WORKERS ?= 2
PYTEST_ARGS ?=

.PHONY: demo test lab-deps venv lint check lab-down ee-context

lab-deps:
	@scripts/host-deps.sh

$(BIN)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

demo: lab-deps venv
	@mkdir -p reports
	$(BIN)/rigpivot lab up --rigs $(RIGS) --profile $(PROFILE)
	$(BIN)/rigpivot preflight --inventory inventories/lab/farm.ini \
		--json reports/preflight.json --html reports/preflight.html
	$(BIN)/rigpivot convert --inventory inventories/lab/farm.ini --yes --journal runs

lint: venv
	$(BIN)/ruff check toolkit plugins tests benchmarks
	$(BIN)/ruff format --check toolkit plugins tests benchmarks
	$(BIN)/mypy
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/ansible-lint -q

test: lab-deps venv lint
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

lab-down: venv
	$(BIN)/rigpivot lab down

# The execution environment's build context (execution-environment.yml): the collection's
# artifact and the Python package's wheel, then `ansible-builder create` into build/ee
# (`podman build build/ee` makes the image).
ee-context: venv
	$(BIN)/ansible-galaxy collection build --force --output-path build/collection .
	$(BIN)/pip wheel --quiet --no-deps -w build/wheel .
	$(BIN)/ansible-builder create -f execution-environment.yml -c build/ee
