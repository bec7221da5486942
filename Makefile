# One-command set-up and runs. `make demo` = set up + the main job; `make test` = set up + tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.atomarch-installed

.PHONY: setup demo eval test test-slow bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	@# put the repository root on sys.path (a .pth line), so that a script run from the folder above a
	@# clone named "atomarch" imports the package, not the clone folder as an empty namespace package
	$(BIN)/python -c "import pathlib, site; pathlib.Path(site.getsitepackages()[0], 'atomarch-repo.pth').write_text(str(pathlib.Path.cwd()) + '\n')"
	touch $(STAMP)

# The main job: the explorer app on the shipped QM9 VAE and its precomputed map
# (http://127.0.0.1:8050; Ctrl-C stops it).
demo: setup
	$(BIN)/atomarch explore

# Non-interactive check of the shipped checkpoints: property MAE + a few generated molecules.
eval: setup
	$(BIN)/atomarch evaluate --ckpt checkpoints/qm9-property --split test --out runs/demo/eval_test.json
	$(BIN)/atomarch sample --ckpt checkpoints/qm9-vae -n 10 --out runs/demo/samples.xyz
	$(BIN)/atomarch interpolate --ckpt checkpoints/qm9-vae "CC(=O)NC" "c1ccncc1" --steps 8 --out runs/demo/path.xyz

test: setup
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

bench: setup
	$(BIN)/python benchmarks/encoder_throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache
