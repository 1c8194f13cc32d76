"""What the three driving baselines' ``tools/test.py`` share: the checkpoint run's config
(work dir, checkpoint, launcher), the published collection / speed / randomness flags, and
the run itself (gloo where there is no GPU). Each script adds its own metric flags."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import Any

from mmengine.config import Config
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from dense_common import hooks as _hooks  # noqa: F401 - FuseConvBNHook
from dense_common.cli import (
    add_custom_hook,
    apply_eval_options,
    apply_randomness,
    check_checkpoint,
    default_work_dir,
    load_config,
    set_local_rank,
)
from dense_common.cpu_training import adapt_to_cpu


def load_test_config(args: argparse.Namespace) -> Config:
    """``args.config`` with ``--cfg-options``, evaluating ``args.checkpoint`` (never resuming)
    in ``--work-dir`` (default under ``$INTERNIMAGE_OUTPUT``)."""
    cfg = load_config(args.config, args.cfg_options)
    cfg.launcher = args.launcher
    cfg.work_dir = default_work_dir(cfg, args.config, args.work_dir)
    cfg.load_from = check_checkpoint(args.checkpoint)
    cfg.resume = False
    return cfg


def apply_run_flags(cfg: Config, args: argparse.Namespace, eval_options: Mapping[str, Any]) -> None:
    """``--gpu-collect`` / ``--tmpdir`` (where the ranks' results meet), evaluator options,
    ``--fuse-conv-bn``, ``--seed`` / ``--deterministic``."""
    eval_options = dict(eval_options)
    if args.gpu_collect:
        eval_options["collect_device"] = "gpu"
    if args.tmpdir:
        eval_options["collect_dir"] = args.tmpdir
    if eval_options:
        apply_eval_options(cfg, eval_options, scope="mmdet", renames={})
    if args.fuse_conv_bn:
        add_custom_hook(cfg, dict(type="FuseConvBNHook"))
    apply_randomness(cfg, seed=args.seed, diff_seed=False, deterministic=args.deterministic)


def run_test(args: argparse.Namespace, build_cfg: Callable[[argparse.Namespace], Config]
             ) -> tuple[Config, dict]:
    """Builds the config with ``build_cfg`` and runs mmengine's test loop: ``(cfg, metrics)``."""
    set_local_rank(args.local_rank)
    cfg = build_cfg(args)
    for note in adapt_to_cpu(cfg, args.launcher):  # gloo where there is no GPU
        print(note, flush=True)
    runner = RUNNERS.build(cfg) if "runner_type" in cfg else Runner.from_cfg(cfg)
    return cfg, runner.test()
