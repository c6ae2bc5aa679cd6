# Two commands: `make demo` (the main job) and `make test`. Each bootstraps .venv by itself.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch first, in its own step: the pinned CPU build lies on this machine's disk; GPU users set their own.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test test-fast lint bench clean

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev,plots]"
	touch $@

demo: $(VENV)/.installed
	OMP_NUM_THREADS=1 $(PY) experiments/demo.py

test: $(VENV)/.installed
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --dist loadgroup

test-fast: $(VENV)/.installed
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -m "not slow"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check deap_llmmerge tests experiments benchmarks

bench: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[experiments]"
	OMP_NUM_THREADS=1 $(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .cache runs
