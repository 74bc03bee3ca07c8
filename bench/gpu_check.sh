#!/usr/bin/env bash
# The GPU check, for an offline CUDA machine that already has torch and triton (see bench/gpu_check.py):
#
#   bash bench/gpu_check.sh DIR        # results in DIR (or set $OUT); at most 8 files, summary.json first
#   bash bench/gpu_check.sh --plan     # the stages and their time bounds (under 10 minutes in all)
#
# $PYTHON picks the interpreter whose torch and triton are used (default: python3).
exec "${PYTHON:-python3}" "$(dirname "$0")/gpu_check.py" "$@"
