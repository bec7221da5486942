# One-command set-up and runs. `make demo` = set up + the main job; `make test` = set up + tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.atomarch-installed

.PHONY: setup demo test test-slow bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# The main job on the shipped default checkpoint: test-split MAE + predictions for a few molecules.
demo: setup
	$(BIN)/atomarch evaluate --ckpt checkpoints/qm9-property --split test --out runs/demo/eval_test.json
	$(BIN)/atomarch predict --ckpt checkpoints/qm9-property "c1ccccc1" "CC(=O)O" "N#CC=O"

test: setup
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

bench: setup
	$(BIN)/python benchmarks/encoder_throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache
