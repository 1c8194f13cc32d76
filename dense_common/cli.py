"""Small pieces shared by the detection and segmentation command-line scripts: config
loading with clear errors for bad paths, and the checkpoint-path check."""

from __future__ import annotations

import os
import os.path as osp

from mmengine.config import Config

from classification.output_root import default_output


def fail(message: str) -> SystemExit:
    """A ``SystemExit`` carrying ``message`` (argparse-style: ``raise fail(...)`` prints it
    without a traceback and exits with status 1)."""
    return SystemExit(f"error: {message}")


def load_config(path: str, cfg_options: dict | None = None) -> Config:
    """``Config.fromfile`` after checking the path, with ``--cfg-options`` merged."""
    if not osp.isfile(path):
        what = "is a directory" if osp.isdir(path) else "does not exist"
        raise fail(f"config file {path!r} {what}")
    try:
        cfg = Config.fromfile(path)
    except Exception as error:  # noqa: BLE001 - report any parse/import problem in one line
        raise fail(f"could not load config {path!r}: {type(error).__name__}: {error}") from error
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def check_checkpoint(path: str) -> str:
    """``path`` unchanged when it is a URL or an existing file; otherwise exits with a
    message naming it."""
    if "://" in path or osp.isfile(path):
        return path
    what = "is a directory, not a file" if osp.isdir(path) else "does not exist"
    raise fail(f"checkpoint {path!r} {what}")


def default_work_dir(cfg: Config, config_path: str, work_dir: str | None) -> str:
    """``--work-dir``, else the config's ``work_dir``, else ``$INTERNIMAGE_OUTPUT/work_dirs/<config
    name>`` (outside the checkout, see classification/output_root.py)."""
    if work_dir:
        return work_dir
    if cfg.get("work_dir"):
        return cfg.work_dir
    return default_output("work_dirs", osp.splitext(osp.basename(config_path))[0])


def set_local_rank(local_rank: int) -> None:
    """torch.distributed.launch passes ``--local-rank``; mmengine reads ``LOCAL_RANK``."""
    os.environ.setdefault("LOCAL_RANK", str(local_rank))
