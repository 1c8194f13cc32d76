"""Detection tests: mmdet 3 must be importable, and ``mmdet_custom`` (detection/) is put on
sys.path the way ``python detection/<script>.py`` does for the scripts."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytest.importorskip("mmdet", reason="mmdet 3 is not installed (tools/bootstrap.sh installs it)")

REPO = Path(__file__).resolve().parents[2]
DETECTION = REPO / "detection"
if str(DETECTION) not in sys.path:
    sys.path.insert(0, str(DETECTION))


@pytest.fixture(autouse=True)
def _mmdet_scope():
    """mmengine's default registry scope is process-global: tests of another tree (mmseg)
    leave theirs current, and builds would then look up 'mmseg::' registries."""
    from mmengine.registry import init_default_scope

    init_default_scope("mmdet")


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread in these tests: on the shared 2-core CI machine, two OpenMP
    threads spinning at barriers while the other core is busy run ~10x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def script_env() -> dict[str, str]:
    """Environment for running detection scripts in a subprocess: repo importable, one
    thread (see ``_one_thread``)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def load_script(name: str):
    """A detection script as a module (by path: ``test.py`` would clash with the stdlib's
    ``test`` package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"detection_script_{name}", DETECTION / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
