# Each target sets up its own virtualenv, so a fresh clone needs nothing but python3.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip -q
	$(PY) -m pip install -q -e ".[test,pml,examples]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) examples/train_digits.py

test: $(STAMP)
	$(PY) -m pytest -n 2 -q --durations=15 tests

bench: $(STAMP)
	$(PY) benchmarks/bench_losses.py

clean:
	rm -rf $(VENV)
