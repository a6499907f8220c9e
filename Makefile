# Each target sets up its own virtualenv, so a fresh clone needs nothing but Python >= 3.11.
# `make demo` installs only what the demo needs (fast); `make test` adds the test, PML-parity
# (torch CPU + pytorch-metric-learning) and docs extras. One virtualenv per interpreter:
# `.venv` for python3, `.venv-python3.12` for `make test PYTHON=python3.12`. make never
# installs into a folder it did not make (tools/venv.sh says what to do instead).
PYTHON ?= python3
VENV ?= $(if $(filter python3,$(PYTHON)),.venv,.venv-$(notdir $(PYTHON)))
PY := $(VENV)/bin/python
DEMO_STAMP := $(VENV)/.installed-demo
TEST_STAMP := $(VENV)/.installed-test

.PHONY: venv demo test bench docs install clean

venv:
	@sh tools/venv.sh ensure "$(PYTHON)" "$(VENV)"

$(DEMO_STAMP): pyproject.toml | venv
	$(PY) -m pip install -q -e ".[examples]"
	touch $(DEMO_STAMP)

$(TEST_STAMP): $(DEMO_STAMP) | venv
	$(PY) -m pip install -q -e ".[test,pml,examples,docs]"
	touch $(TEST_STAMP)

install: $(TEST_STAMP)

demo: $(DEMO_STAMP)
	$(PY) examples/train_digits.py

# The suite, with line coverage of jaxmetric/ (pytest-cov): the report is printed and the run
# fails under 90%. On Python >= 3.12 coverage uses sys.monitoring ("sysmon"), which measured
# the JAX-tracing-heavy tests at under half the tracer's time; older Pythons have only the tracer.
test: $(TEST_STAMP)
	COVERAGE_CORE=$$($(PY) -c 'import sys; print("sysmon" if sys.version_info >= (3, 12) else "ctrace")') \
	$(PY) -m pytest -n 2 -q --durations=15 --cov=jaxmetric --cov-report=term:skip-covered --cov-fail-under=90 tests

bench: $(TEST_STAMP)
	$(PY) benchmarks/bench_losses.py

# The documentation site (Sphinx + MyST), warnings are errors; open docs/_build/html/index.html.
docs: $(TEST_STAMP)
	$(PY) -m sphinx -W --keep-going -b html -d docs/_build/doctrees docs docs/_build/html
	$(PY) -m sphinx -W --keep-going -b doctest -d docs/_build/doctrees docs docs/_build/doctest

clean:
	@sh tools/venv.sh remove "$(VENV)"
	rm -rf docs/_build docs/_generated .coverage htmlcov

# The benchmark of docs/reality_check.md (metric losses on unseen digit classes, side by side
# with PML; multi-label losses on yeast and emotions, fetched once into $JAXMETRIC_DATA or
# ~/.cache/jaxmetric): tables and plot under out/reality_check/.
.PHONY: reality-check
reality-check: $(TEST_STAMP)
	$(PY) examples/reality_check.py
