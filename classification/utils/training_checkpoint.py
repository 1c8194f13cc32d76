"""Training checkpoints that survive a kill at any moment.

A file is written to a temporary name in the same folder, flushed to disk, then renamed
over the target (``os.replace`` is atomic on POSIX): a reader sees either the old file or
the complete new one, never a half-written one. Only the newest ``keep`` epoch files are
kept; ``ckpt_epoch_best.pth`` / ``ckpt_epoch_ema_best.pth`` sit beside them."""

from __future__ import annotations

import glob
import logging
import os
import re
import tempfile
from typing import Any

import torch

_EPOCH_FILE = re.compile(r"^ckpt_epoch_(\d+)\.pth$")
_TMP_PREFIX = ".tmp-ckpt-"
BEST_NAME = "ckpt_epoch_best.pth"
EMA_BEST_NAME = "ckpt_epoch_ema_best.pth"


def _fsync_dir(folder: str) -> None:
    # The rename itself must reach the disk too, or a power loss could undo it.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: str) -> None:
    """``torch.save(obj, path)`` such that ``path`` is never left half written."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=".pth", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(folder)


def remove_stale_temp_files(folder: str) -> list[str]:
    """Deletes temp files a killed writer left behind; returns their paths."""
    stale = glob.glob(os.path.join(folder, _TMP_PREFIX + "*"))
    for path in stale:
        try:
            os.remove(path)
        except OSError:
            pass
    return stale


def epoch_checkpoints(folder: str) -> list[tuple[int, str]]:
    """``(epoch, path)`` of every ``ckpt_epoch_{e}.pth`` in ``folder``, oldest first."""
    found = []
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            match = _EPOCH_FILE.match(name)
            if match:
                found.append((int(match.group(1)), os.path.join(folder, name)))
    return sorted(found)


def find_latest_checkpoint(folder: str) -> str | None:
    """Path of the newest epoch checkpoint in ``folder`` (None when there is none)."""
    found = epoch_checkpoints(folder)
    return found[-1][1] if found else None


def prune_checkpoints(folder: str, keep: int) -> list[str]:
    """Keeps the newest ``keep`` epoch checkpoints (all when keep <= 0); returns removed paths."""
    found = epoch_checkpoints(folder)
    if keep <= 0 or len(found) <= keep:
        return []
    removed = [path for _, path in found[:-keep]]
    for path in removed:
        os.remove(path)
    return removed


def load_checkpoint_file(path: str, *, trust: bool | None = None) -> dict:
    """Reads a training checkpoint onto the CPU through
    ``classification.models.checkpoint.read_checkpoint`` (weights-only with its allowlist;
    ``trust``/``INTERNIMAGE_TRUST_CHECKPOINTS=1`` for a full unpickle)."""
    from classification.models.checkpoint import read_checkpoint

    checkpoint = read_checkpoint(path, trust=trust, map_location="cpu")
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path}: expected a dict checkpoint, got {type(checkpoint).__name__}")
    return checkpoint


def load_latest_valid(folder: str, logger: logging.Logger | None = None) -> tuple[str, dict] | None:
    """The newest epoch checkpoint that reads back, skipping unreadable ones (e.g. files
    copied in by hand); None when there is none."""
    for _, path in reversed(epoch_checkpoints(folder)):
        try:
            return path, load_checkpoint_file(path)
        except Exception as error:  # a damaged file must not block resuming from an older one
            if logger:
                logger.warning("skipping unreadable checkpoint %s: %s", path, error)
    return None


def build_state(
    *,
    model: torch.nn.Module,
    optimizer,
    lr_scheduler,
    scaler,
    ema,
    epoch: int,
    max_accuracy: float,
    max_accuracy_ema: float,
    config_yaml: str,
) -> dict:
    """The dict stored in ``ckpt_epoch_{e}.pth``."""
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": lr_scheduler.state_dict() if lr_scheduler is not None else None,
        "max_accuracy": float(max_accuracy),
        "max_accuracy_ema": float(max_accuracy_ema),
        "epoch": int(epoch),
        "config": config_yaml,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "ema": ema.module.state_dict() if ema is not None else None,
    }
    return state


def save_epoch_checkpoint(folder: str, epoch: int, state: dict, keep: int) -> str:
    """Writes ``ckpt_epoch_{epoch}.pth`` atomically, then prunes to the newest ``keep``."""
    path = os.path.join(folder, f"ckpt_epoch_{epoch}.pth")
    atomic_save(state, path)
    prune_checkpoints(folder, keep)
    return path


def resume_training(
    checkpoint: dict,
    *,
    model: torch.nn.Module,
    optimizer=None,
    lr_scheduler=None,
    scaler=None,
    ema=None,
    strict: bool = True,
) -> dict:
    """Loads a training checkpoint into the given objects (those not None and present in the
    file). Returns {'epoch', 'max_accuracy', 'max_accuracy_ema'} (epoch -1 when absent)."""
    from classification.models.checkpoint import drop_dcn_centre

    weights = checkpoint.get("model", checkpoint)
    weights = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in weights.items()}
    # A REMOVE_CENTER model resuming weights trained with centre points: slice those out.
    weights, sliced = drop_dcn_centre(weights, model.state_dict())
    model.load_state_dict(weights, strict=strict)
    if sliced and optimizer is not None and checkpoint.get("optimizer") is not None:
        # its moments have the old shapes; the weights carry over, the optimizer starts fresh
        logging.getLogger(__name__).warning(
            "resume: dropped the centre point of %d dcn tensors (REMOVE_CENTER); the optimizer "
            "state of the checkpoint does not fit and is not loaded", len(sliced))
        optimizer = None
    if optimizer is not None and checkpoint.get("optimizer") is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
    if lr_scheduler is not None and checkpoint.get("lr_scheduler") is not None:
        lr_scheduler.load_state_dict(checkpoint["lr_scheduler"])
    if scaler is not None and checkpoint.get("scaler"):
        scaler.load_state_dict(checkpoint["scaler"])
    if ema is not None:
        # A checkpoint without EMA weights (e.g. EMA switched on later) restarts EMA from the model.
        ema_weights = checkpoint.get("ema") or weights
        ema.module.load_state_dict(drop_dcn_centre(ema_weights, ema.module.state_dict())[0], strict=strict)
    return {
        "epoch": int(checkpoint.get("epoch", -1)),
        "max_accuracy": float(checkpoint.get("max_accuracy", 0.0)),
        "max_accuracy_ema": float(checkpoint.get("max_accuracy_ema", 0.0)),
    }
