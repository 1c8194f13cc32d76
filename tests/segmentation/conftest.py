"""Fixtures of the segmentation tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from seg_testutils import write_tiny_dataset


@pytest.fixture(autouse=True)
def _mmseg_scope() -> None:
    """mmengine's default registry scope is process-global: tests of another tree (mmdet)
    leave theirs current, and builds would then look up 'mmdet::' registries."""
    from mmengine.registry import init_default_scope

    init_default_scope("mmseg")


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three scikit-image photos (48x48) with luminance label maps (3 classes)."""
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny_seg"))
