#!/usr/bin/env bash
# Launch classification/main.py on one machine (torchrun) or a SLURM cluster (srun).
#
#   SLURM:  [GPUS=8 GPUS_PER_NODE=8 CPUS_PER_TASK=12 SRUN_ARGS=...] train_in1k.sh PARTITION JOB_NAME CONFIG [main.py args]
#   local:  [GPUS=1] train_in1k.sh CONFIG [main.py args]
#
# As published, main.py gets `--data-path data/imagenet --output work_dirs` (relative to the
# working directory) before your arguments, which override them (the last value wins).
# Without `srun` on PATH the SLURM form runs locally with torchrun (PARTITION/JOB_NAME ignored).
# `sh script.sh` (the published command form) is dash on Debian/Ubuntu: re-run under bash.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -euo pipefail

NAME="${TRAIN_SCRIPT_NAME:-$(basename "$0")}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MAIN="${TRAIN_MAIN:-${ROOT}/classification/main.py}"  # train_in1k_deepspeed.sh points this elsewhere
PYTHON="${PYTHON:-python}"
# The published defaults; train_inat18.sh / train_in1k_deepspeed.sh set their own.
DEFAULT_ARGS=(--data-path "${TRAIN_DATA_PATH:-data/imagenet}" --output "${TRAIN_OUTPUT:-work_dirs}")

usage() {
    cat >&2 <<USAGE
usage: ${NAME} PARTITION JOB_NAME CONFIG [main.py args ...]   (SLURM, via srun)
       ${NAME} CONFIG [main.py args ...]                      (this machine, via torchrun)
env: GPUS (total processes), GPUS_PER_NODE, CPUS_PER_TASK, SRUN_ARGS (extra srun options)
USAGE
    exit 2
}

is_config() { [[ "$1" == *.yaml || "$1" == *.yml ]]; }

[[ $# -ge 1 ]] || usage
case "$1" in -h|--help) usage ;; esac

if is_config "$1"; then
    PARTITION=""; JOB_NAME=""; CONFIG="$1"; shift
else
    [[ $# -ge 3 ]] || { echo "${NAME}: expected PARTITION JOB_NAME CONFIG or CONFIG" >&2; usage; }
    PARTITION="$1"; JOB_NAME="$2"; CONFIG="$3"; shift 3
    is_config "${CONFIG}" || { echo "${NAME}: CONFIG must be a .yaml file, got '${CONFIG}'" >&2; usage; }
fi
[[ -f "${CONFIG}" ]] || { echo "${NAME}: config file '${CONFIG}' not found" >&2; exit 2; }

if [[ -n "${PARTITION}" ]] && command -v srun >/dev/null 2>&1; then
    GPUS=${GPUS:-8}
    GPUS_PER_NODE=${GPUS_PER_NODE:-$(( GPUS < 8 ? GPUS : 8 ))}
    CPUS_PER_TASK=${CPUS_PER_TASK:-12}
    SRUN_ARGS=${SRUN_ARGS:-""}
    # shellcheck disable=SC2086  # SRUN_ARGS holds several options
    exec srun -p "${PARTITION}" \
        --job-name="${JOB_NAME}" \
        --gres=gpu:"${GPUS_PER_NODE}" \
        --ntasks="${GPUS}" \
        --ntasks-per-node="${GPUS_PER_NODE}" \
        --cpus-per-task="${CPUS_PER_TASK}" \
        --kill-on-bad-exit=1 \
        ${SRUN_ARGS} \
        "${PYTHON}" -u "${MAIN}" --cfg "${CONFIG}" "${DEFAULT_ARGS[@]}" "$@"
fi

if [[ -n "${PARTITION}" ]]; then
    echo "${NAME}: srun not found; running on this machine with torchrun (PARTITION/JOB_NAME ignored)" >&2
fi
if command -v torchrun >/dev/null 2>&1; then
    LAUNCH=(torchrun)
else
    LAUNCH=("${PYTHON}" -m torch.distributed.run)
fi
exec "${LAUNCH[@]}" --nproc_per_node="${GPUS:-1}" "${MAIN}" --cfg "${CONFIG}" "${DEFAULT_ARGS[@]}" "$@"
