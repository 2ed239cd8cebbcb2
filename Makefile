# The two commands of the README: `make demo` and `make test`. Both (re)build .venv when it is missing or stale.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# One test worker more than the CPUs: the real-Slurm and real-Snakemake tests spend most of their time waiting on
# other processes, which a third worker overlaps with CPU-bound tests. Each file runs in one worker (loadfile), the
# files of long tests first (tests/conftest.py), in that order (--no-loadscope-reorder).
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) + 1 )))

.PHONY: help venv demo test bench lock clean

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-6s %s\n", $$1, $$2}'

venv:  ## create or refresh .venv from constraints.txt (cached outside the clone); install the `slurm` profile
	@bash tools/venv.sh $(VENV) && bash tools/snakemake_profile.sh $(VENV)

demo: venv  ## run the whole workflow on the embedded synthetic dataset (no download; about 10 min on 2 cores)
	$(PY) -m cassle demo

test: venv  ## run the test suite
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

bench: venv  ## run the CPU benchmarks (figures go to bench/results/)
	$(PY) bench/augment.py && $(PY) bench/loading.py && $(PY) bench/pretrain.py && $(PY) bench/startup.py \
		&& $(PY) bench/linear.py \
		&& $(PY) bench/demo.py

lock:  ## re-pin constraints.txt from a clean install of pyproject.toml's dependencies
	@bash tools/lock.sh

clean:  ## remove .venv and the demo's outputs (the shared dependency cache stays)
	rm -rf $(VENV) results/demo
