# Two commands on a fresh machine: `make demo` and `make test`. Both create/reuse .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Compile the CUDA half of the extension when a toolkit is present (no GPU needed to build).
CUDA_HOME ?= $(if $(wildcard /usr/local/cuda/bin/nvcc),/usr/local/cuda,)
export CUDA_HOME
export TORCH_CUDA_ARCH_LIST ?= 8.0;9.0
export MAX_JOBS ?= 2

DEMO_OUT ?= runs/demo
DEMO_MINUTES ?= 15

.PHONY: install demo test bench bench-quick gpu-check clean

install: $(STAMP)

$(STAMP): pyproject.toml setup.py constraints.txt $(wildcard csrc/*)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt torch torchvision setuptools wheel cython
	$(BIN)/python -m pip install -q -c constraints.txt --no-build-isolation -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py --out $(DEMO_OUT) --minutes $(DEMO_MINUTES)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q --durations=12

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run_all

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks.run_all --quick

# On a GPU machine (no venv there: its python3 holds torch); results: one tar under $(OUT).
gpu-check:
	bash scripts/gpu_check.sh

clean:
	rm -rf build *.egg-info yolact_lite/*.so runs
