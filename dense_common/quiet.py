"""Warning filters for import-time noise of the OpenMMLab/DeepSpeed stack, installed before
mmengine is imported (``dense_common/__init__.py`` imports this module first; the dense
scripts import ``dense_common.quiet`` before anything else). Each filter names one known,
harmless message; everything else still shows.

- setuptools' ``pkg_resources is deprecated as an API`` and its ``declare_namespace``
  notice (mmengine and mmcv import it; the stack pins setuptools < 81, where it still
  exists, because mmcv's build needs it);
- DeepSpeed's ``Setting accelerator to CPU ... we were unable to detect it`` on machines
  without CUDA (mmengine imports DeepSpeed to register its optimizers): the accelerator is
  named up front with ``DS_ACCELERATOR=cpu``, which is what DeepSpeed would pick anyway.
"""

from __future__ import annotations

import os
import warnings

warnings.filterwarnings("ignore", message="pkg_resources is deprecated as an API", category=UserWarning)
warnings.filterwarnings("ignore", message=r"Deprecated call to `pkg_resources\.declare_namespace",
                        category=DeprecationWarning)


def _no_cuda_device() -> bool:
    import torch

    return not (torch.cuda.is_available() and torch.cuda.device_count() > 0)


if "DS_ACCELERATOR" not in os.environ and _no_cuda_device():
    os.environ["DS_ACCELERATOR"] = "cpu"
