# The README's commands. The virtual environment lives in .venv/ and is created if missing.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
# A Python >= 3.12 (jax 0.11 needs it; 3.12 is the tested one): PATH first, then pyenv's.
PYENV_PYS := $${PYENV_ROOT:-$$HOME/.pyenv}/versions
PYTHON ?= $(shell for c in python3.12 $$(ls -d $(PYENV_PYS)/3.12*/bin/python3 2>/dev/null) python3 python3.13 $$(ls -d $(PYENV_PYS)/3.1[3-9]*/bin/python3 2>/dev/null); do \
	$$c -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1 && { command -v $$c; break; }; done)

.PHONY: setup demo test test-slow bench lint clean

$(BIN)/.installed: setup.cfg pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: Python >= 3.12 not found; install it or pass PYTHON=/path/to/python3.12"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

setup: $(BIN)/.installed

# The main job: MPC with a least-squares linear model on the unstable system A=1.1, the lesson's
# table and plot, then MuZero on CartPole with 3 seeds vmapped in one program (a per-seed table of
# the steps and seconds to an evaluation return of 475, and the curves). Outputs in runs/demo/.
# 298 s on a 2-core CPU once set up (2026-12-02).
demo: setup
	$(BIN)/python -m experiments.train --agent mpc --env linear/scalar_a1.1 --logdir runs/demo
	$(BIN)/python -m experiments.lesson --plot runs/demo/lesson_compounding.png
	$(BIN)/python -m experiments.demo --logdir runs/demo/muzero_cartpole

# What CI runs: every test but the slow ones (setup.cfg's addopts: -m "not slow"), spread over
# TEST_JOBS pytest-xdist workers that take the next test as they finish one (the tests mostly
# wait on XLA compiles, so one process keeps only part of a second core busy).
# 606 s of pytest on the 2-core CPU alone, with an empty compilation cache (679 tests,
# 2026-12-08, 03:05 UTC): over DESIGN.md's 480 s at that VM's slower hours. Its speed varies
# by the hour: the suite at commit 5230c17 took 503 s at 00:45 UTC and 614 s at 02:55 UTC.
# Two fixed halves in parallel leave one core idle while the longer half ends; the work steal
# keeps both busy to the end (both workers finished within 2 s of each other).
# `make test TEST_JOBS=0` runs one process.
TEST_JOBS ?= 2
test: setup
	$(BIN)/python -m pytest $(if $(filter-out 0,$(TEST_JOBS)),-n $(TEST_JOBS) --dist worksteal)

# Only the slow learning checks (agents and world models trained for many steps).
test-slow: setup
	$(BIN)/python -m pytest -m slow

bench: setup
	$(BIN)/python -m experiments.benchmark --agent random --env gymnax/CartPole-v1 --json runs/bench_random_cartpole.json

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf runs .jax_cache
