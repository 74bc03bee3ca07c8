# Set-up and everyday tasks. `make demo` and `make test` work on a fresh machine.
PY     ?= python3
VENV   ?= .venv
# The CPU build of torch; on a CUDA machine use e.g. `make install TORCH=torch`.
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
# pytest workers of `make test` (0: run in this process); 2 halves the suite's time on a 2-core machine.
TEST_JOBS ?= 2
STAMP  := $(VENV)/.fastgan-installed

.PHONY: install demo test test-versions bench bench-kernels bench-onnx quality gpu-check gpu-check-plan clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)  ## create the virtual environment and install fastgan (editable)

demo: install  ## train on the built-in digits data (CPU is fine): runs/digits
	$(BIN)/fastgan train --data digits --out runs/digits

test: install  ## the whole test suite (CPU; GPU tests skip without CUDA), TEST_JOBS worker processes
	$(BIN)/python -m pytest -q -n $(TEST_JOBS) tests bench/test_kernels_bench.py --benchmark-disable

# The oldest supported pair (pyproject's lower bounds; the GPU machines' versions). PyPI has
# torch 2.11 only as the CUDA build, so this downloads a few GB once into its own venv.
OLDEST_VENV ?= .venv-oldest
# numpy < 2.4: triton 3.6's interpreter (CPU tests) calls int() on 1-element arrays, an error from numpy 2.4.
OLDEST_PINS ?= torch==2.11.0 triton==3.6.0 "numpy<2.4"
OLDEST_STAMP := $(OLDEST_VENV)/.fastgan-installed
VERSION_TESTS ?= tests/test_kernels_*.py tests/test_engine*.py

$(OLDEST_STAMP): pyproject.toml
	$(PY) -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/python -m pip install -q --upgrade pip
	$(OLDEST_VENV)/bin/python -m pip install -q $(OLDEST_PINS) -e ".[test]"
	touch $(OLDEST_STAMP)

test-versions: $(OLDEST_STAMP)  ## kernel, compile and engine tests on the oldest supported torch/triton (not in CI: large install)
	$(OLDEST_VENV)/bin/python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
	$(OLDEST_VENV)/bin/python -m pytest -q -p no:warnings $(VERSION_TESTS)

bench: install  ## training throughput vs eager PyTorch recipes (meant for a GPU)
	$(BIN)/fastgan bench

bench-kernels: install  ## fused-kernel bandwidth (GPU)
	$(BIN)/python bench/kernels_bandwidth.py

bench-onnx: install  ## ONNX Runtime vs eager PyTorch generator inference (CPU)
	$(BIN)/python bench/onnx_inference.py

quality: install  ## grid25/ring8 over 10 seeds against PacGAN's table
	$(BIN)/python bench/quality.py

# No `install` prerequisite: the check installs fastgan itself, offline, beside the machine's own torch.
gpu-check:  ## offline CUDA machine with torch + triton: tests, throughput, bandwidth in < 10 min (OUT=DIR)
	$(PY) bench/gpu_check.py $(if $(OUT),--out $(OUT))

gpu-check-plan:  ## the GPU check's stages and time bounds (no GPU needed)
	$(PY) bench/gpu_check.py --plan

clean:
	rm -rf $(VENV) $(OLDEST_VENV) build dist *.egg-info .pytest_cache
