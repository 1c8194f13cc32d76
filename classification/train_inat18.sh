#!/usr/bin/env bash
# iNaturalist 2018 training; same arguments and environment as train_in1k.sh, e.g.
#   train_inat18.sh PARTITION JOB_NAME classification/configs/inaturalist2018/internimage_h_22ktoinat18_384.yaml \
#       --data-path data/inat18 --pretrained internimage_h_jointto22k_384.pth
# The config selects the dataset (DATA.DATASET inat18) and the 8142-class head.
set -euo pipefail
TRAIN_SCRIPT_NAME="$(basename "$0")" exec "$(dirname "${BASH_SOURCE[0]}")/train_in1k.sh" "$@"
