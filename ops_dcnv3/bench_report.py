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
import statistics
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

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


def interleaved_medians(runs: Mapping[str, Callable[[], object]], repeat: int,
                        warmup: int = 1, settle: float = 0.0) -> dict[str, float]:
    """Median seconds per call of each run, timed one call at a time in turn (a, b, a, b,
    ...) after ``warmup`` untimed calls each: on a shared machine the load drifts within
    seconds, and alternating single calls makes the drift hit every run alike.

    ``settle``: seconds slept, untimed, before each timed call, for runs on different
    thread pools (PyTorch's and onnxruntime's): a pool's workers spin for a while after a
    call, and must be idle before the other pool's call is timed."""
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    if settle < 0:
        raise ValueError(f"settle must be >= 0 seconds, got {settle}")
    for run in runs.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, run in runs.items():
            if settle:
                time.sleep(settle)
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


class StepUsage(NamedTuple):
    """CPU seconds of one call (this process, every thread) and the minor page faults."""

    user_seconds: float
    system_seconds: float
    page_faults: float


@dataclass
class SystemUsage:
    """User and system CPU seconds and minor page faults of each call of a wrapped run
    (this process, every thread; nothing recorded where the platform has no ``resource``
    module). User time is the run's own work; a step that keeps faulting in fresh pages
    pays the kernel in system time, and on a shared host that cost drifts."""

    calls: list[StepUsage] = field(default_factory=list)

    def wrap(self, run: Callable[[], object]) -> Callable[[], object]:
        try:
            import resource
        except ImportError:  # not Unix: the run as it is
            return run

        def measured() -> object:
            before = resource.getrusage(resource.RUSAGE_SELF)
            result = run()
            after = resource.getrusage(resource.RUSAGE_SELF)
            self.calls.append(StepUsage(after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime,
                                        after.ru_minflt - before.ru_minflt))
            return result

        return measured

    def medians(self, last: int) -> StepUsage | None:
        """The median of each figure over the last ``last`` calls (None if unmeasured)."""
        if not self.calls:
            return None
        recent = self.calls[-last:]
        return StepUsage(*(statistics.median(column) for column in zip(*recent)))


def _first_cpu_fields(cpuinfo: str = "/proc/cpuinfo") -> dict[str, str]:
    """The ``key: value`` lines of the first processor's block of ``cpuinfo`` ({} without it)."""
    fields: dict[str, str] = {}
    try:
        with open(cpuinfo) as f:
            for line in f:
                if not line.strip():
                    break  # the first processor's block ends here
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def _lscpu_model_name() -> str:
    """The CPU model as lscpu names it (``/proc/cpuinfo`` or the platform string otherwise)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return _first_cpu_fields().get("model name") or platform.processor() or platform.machine()


def _x86_family_model(cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """``family F model M`` of the first CPU in ``cpuinfo`` (x86), else None."""
    fields = _first_cpu_fields(cpuinfo)
    family, model = fields.get("cpu family"), fields.get("model")
    return f"family {family} model {model}" if family and model else None


def cpu_model() -> str:
    """The CPU model as lscpu names it, with the x86 family and model numbers where known:
    under a hypervisor the name is often generic ("AMD EPYC" for Zen 4 and Zen 5 alike)."""
    name, numbers = _lscpu_model_name(), _x86_family_model()
    return f"{name} ({numbers})" if numbers else name


# lscpu/cpuinfo flags worth naming, in the order printed.
_ISA_FLAGS = (("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_bf16", "AVX512-BF16"),
              ("amx_bf16", "AMX-BF16"), ("asimd", "NEON"), ("sve", "SVE"))


def cpu_isa() -> str:
    """The vector ISAs of the CPU (from /proc/cpuinfo's flags) and the one PyTorch's own
    kernels dispatch to, e.g. ``AVX2 AVX-512 AVX512-BF16 AMX-BF16 (torch: AVX512)``."""
    fields = _first_cpu_fields()
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    names = [name for flag, name in _ISA_FLAGS if flag in flags] or ["unknown"]
    return f"{' '.join(names)} (torch: {torch.backends.cpu.get_cpu_capability()})"


def machine_summary() -> str:
    """One line: CPU model, its ISA, cores, torch threads and the 1-minute load average
    (the load says how much the figures may be off on a shared machine)."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"machine: {cpu_model()}, ISA {cpu_isa()}, {os.cpu_count()} cores, "
            f"{torch.get_num_threads()} torch threads, load average {load:.2f}")


def report(targets: list[Target]) -> bool:
    """Prints ``PASS``/``MISS`` per target; True when all pass."""
    for t in targets:
        print(f"{'PASS' if t.passed else 'MISS'}  {t.name}: {t.value:.2f}{t.unit} (target {t.op} "
              f"{t.target:g}{t.unit})", flush=True)
    return all(t.passed for t in targets)
