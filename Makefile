# The two commands of the README: `make demo` and `make test`. Both build .venv/ on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# bench (FastAPI/uvicorn for the PyTorch baseline) is installed for the tests that run the benchmark's machinery.
EXTRAS ?= export,serve,loadtest,metrics,bench,dev
INSTALLED := $(VENV)/.installed

export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS ?= 1

.PHONY: demo test lint bench bench-quick system-deps clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Reinstall when the dependency declarations change.
$(INSTALLED): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[$(EXTRAS)]'
	touch $@

system-deps:
	bash scripts/install-system-deps.sh

## demo: export the bundled all-MiniLM-L6-v2, serve it, call it, load-test it, report
demo: $(INSTALLED)
	$(VENV)/bin/tritonstack demo

## test: ruff, mypy and every test tier (unit, integration against real Triton and Prometheus, slow)
test: $(INSTALLED) system-deps lint
	$(VENV)/bin/pytest

lint: $(INSTALLED)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy

## bench: served stack vs. in-process ONNX Runtime vs. a plain PyTorch service
bench: $(INSTALLED)
	$(VENV)/bin/tritonstack bench

bench-quick: $(INSTALLED)
	$(VENV)/bin/tritonstack bench --quick

clean:
	rm -rf $(VENV) .tritonstack reports .pytest_cache .mypy_cache .ruff_cache
