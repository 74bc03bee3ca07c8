#!/usr/bin/env bash
# Everything that needs a GPU, in one command, with every result written as files:
#
#   bash bench/gpu_check.sh            # results under $OUT when set, else bench/results/
#
# 1. the GPU-marked tests (engine: graph == eager bitwise, fp16 scaling, compile,
#    fast; kernels; ...), the slow digits-demo-per-mode test included;
# 2. the fused-kernel bandwidth benchmark (bench/kernels_bandwidth.py, if present);
# 3. the training-throughput benchmark (fastgan's modes vs plain PyTorch recipes),
#    compared against a stored baseline for this GPU when one exists.
#
# Every step runs even when an earlier one fails; the exit status is non-zero if any failed.
# PYTHON=... picks the interpreter (default: .venv/bin/python if present, else python).
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
DEST="${OUT:-bench/results}"
mkdir -p "$DEST"

if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA device visible to $PYTHON; nothing to do" >&2
    exit 2
fi
SLUG=$("$PYTHON" -c "import re, torch; print(re.sub(r'[^a-z0-9]+', '_', torch.cuda.get_device_name().lower()).strip('_'))")
echo "gpu_check: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || echo "$SLUG")"
echo "gpu_check: writing results to $DEST (device tag: $SLUG)"
failed=()

run() {  # run NAME CMD...: log to $DEST/NAME.log, remember failures
    local name=$1; shift
    echo "== $name: $*"
    "$@" 2>&1 | tee "$DEST/$name.log"
    local rc=${PIPESTATUS[0]}
    [[ $rc -eq 0 ]] || { echo "== $name failed (exit $rc)"; failed+=("$name"); }
}

run gpu_tests_${SLUG} env OUT="$DEST" "$PYTHON" -m pytest -q -m gpu tests \
    --junitxml="$DEST/gpu_tests_${SLUG}.xml"

if [[ -f bench/kernels_bandwidth.py ]]; then
    run kernels_bandwidth_${SLUG} "$PYTHON" bench/kernels_bandwidth.py --out "$DEST/kernels_bandwidth_${SLUG}.json"
else
    echo "== kernels_bandwidth: bench/kernels_bandwidth.py not present, skipped"
fi

THROUGHPUT="$DEST/throughput_${SLUG}.json"
BASELINE="bench/results/throughput_${SLUG}.json"
COMPARE=()
if [[ -f "$BASELINE" && "$(realpath "$BASELINE")" != "$(realpath -m "$THROUGHPUT")" ]]; then
    COMPARE=(--compare "$BASELINE")
fi
run throughput_${SLUG} "$PYTHON" bench/train_throughput.py --out "$THROUGHPUT" ${COMPARE[@]+"${COMPARE[@]}"}
# the variants that isolate one design choice (fused kernels, channel padding, compiled pieces)
run throughput_variants_${SLUG} "$PYTHON" bench/train_throughput.py --out "$DEST/throughput_variants_${SLUG}.json" \
    --recipes pytorch-graph-bf16,fastgan-graph,fastgan-graph-ref,fastgan-graph-pad8,fastgan-graph-compiled,fastgan-graph-autotune

if (( ${#failed[@]} )); then
    echo "gpu_check: FAILED: ${failed[*]} (logs in $DEST)"
    exit 1
fi
echo "gpu_check: all steps passed (results in $DEST)"
