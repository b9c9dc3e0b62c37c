# Entry points of the harness. `make help` lists them.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# Where scripts/setup.sh looks first for a prebuilt mmcv wheel (see README, "Set-up").
export HARNESS_WHEELHOUSE ?= $(if $(wildcard ../shared/wheels),$(abspath ../shared/wheels),)
PYTEST_ARGS ?=

EXPERIMENT ?= experiments/synthetic.yaml
# Extra flags for `harness benchmark` (make benchmark) and `harness doctor` (make doctor), e.g.
# ARGS="--cluster mysite --account myproj" to use a site's profile without editing the spec.
ARGS ?=

.PHONY: help setup test bench-losses benchmark tables

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/'

setup: $(VENV)/.harness-setup  ## create .venv and install the pinned stack (idempotent)

$(VENV)/.harness-setup: requirements.txt scripts/setup.sh pyproject.toml
	bash scripts/setup.sh

test: setup  ## run the whole test suite
	$(PY) -m pytest $(PYTEST_ARGS)

benchmark: setup  ## run EXPERIMENT (default: the embedded synthetic grid) and print its tables; ARGS="--cluster NAME ..." adds flags
	$(PY) -m harness benchmark $(EXPERIMENT) $(ARGS)

tables: setup  ## rebuild EXPERIMENT's tables and plots from whatever has finished
	$(PY) -m harness benchmark $(EXPERIMENT) --tables-only

bench-losses: setup  ## time the losses; writes results/bench/losses.md and .csv
	$(PY) -m harness bench losses --out results/bench/losses

# The local SLURM test cluster (slurm/, docs/slurm.md). `eval "$$(bash slurm/up.sh)"` also sets SLURM_CONF.
.PHONY: slurm-up slurm-down
slurm-up:  ## start the single-node SLURM test cluster on loopback (installs it if missing)
	@bash slurm/up.sh

slurm-down:  ## stop the SLURM test cluster (state kept, so the next slurm-up is a warm start)
	@bash slurm/down.sh

# Tables and plots (docs/tables.md).
.PHONY: bench-tables
bench-tables: setup  ## time all tables for 10 000 synthetic result rows; writes results/bench/tables.md
	$(PY) -m harness.bench.tables --out results/bench/tables.md

# The rehearsal of the paper grid on this CPU (harness run SPEC --rehearse; docs/cluster.md). Target: the 35
# cells of coco_1x in <= 20 min on 2 cores.
REHEARSE ?= experiments/coco_1x.yaml
.PHONY: bench-rehearse
bench-rehearse: setup  ## rehearse REHEARSE (default coco_1x) on CPU; copies its report to results/bench/rehearse.md
	$(PY) -m harness run $(REHEARSE) --rehearse; status=$$?; \
	name=$$($(PY) -c "import sys; from harness.experiments.spec import load_spec; print(load_spec(sys.argv[1]).name)" $(REHEARSE)); \
	mkdir -p results/bench && cp results/$$name-rehearsal/rehearse.md results/bench/rehearse.md && exit $$status

.PHONY: bench-phases
bench-phases: setup  ## where a grid run's time goes, part by part (tiny, CPU); writes results/bench/phases.md
	LD_PRELOAD="$$($(PY) -c 'from harness.run.allocator import library; print(library() or "")')$${LD_PRELOAD:+:$$LD_PRELOAD}" \
	  $(PY) -m harness bench-phases --out results/bench/phases

.PHONY: bench-steps
bench-steps: setup  ## median training-step time per detector x loss cell (tiny, CPU); writes results/bench/steps.md
	$(PY) -m harness bench-steps --out results/bench/steps

# GPU nodes (README, "On a cluster").
.PHONY: doctor gpu-wheels gpu-check
doctor:  ## preflight of this node (torch + CUDA vs driver, GPUs, NCCL, mmcv/mmdet, sinfo); with EXPERIMENT=SPEC also its data, weights, SLURM (ARGS="--cluster NAME")
	@test -x $(PY) || { echo "no $(VENV): run make setup first" >&2; exit 1; }
	$(PY) -m harness doctor $(if $(filter-out file,$(origin EXPERIMENT)),$(EXPERIMENT)) $(ARGS)

gpu-wheels:  ## fetch the wheels the GPU check needs into wheelhouse/gpu (CPython 3.12; see scripts/gpu-wheels.sh)
	bash scripts/gpu-wheels.sh

gpu-check:  ## the prepared GPU check: 35 cells on CUDA + baseline vs RS step times; writes results/bench/gpu.md
	bash scripts/gpu-check.sh $(GPU_CHECK_ARGS)
