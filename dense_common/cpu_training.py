"""Dense training on a machine without CUDA, as on a GPU one (``detection/train.py``,
``segmentation/train.py``, their ``dist_train.sh``).

mmengine assumes GPUs in three places; :func:`adapt_to_cpu` adjusts the config for them:

- ``--launcher pytorch`` (``dist_train.sh CONFIG N``, torchrun): mmengine's ``init_dist``
  calls ``torch.cuda.set_device`` and the configs name ``nccl``. Here the process group is
  started with ``gloo`` first (mmengine then uses it), and the model is wrapped in
  ``MMDistributedDataParallel`` without ``device_ids``: a data-parallel run over N
  processes, gradients all-reduced. ``SyncBatchNorm`` has no CPU kernel, so on CPU its layers
  train as per-process ``BatchNorm`` (what mmengine does for one process anyway).
  ``--launcher slurm|mpi`` need GPUs: refused in one line.
- ``--amp``: mmengine's ``AmpOptimWrapper`` is GPU-only (fp16 with a loss scaler); on CPU it
  becomes :class:`CPUAutocastOptimWrapper`, bfloat16 autocast, which needs no loss scaling
  (bfloat16 has float32's exponent range).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS

from classification.utils.distributed import leave_process_group_at_exit
from dense_common.cli import fail


@OPTIM_WRAPPERS.register_module(force=True)
class CPUAutocastOptimWrapper(OptimWrapper):
    """``OptimWrapper`` whose forward/backward context is ``torch.autocast('cpu', bfloat16)``:
    mixed precision on CPU (``--amp`` where no GPU is present)."""

    @contextlib.contextmanager
    def optim_context(self, model: torch.nn.Module) -> Iterator[None]:
        with super().optim_context(model), torch.autocast("cpu", dtype=torch.bfloat16):
            yield


def _sync_bn_to_bn(node: Any) -> int:
    """Replaces ``type='SyncBN'`` by ``'BN'`` in a (nested) config; returns how many."""
    count = 0
    if isinstance(node, dict):
        if node.get("type") == "SyncBN":
            node["type"] = "BN"
            count += 1
        for value in node.values():
            count += _sync_bn_to_bn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            count += _sync_bn_to_bn(value)
    return count


def start_gloo_group() -> None:
    """Joins the torchrun process group (RANK, WORLD_SIZE, MASTER_ADDR/PORT) over gloo."""
    if dist.is_initialized():
        return
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise fail(f"--launcher pytorch expects torchrun's environment ({', '.join(missing)} unset); "
                   "start it with dist_train.sh CONFIG N or torchrun --nproc_per_node N")
    dist.init_process_group("gloo", init_method="env://")
    leave_process_group_at_exit()  # mmengine's Runner leaves the group to the interpreter's exit


def adapt_to_cpu(cfg: Any, launcher: str) -> list[str]:
    """Makes ``cfg`` trainable here when there is no CUDA device (see the module docstring);
    returns one line per change, for the log. Does nothing where CUDA is available."""
    if torch.cuda.is_available():
        return []
    notes = []
    if launcher in ("slurm", "mpi"):
        raise fail(f"--launcher {launcher} needs CUDA devices (none here); on CPUs use dist_train.sh CONFIG "
                   "N (torchrun, gloo)")
    if launcher == "pytorch":
        start_gloo_group()
        wrapper = dict(cfg.get("model_wrapper_cfg") or {})
        wrapper.setdefault("type", "MMDistributedDataParallel")
        wrapper.setdefault("find_unused_parameters", cfg.get("find_unused_parameters", False))
        wrapper.setdefault("broadcast_buffers", False)
        wrapper["device_ids"] = None  # CPU modules: DDP takes no device ids
        cfg.model_wrapper_cfg = wrapper
        notes.append(f"no CUDA: data-parallel run over {dist.get_world_size()} CPU processes (gloo)")
        if n := _sync_bn_to_bn(cfg.model):
            notes.append(f"no CUDA: {n} SyncBN layer configs train as per-process BN (SyncBatchNorm "
                         "needs GPUs)")
    if (cfg.get("optim_wrapper") or {}).get("type") == "AmpOptimWrapper":  # --amp, or the config's own
        cfg.optim_wrapper.type = "CPUAutocastOptimWrapper"
        cfg.optim_wrapper.pop("loss_scale", None)
        notes.append("no CUDA: --amp is bfloat16 autocast on CPU (no loss scaling)")
    return notes
