"""Trainer utilities: crash-safe checkpoints, metrics records, logging, distributed helpers."""

from .distributed import (
    all_reduce_sum,
    barrier,
    get_rank,
    get_world_size,
    init_distributed,
    is_distributed,
    leave_process_group_at_exit,
)
from .logger import close_logger, create_logger
from .metrics import MetricsLogger, epoch_history, plot_curves, read_metrics
from .training_checkpoint import (
    BEST_NAME,
    EMA_BEST_NAME,
    atomic_save,
    build_state,
    epoch_checkpoints,
    find_latest_checkpoint,
    load_checkpoint_file,
    load_latest_valid,
    prune_checkpoints,
    remove_stale_temp_files,
    resume_training,
    save_epoch_checkpoint,
)

__all__ = [
    "BEST_NAME",
    "EMA_BEST_NAME",
    "MetricsLogger",
    "all_reduce_sum",
    "atomic_save",
    "barrier",
    "build_state",
    "close_logger",
    "create_logger",
    "epoch_checkpoints",
    "epoch_history",
    "find_latest_checkpoint",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "leave_process_group_at_exit",
    "load_checkpoint_file",
    "load_latest_valid",
    "plot_curves",
    "prune_checkpoints",
    "read_metrics",
    "remove_stale_temp_files",
    "resume_training",
    "save_epoch_checkpoint",
]
