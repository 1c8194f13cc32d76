#!/usr/bin/env bash
# Multi-GPU training on one machine (published command): dist_train.sh CONFIG GPUS [train.py options]
# torchrun replaces torch.distributed.launch; as published, --deterministic is passed. Without
# CUDA the GPUS processes train data-parallel over gloo.
# `sh script.sh` (the published command form) is dash on Debian/Ubuntu: re-run under bash.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -euo pipefail
if [ $# -lt 2 ]; then echo "usage: $0 CONFIG GPUS [train.py options]" >&2; exit 2; fi
CONFIG=$1
GPUS=$2
shift 2
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"  # the repository: autonomous_driving/, dense_common/, detection/ importable
# deterministic cuBLAS needs a fixed workspace (torch refuses deterministic matmuls without it)
export CUBLAS_WORKSPACE_CONFIG="${CUBLAS_WORKSPACE_CONFIG:-:4096:8}"
PYTHONPATH="$ROOT:$ROOT/detection${PYTHONPATH:+:$PYTHONPATH}" \
torchrun --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --master_port="${PORT:-29500}" --nproc_per_node="$GPUS" \
    "$HERE/train.py" "$CONFIG" --deterministic --launcher pytorch "$@"
