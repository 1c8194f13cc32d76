"""Where commands write when no output flag is given: never inside the checkout.

Every command that writes (trainers, tests, demos, deploy) takes an explicit flag
(``--output``, ``--work-dir``, ``--out``); without it, files go under
``$INTERNIMAGE_OUTPUT`` (default ``~/internimage-output``), so a run started from the
repository root leaves the working tree clean."""

from __future__ import annotations

import os

ENV_VAR = "INTERNIMAGE_OUTPUT"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_output_root() -> str:
    """``$INTERNIMAGE_OUTPUT``, else ``~/internimage-output`` (absolute)."""
    root = os.environ.get(ENV_VAR) or os.path.join(os.path.expanduser("~"), "internimage-output")
    return os.path.abspath(os.path.expanduser(root))


def default_output(*parts: str) -> str:
    """A path under :func:`default_output_root`, e.g. ``default_output("work_dirs", name)``."""
    return os.path.join(default_output_root(), *parts)
