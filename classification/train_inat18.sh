#!/usr/bin/env bash
# iNaturalist 2018 training; same arguments and environment as train_in1k.sh, e.g.
#   train_inat18.sh PARTITION JOB_NAME classification/configs/inaturalist2018/internimage_h_22ktoinat18_384.yaml
# As published, main.py gets `--data-path data/inat2018 --output work_dirs` before your
# arguments (which override them). The config selects the dataset (DATA.DATASET inat18,
# 8142 classes), the meta-former model and the 22K checkpoint (MODEL.PRETRAINED).
# `sh script.sh` (the published command form) is dash on Debian/Ubuntu: re-run under bash.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -euo pipefail
export TRAIN_DATA_PATH="${TRAIN_DATA_PATH:-data/inat2018}"
TRAIN_SCRIPT_NAME="$(basename "$0")" exec "$(dirname "${BASH_SOURCE[0]}")/train_in1k.sh" "$@"
