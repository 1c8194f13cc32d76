#!/usr/bin/env bash
# Multi-GPU evaluation on one machine (published command):
#   ./tools/dist_test.sh CONFIG CHECKPOINT GPUS --eval * [--eval-options dump=True dump_dir=DIR]
# torchrun replaces torch.distributed.launch. Without CUDA the GPUS processes run over gloo.
# `sh script.sh` (the published command form) is dash on Debian/Ubuntu: re-run under bash.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -euo pipefail
if [ $# -lt 3 ]; then echo "usage: $0 CONFIG CHECKPOINT GPUS [test.py options]" >&2; exit 2; fi
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
shift 3
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
PYTHONPATH="$ROOT:$ROOT/detection${PYTHONPATH:+:$PYTHONPATH}" \
torchrun --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --master_port="${PORT:-29500}" --nproc_per_node="$GPUS" \
    "$HERE/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "$@"
