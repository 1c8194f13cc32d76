"""Driving tests: mmdet 3 registries as the default scope, and generated Occ3D-nuScenes data
(``synthetic_occ``) in the published on-disk layout."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from synthetic_occ import make_occ_dataset

pytest.importorskip("mmdet", reason="mmdet 3 is not installed (tools/bootstrap.sh installs it)")


@pytest.fixture(autouse=True)
def _mmdet_scope():
    """The configs run with default_scope='mmdet'; another tree's tests may leave theirs current."""
    from mmengine.registry import init_default_scope

    init_default_scope("mmdet")


@pytest.fixture(scope="session")
def occ_data(tmp_path_factory) -> dict[str, Path]:
    """Two scenes of three frames, 20x20x16 voxels over the published pc_range, 96x64 images;
    both info pkls hold every frame. Read-only: tests that modify files use ``make_occ``."""
    return make_occ_dataset(tmp_path_factory.mktemp("occ"), scenes=2, frames_per_scene=3)


@pytest.fixture
def make_occ(tmp_path_factory) -> Callable[..., dict[str, Path]]:
    """``make_occ(**kwargs)``: a fresh generated dataset in its own temp dir (kwargs of
    ``make_occ_dataset``)."""

    def make(**kwargs) -> dict[str, Path]:
        return make_occ_dataset(tmp_path_factory.mktemp("occ"), **kwargs)

    return make
