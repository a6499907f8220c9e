# Each target sets up its own virtualenv, so a fresh clone needs nothing but python3.
# `make demo` installs only what the demo needs (fast); `make test` adds the test, PML-parity
# (torch CPU + pytorch-metric-learning) and docs extras.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_STAMP := $(VENV)/.installed-demo
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test bench docs install clean

$(DEMO_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip -q
	$(PY) -m pip install -q -e ".[examples]"
	touch $(DEMO_STAMP)

$(TEST_STAMP): $(DEMO_STAMP)
	$(PY) -m pip install -q -e ".[test,pml,examples,docs]"
	touch $(TEST_STAMP)

install: $(TEST_STAMP)

demo: $(DEMO_STAMP)
	$(PY) examples/train_digits.py

# The suite, with line coverage of jaxmetric/ (pytest-cov): the report is printed and the run
# fails under 90%.
test: $(TEST_STAMP)
	$(PY) -m pytest -n 2 -q --durations=15 --cov=jaxmetric --cov-report=term:skip-covered --cov-fail-under=90 tests

bench: $(TEST_STAMP)
	$(PY) benchmarks/bench_losses.py

# The documentation site (Sphinx + MyST), warnings are errors; open docs/_build/html/index.html.
docs: $(TEST_STAMP)
	$(PY) -m sphinx -W --keep-going -b html -d docs/_build/doctrees docs docs/_build/html
	$(PY) -m sphinx -W --keep-going -b doctest -d docs/_build/doctrees docs docs/_build/doctest

clean:
	rm -rf $(VENV) docs/_build docs/_generated .coverage htmlcov
