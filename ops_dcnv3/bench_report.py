"""What every benchmark of the repository prints besides its timings: the machine it ran on
and a PASS/MISS line per target, with an exit status that is non-zero on a miss (so
``make bench`` fails when a target is missed).

    from ops_dcnv3.bench_report import Target, machine_summary, report
    print(machine_summary())
    ok = report([Target("level-0 forward speed-up", 12.3, ">=", 10.0, "x")])
    raise SystemExit(0 if ok else 1)
"""

from __future__ import annotations

import operator
import os
import platform
import subprocess
from dataclasses import dataclass

import torch

_COMPARE = {">=": operator.ge, "<=": operator.le}


@dataclass(frozen=True)
class Target:
    """``value`` must be ``op`` (``>=`` or ``<=``) ``target`` to pass."""

    name: str
    value: float
    op: str
    target: float
    unit: str = ""

    @property
    def passed(self) -> bool:
        return _COMPARE[self.op](self.value, self.target)


def cpu_model() -> str:
    """The CPU model as lscpu names it (``/proc/cpuinfo`` or the platform string otherwise)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_summary() -> str:
    """One line: CPU model, cores, torch threads and the 1-minute load average (the load
    says how much the figures may be off on a shared machine)."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"machine: {cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
            f"load average {load:.2f}")


def report(targets: list[Target]) -> bool:
    """Prints ``PASS``/``MISS`` per target; True when all pass."""
    for t in targets:
        print(f"{'PASS' if t.passed else 'MISS'}  {t.name}: {t.value:.2f}{t.unit} (target {t.op} "
              f"{t.target:g}{t.unit})", flush=True)
    return all(t.passed for t in targets)
