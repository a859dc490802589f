# Everything a fresh machine needs: `make test` and `make demo` create .venv and install on their own.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test demo bench install clean

install: $(STAMP)

# Re-runs only when pyproject.toml changes, so a second `make test` does not reinstall.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/skipseg demo

# Writes bench/results/latest.{json,md} (~15-25 min on 2 cores); `make bench BENCH_ARGS=--quick` checks the code in ~2 min.
bench: $(STAMP)
	$(PY) -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
