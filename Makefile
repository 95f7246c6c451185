# Set-up is idempotent: `make demo` and `make test` both call `make setup` first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: setup data demo test bench clean

setup: $(VENV)/.installed data

# torch is pinned and installed first: an unpinned torch pulls a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# Debian's dataset-fashion-mnist puts the four IDX .gz files in /usr/share/datasets/fashion-mnist.
data:
	@if [ ! -f $(FMNIST) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get install -y -q dataset-fashion-mnist || (apt-get update -q && apt-get install -y -q dataset-fashion-mnist)); fi
	@test -f $(FMNIST) || echo "note: Fashion-MNIST not in /usr/share/datasets; trainlab will look in \$$TRAINLAB_DATA, ~/.cache/trainlab, or download it."

demo: setup
	$(BIN)/trainlab train -c examples/seed_mlp.yaml

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) runs .pytest_cache
