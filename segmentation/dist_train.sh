#!/usr/bin/env bash
# Distributed training on one node: dist_train.sh CONFIG GPUS [train.py options...]
# NNODES/NODE_RANK/MASTER_ADDR/PORT select a multi-node run.
# `sh script.sh` (the published command form) is dash on Debian/Ubuntu: re-run under bash.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -euo pipefail
if [ $# -lt 2 ]; then echo "usage: $0 CONFIG GPUS [train.py options]" >&2; exit 2; fi
CONFIG=$1
GPUS=$2
shift 2
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON=${PYTHON:-python}
exec "$PYTHON" -m torch.distributed.run \
  --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" --master_addr="${MASTER_ADDR:-127.0.0.1}" \
  --nproc_per_node="$GPUS" --master_port="${PORT:-29500}" \
  "$HERE/train.py" "$CONFIG" --launcher pytorch "$@"
