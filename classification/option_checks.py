"""Published config keys that this trainer does not run, as clear errors (an option that
is accepted and then ignored would silently train something else than was asked for).

- ``DATA.CACHE_MODE``: ``no``, ``full`` or ``part``. It acts in zip mode only, as published:
  ``full`` preloads every member of the archives into memory, ``part`` each rank's
  ``1/world_size`` share (``classification.data.build``); outside zip mode it has no effect.
- ``DATA.IMG_ON_MEMORY``: as published, each rank holds its ``1/world_size`` share of the
  image files in memory (any layout).
- ``AUG.RANDOM_RESIZED_CROP``, ``TEST.SEQUENTIAL``: only their default (False) is
  implemented."""

from __future__ import annotations

from yacs.config import CfgNode

CACHE_MODES = ("no", "full", "part")


def unsupported_option_problems(config: CfgNode) -> list[str]:
    """One message per setting the trainers cannot honour (empty when all are fine)."""
    problems = []
    if config.DATA.CACHE_MODE not in CACHE_MODES:
        problems.append(f"DATA.CACHE_MODE must be one of {CACHE_MODES}, got {config.DATA.CACHE_MODE!r}")
    if config.AUG.RANDOM_RESIZED_CROP:
        problems.append(
            "AUG.RANDOM_RESIZED_CROP=True is not implemented: the training transform always "
            "starts with RandomResizedCrop (above 32 px) and evaluation follows TEST.CROP"
        )
    if config.TEST.SEQUENTIAL:
        problems.append(
            "TEST.SEQUENTIAL=True (every rank evaluating the whole val set) is not implemented: "
            "the sharded evaluation already scores every val image exactly once"
        )
    return problems
