"""Shared test settings: deterministic, few threads (CI has 2 cores), and no environment
variable set by code under test (launchers' LOCAL_RANK/MASTER_ADDR, CUDA_VISIBLE_DEVICES,
trust switches) outlives the test that set it."""

import os

import pytest
import torch

os.environ.setdefault("PYTHONHASHSEED", "0")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _restore_environment():
    saved = dict(os.environ)
    yield
    if dict(os.environ) != saved:
        os.environ.clear()
        os.environ.update(saved)
