# Two newcomer commands: `make run` and `make test`. Both set themselves up from a fresh clone.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
STACK   ?= demo

.PHONY: run test bench lint typecheck render plan check clean

$(STAMP): requirements.txt requirements-dev.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

HOST    ?= 127.0.0.1
PORT    ?= 8000

run: $(STAMP)  ## the portal on embedded defaults (SQLite, a local git repo of stacks under var/), demo data
	$(BIN)/python -m portal --demo --host $(HOST) --port $(PORT)

render: $(STAMP)  ## render the demo stack offline into out/ and print its plan
	$(BIN)/python -m fleet render --stack $(STACK) --out out/$(STACK)
	$(BIN)/python -m fleet plan --stack $(STACK)

test: $(STAMP)  ## lint, types, then the whole suite
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -n 3 -q

bench: $(STAMP)  ## BENCH <name> <value> <unit> lines
	$(BIN)/python -m benchmarks

plan check: $(STAMP)
	$(BIN)/python -m fleet $@ --stack $(STACK)

clean:
	rm -rf $(VENV) out var .pytest_cache .mypy_cache .ruff_cache
