"""Train ROAD_BEVFormer from a config (mmengine runner).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--autoscale-lr]
        [--cfg-options KEY=VALUE ...] [--launcher none|pytorch|slurm|mpi]
        [--resume-from CKPT] [--auto-resume] [--no-validate] [--seed N] [--diff-seed]
        [--deterministic] [--gpus N] [--gpu-id(s) N] [--options KEY=VALUE ...]

The published flags (mmdet3d 1.0rc6 ``tools/train.py``) map onto mmengine as in the detection
tree (``detection/train.py``, whose config assembly this script shares): ``--resume-from CKPT``
is ``--resume CKPT``, ``--auto-resume`` is ``--resume``, ``--no-validate`` drops the validation
loop, ``--seed`` / ``--diff-seed`` / ``--deterministic`` set ``randomness``, ``--options`` is
``--cfg-options``, ``--autoscale-lr`` scales the lr by the batch size over
``auto_scale_lr.base_batch_size`` (8), ``--gpus N`` / ``--gpu-ids`` pick the one GPU of a
non-distributed run. Without CUDA, ``--launcher pytorch`` (``dist_train.sh``) trains
data-parallel over gloo and ``--amp`` is bfloat16 autocast. Work dirs default to
``$INTERNIMAGE_OUTPUT/work_dirs/<config name>``. Relative data paths in the configs
(``data/OpenLane-V2/``) are read from the current directory, as published."""

from __future__ import annotations

import dense_common.quiet  # noqa: F401 - first: filters the stack's import-time warnings

# isort: split

import argparse

import autonomous_driving.openlane_v2.registration  # noqa: F401 - registrations, safe checkpoint loader
from autonomous_driving import train_cli

build_cfg = train_cli.build_cfg


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return train_cli.parse_args(argv, model="ROAD_BEVFormer on OpenLane-V2", published="mmdet3d",
                                example_config="plugin/mmdet3d/configs/internimage-s.py")


def main(argv: list[str] | None = None) -> None:
    train_cli.main(parse_args(argv))


if __name__ == "__main__":
    main()
