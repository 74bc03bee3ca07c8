# Set-up and everyday tasks. `make demo` and `make test` work on a fresh machine.
PY     ?= python3
VENV   ?= .venv
# The CPU build of torch; on a CUDA machine use e.g. `make install TORCH=torch`.
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.fastgan-installed

.PHONY: install demo test bench bench-kernels bench-onnx quality gpu-check gpu-check-plan clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)  ## create the virtual environment and install fastgan (editable)

demo: install  ## train on the built-in digits data (CPU is fine): runs/digits
	$(BIN)/fastgan train --data digits --out runs/digits

test: install  ## the whole test suite (CPU; GPU tests skip without CUDA)
	$(BIN)/python -m pytest -q tests bench/test_kernels_bench.py --benchmark-disable

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
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
