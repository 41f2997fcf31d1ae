# The two commands of the README: `make demo` and `make test`. Both set up .venv first.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
CONFORMANCE := tests/data/conformance

.PHONY: setup demo test test-fast lint bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	@for sys in bert-single nlnet-single bidaf-elmo-single; do \
		$(BIN)/distilqa eval src/distilqa/data/squad2/dev-v2.0.json.gz $(CONFORMANCE)/$$sys.predictions.json \
			--na-prob-file $(CONFORMANCE)/$$sys.na_prob.json --format table || exit $$?; echo; \
	done

test: setup
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

lint: setup
	$(BIN)/ruff check src components pipelines serving tests

bench: setup
	$(BIN)/distilqa bench predict --output docs/bench-predict.json

clean:
	rm -rf $(VENV) .bench .pytest_cache
