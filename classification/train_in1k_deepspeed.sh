#!/usr/bin/env bash
# Launch classification/main_deepspeed.py (DeepSpeed ZeRO) on one machine (torchrun) or a SLURM cluster (srun).
#
#   SLURM:  [GPUS=8 GPUS_PER_NODE=8 CPUS_PER_TASK=12 SRUN_ARGS=...] train_in1k_deepspeed.sh PARTITION JOB_NAME CONFIG [args]
#   local:  [GPUS=1] train_in1k_deepspeed.sh CONFIG [args]      e.g. --zero-stage 2 --offload-optimizer cpu
#
# Same launching rules as train_in1k.sh (which this reuses); only the entry point differs.
# DeepSpeed reads RANK/WORLD_SIZE/LOCAL_RANK from torchrun or SLURM_* from srun.
# `sh script.sh` (the published command form) is dash on Debian/Ubuntu: re-run under bash.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export TRAIN_MAIN="${HERE}/main_deepspeed.py"
export TRAIN_OUTPUT="${TRAIN_OUTPUT:-work_dirs_deepspeed}"  # as published: --output work_dirs_deepspeed
export TRAIN_SCRIPT_NAME="${TRAIN_SCRIPT_NAME:-$(basename "$0")}"
exec bash "${HERE}/train_in1k.sh" "$@"
