# The two commands of README.md: `make demo` and `make test`.
# Each creates .venv when missing: torch==2.13.0 first (pinned: an unpinned torch
# pulls gigabytes of CUDA wheels), then ebmppl with all extras.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ebmppl-installed

.PHONY: demo demo-sampler test test-slow bench install docs tutorials test-arviz1

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[all,dev,docs]"
	touch $(STAMP)

# the main job: train an EBM and its flow on the built-in 4-mode set, write the report to runs/demo/
demo: $(STAMP)
	rm -rf runs/demo
	$(PY) -m ebmppl train --out runs/demo

# the FlowMCMC sampler's own demo (10-D 4-mode mixture), report in runs/sampler-demo/
demo-sampler: $(STAMP)
	$(PY) -m ebmppl.app.demo --out runs/sampler-demo

test: $(STAMP)
	$(PY) -m pytest -n 2 -q

test-slow: $(STAMP)
	$(PY) -m pytest -n 2 -q -m slow

bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) benchmarks/flow_mcmc.py

# the Sphinx site (docs/), offline, warnings as errors; HTML in docs/_build/html
docs: $(STAMP)
	rm -rf docs/_build
	$(PY) -m sphinx -W --keep-going -n -b html docs docs/_build/html

# re-execute every tutorial at full budget, storing the outputs in the notebooks
tutorials: $(STAMP)
	$(PY) tutorials/run.py
