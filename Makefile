# The two commands of README.md: `make demo` and `make test`.
# Each creates .venv when missing: torch==2.13.0 first (pinned: an unpinned torch
# pulls gigabytes of CUDA wheels), then ebmppl with all extras.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ebmppl-installed

.PHONY: demo demo-sampler test test-slow bench bench-standard install docs tutorials test-arviz1

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
	$(PY) -m pytest -n 2 --dist worksteal -q

test-slow: $(STAMP)
	$(PY) -m pytest -n 2 -q -m slow

bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) benchmarks/flow_mcmc.py

# the field's standard targets (GMM-40, Many-Well-32, funnel, 50-D Student-t mixture) against the peers
bench-standard: $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) benchmarks/standard_targets.py --compile --figure standard_targets.png

# the Sphinx site (docs/), offline, warnings as errors; HTML in docs/_build/html
docs: $(STAMP)
	rm -rf docs/_build
	$(PY) -m sphinx -W --keep-going -n -b html docs docs/_build/html

# re-execute every tutorial at full budget, storing the outputs in the notebooks
tutorials: $(STAMP)
	$(PY) tutorials/run.py

# the ArviZ 1.x leg: a Python 3.12 venv with arviz>=1.3, running the to_arviz,
# diagnostics and kernel-conformance tests of both backends and one tutorial
PY312 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12) $(shell command -v python3.12 2>/dev/null))
ARVIZ1 := .venv-arviz1
ARVIZ1_STAMP := $(ARVIZ1)/.ebmppl-installed
ARVIZ1_TESTS := tests/test_common/test_to_arviz.py tests/test_common/test_notebook_results.py ebmppl/diagnostics.py \
	tests/test_numpyro/test_conformance.py tests/test_pyro/test_conformance.py \
	"tests/test_tutorials.py::test_tutorial_runs_in_smoke_mode[02_energy_prior_pyro]"

$(ARVIZ1_STAMP): pyproject.toml
	@test -n "$(PY312)" || { echo "make test-arviz1 needs Python 3.12 (python3.12 on PATH or PY312=...)"; exit 1; }
	test -x $(ARVIZ1)/bin/python || $(PY312) -m venv $(ARVIZ1)
	$(ARVIZ1)/bin/python -m pip install --quiet --upgrade pip
	$(ARVIZ1)/bin/python -m pip install --quiet torch==2.13.0
	$(ARVIZ1)/bin/python -m pip install --quiet -e ".[all,dev]" "arviz>=1.3"
	touch $(ARVIZ1_STAMP)

test-arviz1: $(ARVIZ1_STAMP)
	$(ARVIZ1)/bin/python -c "import arviz, sys; assert tuple(map(int, arviz.__version__.split('.')[:2])) >= (1, 3), arviz.__version__; print('arviz', arviz.__version__, 'python', sys.version.split()[0])"
	$(ARVIZ1)/bin/python -m pytest -n 2 -q $(ARVIZ1_TESTS)
