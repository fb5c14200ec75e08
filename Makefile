PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo up test lint bench bench-draw bench-issue bench-reconcile bench-intake load test-cluster clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,load,browser]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/stimulus demo

up: $(STAMP)
	$(BIN)/stimulus up

test: $(STAMP)
	$(BIN)/python -m pytest -q

# Long (minutes): API nodes behind haproxy, PgBouncer, workers, a campaign under process kills.
REGISTRANTS ?= 20000
test-cluster: $(STAMP)
	$(BIN)/python -m tests.cluster --registrants $(REGISTRANTS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy kernel stimulus lottery wallet_adapter merchants sandbox

bench: $(STAMP)
	$(BIN)/python -m bench.endpoints

bench-draw: $(STAMP)
	$(BIN)/python -m bench.draw

bench-issue: $(STAMP)
	$(BIN)/python -m bench.issue

bench-reconcile: $(STAMP)
	$(BIN)/python -m bench.reconcile

# The merchant notice is one of make bench's four endpoints now.
bench-intake: bench

SCENARIO ?= registration-surge
load: $(STAMP)
	$(BIN)/stimulus load $(SCENARIO)

clean:
	rm -rf $(VENV) .stimulus build *.egg-info
