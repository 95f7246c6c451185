# Set-up is idempotent: `make test` calls `make setup` (the test extra) first; `make demo` installs only trainlab.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
CHROMIUM := /usr/bin/chromium

.PHONY: setup data browser demo test docs bench clean

setup: $(VENV)/.installed data browser

# torch is pinned and installed first: an unpinned torch pulls a multi-GB CUDA build. .base is what
# `make demo` needs (trainlab itself); .installed adds the test extra (TensorFlow among it, ~1 min).
$(VENV)/.base: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed: $(VENV)/.base
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# Debian's dataset-fashion-mnist puts the four IDX .gz files in /usr/share/datasets/fashion-mnist.
data:
	@if [ ! -f $(FMNIST) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get install -y -q dataset-fashion-mnist || (apt-get update -q && apt-get install -y -q dataset-fashion-mnist)); fi
	@test -f $(FMNIST) || echo "note: Fashion-MNIST not in /usr/share/datasets; trainlab will look in \$$TRAINLAB_DATA, ~/.cache/trainlab, or download it."

# Debian's chromium: tests/test_report.py renders report.html in it, headless.
browser:
	@if [ ! -x $(CHROMIUM) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get install -y -q chromium || (apt-get update -q && apt-get install -y -q chromium)); fi
	@test -x $(CHROMIUM) || echo "note: $(CHROMIUM) missing (run make setup as root to install Debian's chromium); the report's browser test will fail."

demo: $(VENV)/.base data
	$(BIN)/trainlab train -c examples/seed_mlp.yaml

# Two pytest processes, each taking whole files (--dist loadfile: a module's fixtures train once):
# on CI's 2 cores the suite took 572 s against 804 s on one process (2026-12-02), since a test
# spends much of its time waiting on the CLI and torchrun processes it starts. TEST_WORKERS=0 runs
# it on one process. Each process, and what it starts, computes on one thread (TEST_THREADS): two
# processes of two threads each on 2 cores wait on each other's threads. Measured one run after
# the other on a 2-core AMD EPYC (2026-12-02): 340 s and 374 s with torch's default threads, 229 s
# and 225 s with one. TEST_THREADS=2 runs the numerics on two threads.
TEST_WORKERS ?= 2
TEST_THREADS ?= 1

test: setup
	OMP_NUM_THREADS=$(TEST_THREADS) $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# The reference site (docs/, mkdocs.yml) into site/, warnings as errors; mkdocs comes with the test extra.
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -d site

bench: setup
	$(BIN)/pip install -q -e '.[bench]'
	KERAS_BACKEND=$${KERAS_BACKEND:-torch} $(BIN)/python bench/run.py
	$(BIN)/python bench/search_bench.py --repeats 3,1 --bound

clean:
	rm -rf $(VENV) runs site .pytest_cache
