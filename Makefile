# The two commands of the README: `make demo` and `make test`. Both build .venv/ on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# bench (FastAPI/uvicorn for the PyTorch baseline) is installed for the tests that run the benchmark's machinery.
EXTRAS ?= export,serve,loadtest,metrics,gateway,bench,dev
# GPU=1: ONNX Runtime's CUDA build (the gpu extra) instead of the CPU wheel; the default where nvidia-smi lists a
# GPU. GPU=0 forces the CPU wheel. The two wheels install the same `onnxruntime` package, so exactly one may be
# there: each install removes both and puts back the one asked for (docs/deploy.md).
GPU ?= $(shell nvidia-smi -L 2>/dev/null | grep -q '^GPU ' && echo 1)
ifeq ($(GPU),1)
EXTRAS := $(EXTRAS),gpu
ONNXRUNTIME := onnxruntime-gpu[cuda,cudnn]
else
ONNXRUNTIME := onnxruntime
endif
INSTALLED := $(VENV)/.installed-$(if $(filter 1,$(GPU)),gpu,cpu)

export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS ?= 1

.PHONY: demo test lint bench bench-quick gpu-check docs-cli system-deps clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Reinstall when the dependency declarations change, or when GPU= changes.
$(INSTALLED): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[$(EXTRAS)]'
	@if [ "$$($(PY) -m pip list --format=freeze 2>/dev/null | grep -ciE '^onnxruntime(-gpu)?==')" != 1 ] \
		|| ! $(PY) -m pip show --quiet '$(firstword $(subst [, ,$(ONNXRUNTIME)))' 2>/dev/null; then \
		echo "keeping exactly one ONNX Runtime: $(ONNXRUNTIME)"; \
		$(PY) -m pip uninstall --quiet -y onnxruntime onnxruntime-gpu; \
		$(PY) -m pip install --quiet -c constraints.txt '$(ONNXRUNTIME)'; \
	fi
	rm -f $(VENV)/.installed $(VENV)/.installed-*
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
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/mypy

## bench: served stack vs. in-process ONNX Runtime vs. a plain PyTorch service
bench: $(INSTALLED)
	$(VENV)/bin/tritonstack bench

bench-quick: $(INSTALLED)
	$(VENV)/bin/tritonstack bench --quick

## gpu-check: on a GPU host, export MiniLM for the GPU, serve it, check fidelity, quick bench, one JSON summary;
## without a GPU: the CPU-side checks, "no GPU found", exit 0
gpu-check: $(INSTALLED)
	PYTHON=$(PY) scripts/gpu-check

## docs-cli: write docs/cli.md, the per-command reference, from the argparse parsers (a test fails when it is stale)
docs-cli: $(INSTALLED)
	$(PY) -m tritonstack._cli_reference docs/cli.md

clean:
	rm -rf $(VENV) .tritonstack reports .pytest_cache .mypy_cache .ruff_cache
