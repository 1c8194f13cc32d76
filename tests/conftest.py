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


def _environment_restored():
    saved = dict(os.environ)
    yield
    if dict(os.environ) != saved:
        os.environ.clear()
        os.environ.update(saved)


# one per scope: a module-scoped fixture (a training run shared by a file's tests) is set up
# inside the module-scoped restore, a test inside the function-scoped one
_restore_environment_per_module = pytest.fixture(scope="module", autouse=True)(_environment_restored)
_restore_environment_per_test = pytest.fixture(autouse=True)(_environment_restored)
