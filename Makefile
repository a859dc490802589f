# Everything a fresh machine needs: `make test` and `make demo` create .venv and install on their own,
# from requirements/lock.txt (the exact versions CI tests).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
LOCK   := requirements/lock.txt

.PHONY: test test-latest demo bench gpu-check install lock clean

install: $(STAMP)

# Re-runs only when the lock or pyproject.toml changes, so a second `make test` does not reinstall.
$(STAMP): $(LOCK) pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/skipseg demo

# Writes bench/results/latest.{json,md} (~15-25 min on 2 cores); `make bench BENCH_ARGS=--quick` checks the code in ~2 min.
bench: $(STAMP)
	$(PY) -m bench.run $(BENCH_ARGS)

# Every path only a CUDA machine takes, in one run of at most 5 minutes: writes gpu_check.json.
gpu-check: $(STAMP)
	$(PY) -m bench.gpu_check --out gpu_check.json

# The newest releases pyproject.toml allows (not the lock), in a separate venv; not part of CI.
# PIP_CONSTRAINT=/dev/null replaces any machine-wide pip constraint file that would cap torch.
LATEST := .venv-latest
test-latest:
	test -x $(LATEST)/bin/python || $(PYTHON) -m venv $(LATEST)
	PIP_CONSTRAINT=/dev/null $(LATEST)/bin/python -m pip install --quiet --upgrade pip
	PIP_CONSTRAINT=/dev/null $(LATEST)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e '.[dev]'
	$(LATEST)/bin/python -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
	$(LATEST)/bin/python -m pytest -q

# Refresh the lock after changing dependencies in pyproject.toml (pip-tools, from the dev extra).
lock: $(STAMP)
	$(VENV)/bin/pip-compile --quiet --extra dev --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links \
		--constraint requirements/constraints.txt --output-file $(LOCK) pyproject.toml

clean:
	rm -rf $(VENV) $(LATEST) *.egg-info .pytest_cache
