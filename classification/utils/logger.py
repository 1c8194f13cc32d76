"""A logger that prints on the main process and writes every rank to its own file."""

from __future__ import annotations

import logging
import os
import sys


def create_logger(output_dir: str, rank: int = 0, name: str = "internimage") -> logging.Logger:
    """A fresh logger (handlers of a previous in-process run are dropped): rank 0 logs to
    stdout, every rank to ``<output_dir>/log_rank{rank}.txt``."""
    os.makedirs(output_dir, exist_ok=True)
    logger = logging.getLogger(f"{name}.rank{rank}")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(logging.INFO)
    logger.propagate = False
    fmt = logging.Formatter(f"[%(asctime)s rank{rank}] %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    if rank == 0:
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(fmt)
        logger.addHandler(console)
    file_handler = logging.FileHandler(os.path.join(output_dir, f"log_rank{rank}.txt"), mode="a")
    file_handler.setFormatter(fmt)
    logger.addHandler(file_handler)
    return logger


def close_logger(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
