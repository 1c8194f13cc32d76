"""Fixtures of the DCNv3 tests."""

import os

import pytest


@pytest.fixture
def cpu_isas():
    """The CPU code paths this machine can run (DCNV3_CPU_ISA values)."""
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    isas = ["default"]
    if " avx2 " in flags and " fma " in flags:
        isas.append("avx2")
    if all(f" {f} " in flags for f in ("avx512f", "avx512bw", "avx512vl")):
        isas.append("avx512")
    return isas
