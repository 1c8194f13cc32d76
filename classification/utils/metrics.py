"""Run records: a JSONL metrics log (one object a line), optional TensorBoard scalars and
a plot of the per-epoch curves."""

from __future__ import annotations

import json
import os
import time
import warnings
from typing import Any

_TENSORBOARD_WARNED = False


def _warn_tensorboard_once(error: Exception) -> None:
    """Says once per process why there are no TensorBoard scalars (metrics.jsonl has them all)."""
    global _TENSORBOARD_WARNED
    if _TENSORBOARD_WARNED:
        return
    _TENSORBOARD_WARNED = True
    warnings.warn(f"TensorBoard logging is off ({type(error).__name__}: {error}); metrics.jsonl still "
                  "records every value (pip install tensorboard for the scalars)", RuntimeWarning,
                  stacklevel=3)


class MetricsLogger:
    """Appends records to ``<output>/metrics.jsonl`` and mirrors numbers to TensorBoard when
    it is installed. Construct it on the main process only."""

    def __init__(self, output: str, tensorboard: bool = True):
        os.makedirs(output, exist_ok=True)
        self.path = os.path.join(output, "metrics.jsonl")
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(os.path.join(output, "tensorboard"))
            except Exception as error:  # tensorboard missing or broken: JSONL alone is enough
                self.writer = None
                _warn_tensorboard_once(error)

    def log(self, kind: str, step: int, **values: Any) -> None:
        record = {"type": kind, "step": int(step), "time": time.time(), **values}
        # One write per line with flush: a kill can at worst leave one truncated last line,
        # which read_metrics skips.
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(f"{kind}/{key}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def read_metrics(path: str, kind: str | None = None) -> list[dict]:
    """Records of a metrics.jsonl (of one ``kind`` when given), skipping damaged lines."""
    records = []
    if not os.path.isfile(path):
        return records
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if kind is None or record.get("type") == kind:
                records.append(record)
    return records


def epoch_history(path: str) -> list[dict]:
    """One 'epoch' record per epoch (the last written wins: a resumed run may repeat one)."""
    by_epoch = {}
    for record in read_metrics(path, "epoch"):
        by_epoch[record["epoch"]] = record
    return [by_epoch[e] for e in sorted(by_epoch)]


def plot_curves(metrics_path: str, out_path: str) -> str | None:
    """Draws train loss and validation accuracy per epoch into ``out_path`` (png); returns
    the path, or None when there is nothing to draw."""
    history = epoch_history(metrics_path)
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")  # no display on training machines
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r.get("train_loss") for r in history], marker="o", label="train loss")
    if any(r.get("val_loss") is not None for r in history):
        ax_loss.plot(epochs, [r.get("val_loss") for r in history], marker="o", label="val loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    for key, label in (("acc1", "val top-1"), ("acc5", "val top-5"), ("ema_acc1", "EMA top-1")):
        points = [(r["epoch"], r[key]) for r in history if r.get(key) is not None]
        if points:
            ax_acc.plot(*zip(*points), marker="o", label=label)
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy (%)")
    ax_acc.legend()
    fig.tight_layout()
    fig.savefig(out_path, dpi=80)
    plt.close(fig)
    return out_path
