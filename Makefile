# Two newcomer commands: `make run` and `make test`. Both set themselves up from a fresh clone.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
STACK   ?= demo

.PHONY: run test bench soak lint typecheck render plan check clean runtime-check

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps -e .  # the programs and entry points (fleet check's policy pack)
	touch $(STAMP)

HOST    ?= 127.0.0.1
PORT    ?= 8000

run: $(STAMP)  ## the portal on embedded defaults (SQLite, a local git repo of stacks under var/), demo data
	$(BIN)/python -m portal --demo --host $(HOST) --port $(PORT)

render: $(STAMP)  ## render the demo stack offline into out/ and print its plan
	$(BIN)/python -m fleet render --stack $(STACK) --out out/$(STACK)
	$(BIN)/python -m fleet plan --stack $(STACK)

test: $(STAMP)  ## lint, types, import contracts, then the whole suite
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	PYTHONPATH=. $(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -n 3 -q --durations=25

RUNTIME_VENV ?= var/runtime-venv
runtime-check:  ## every `python -m fleet` command in a fresh venv with the runtime requirements only
	rm -rf $(RUNTIME_VENV)
	$(PY) -m venv $(RUNTIME_VENV)
	$(RUNTIME_VENV)/bin/pip install --quiet --upgrade pip
	$(RUNTIME_VENV)/bin/pip install --quiet -r requirements.txt
	$(RUNTIME_VENV)/bin/pip install --quiet --no-deps -e .
	$(RUNTIME_VENV)/bin/python -m fleet plan --stack demo
	$(RUNTIME_VENV)/bin/python -m fleet render --stack demo --out var/runtime-check
	$(RUNTIME_VENV)/bin/python -m fleet check --stack demo
	$(RUNTIME_VENV)/bin/python -m fleet diff --stack demo --against HEAD
	$(RUNTIME_VENV)/bin/python -c "import gateway.app, portal.app, simulator.app"

bench: $(STAMP)  ## BENCH <name> <value> <unit> lines
	$(BIN)/python -m benchmarks

SOAK_SECONDS ?= 600
soak: $(STAMP)  ## not in CI: mixed load on three gateways through Redis and database outages (SOAK lines)
	$(BIN)/python -m benchmarks.soak $(SOAK_SECONDS)

plan check: $(STAMP)
	$(BIN)/python -m fleet $@ --stack $(STACK)

clean:
	rm -rf $(VENV) out var .pytest_cache .mypy_cache .ruff_cache
