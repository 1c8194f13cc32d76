"""Fixtures of the segmentation tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from seg_testutils import write_tiny_dataset


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three scikit-image photos (48x48) with luminance label maps (3 classes)."""
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny_seg"))
