"""Train VectorMapNet from a config (mmengine runner).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--resume-from CKPT]
        [--no-validate] [--gpus N] [--gpu-ids N] [--seed N] [--deterministic]
        [--options K=V ...] [--cfg-options K=V ...] [--launcher none|pytorch|slurm|mpi]
        [--autoscale-lr] [--amp]

The published (mmdet3d 0.17) flags map onto mmengine as in the detection tree, whose config
assembly this script shares (``detection/train.py``): ``--resume-from CKPT`` is ``--resume
CKPT``, ``--no-validate`` drops the validation loop, ``--seed`` / ``--deterministic`` set
``randomness``, ``--options`` is ``--cfg-options``, ``--autoscale-lr`` scales the lr by the
total batch over ``auto_scale_lr.base_batch_size``, ``--gpus`` / ``--gpu-ids`` pick the one GPU
of a non-distributed run. Without CUDA, ``--launcher pytorch`` (``dist_train.sh``) trains
data-parallel over gloo and ``--amp`` is bfloat16 autocast. Work dirs default to
``$INTERNIMAGE_OUTPUT/work_dirs/<config name>``."""

from __future__ import annotations

import dense_common.quiet  # noqa: F401 - first: filters the stack's import-time warnings

# isort: split

import argparse

import autonomous_driving.online_hdmap.registration  # noqa: F401 - registrations, safe checkpoint loader
from autonomous_driving import train_cli

build_cfg = train_cli.build_cfg


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return train_cli.parse_args(argv, model="VectorMapNet", published="mmdet3d",
                                example_config="src/configs/vectormapnet_intern.py")


def main(argv: list[str] | None = None) -> None:
    train_cli.main(parse_args(argv))


if __name__ == "__main__":
    main()
