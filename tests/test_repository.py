"""Repository-level checks: lint, licence, and the README's two commands."""

from __future__ import annotations

import mmap
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.fail("ruff is not installed (it is part of requirements/full.txt)")
    result = subprocess.run([ruff, "check", str(ROOT)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_license_is_mit():
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "\nmake test\n" in ci


def test_bench_report_marks_each_target_and_fails_on_a_miss(capsys):
    from ops_dcnv3.bench_report import Target, machine_summary, report

    assert report([Target("fast", 12.0, ">=", 10.0, "x"), Target("lean", 0.8, "<=", 1.5, "x")])
    assert not report([Target("fast", 8.7, ">=", 10.0, "x"), Target("lean", 0.8, "<=", 1.5, "x")])
    out = capsys.readouterr().out.splitlines()
    assert out[-2] == "MISS  fast: 8.70x (target >= 10x)" and out[-1].startswith("PASS  lean")
    assert machine_summary().startswith("machine: ") and "load average" in machine_summary()


def test_cpu_model_names_the_first_x86_cpus_family_and_model(tmp_path):
    from ops_dcnv3.bench_report import _x86_family_model

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
                       "model name\t: AMD EPYC\n\nprocessor\t: 1\ncpu family\t: 26\nmodel\t\t: 2\n")
    assert _x86_family_model(str(cpuinfo)) == "family 25 model 17"
    cpuinfo.write_text("processor\t: 0\nBogoMIPS\t: 50.00\nCPU part\t: 0xd0c\n")  # an Arm machine
    assert _x86_family_model(str(cpuinfo)) is None
    assert _x86_family_model(str(tmp_path / "missing")) is None


def test_benchmarks_alternate_single_runs_and_take_each_ones_median(monkeypatch):
    from ops_dcnv3 import bench_report

    clock, calls = [0.0], []
    costs = {"ours": iter([9.0, 9.0, 1.0, 5.0, 2.0]), "anchor": iter([9.0, 9.0, 3.0, 3.0, 3.0])}

    def run(name):
        calls.append(name)
        clock[0] += next(costs[name])

    monkeypatch.setattr(bench_report.time, "perf_counter", lambda: clock[0])
    medians = bench_report.interleaved_medians({"ours": lambda: run("ours"), "anchor": lambda: run("anchor")},
                                               repeat=3, warmup=2)
    assert calls == ["ours", "ours", "anchor", "anchor"] + ["ours", "anchor"] * 3
    assert medians == {"ours": 2.0, "anchor": 3.0}
    with pytest.raises(ValueError, match="repeat must be >= 1"):
        bench_report.interleaved_medians({"ours": lambda: None}, repeat=0)


def test_benchmarks_settle_untimed_before_each_timed_call(monkeypatch):
    from ops_dcnv3 import bench_report

    clock, events = [0.0], []

    def sleep(seconds):
        events.append(("sleep", seconds))
        clock[0] += seconds

    def run(name, cost):
        events.append(("run", name))
        clock[0] += cost

    monkeypatch.setattr(bench_report.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(bench_report.time, "sleep", sleep)
    runs = {"torch": lambda: run("torch", 2.0), "ort": lambda: run("ort", 3.0)}
    medians = bench_report.interleaved_medians(runs, repeat=2, warmup=1, settle=0.5)
    assert medians == {"torch": 2.0, "ort": 3.0}  # the settling is not timed
    assert events == [("run", "torch"), ("run", "ort")] + [("sleep", 0.5), ("run", "torch"),
                                                           ("sleep", 0.5), ("run", "ort")] * 2
    with pytest.raises(ValueError, match="settle must be >= 0 seconds"):
        bench_report.interleaved_medians({"ours": lambda: None}, repeat=1, settle=-1)


def test_system_usage_records_each_call():
    from ops_dcnv3 import bench_report

    def touch_fresh_pages() -> int:
        # an anonymous mapping of its own (not the allocator's, which may reuse pages): each
        # page written is faulted in
        with mmap.mmap(-1, 64 << 20) as pages:
            for offset in range(0, len(pages), 4096):
                pages[offset] = 1
            return len(pages)

    usage = bench_report.SystemUsage()
    assert usage.medians(3) is None
    run = usage.wrap(touch_fresh_pages)
    assert all(run() == 64 << 20 for _ in range(3))
    if sys.platform.startswith("linux"):
        assert len(usage.calls) == 3
        assert all(call.page_faults >= 32 for call in usage.calls)  # 64 MiB: 16K pages of 4 KiB, 32 huge ones
        assert all(call.user_seconds >= 0 and call.system_seconds >= 0 for call in usage.calls)
        last_two = usage.calls[-2:]
        assert usage.medians(2) == bench_report.StepUsage(
            *(sum(column) / 2 for column in zip(*last_two)))


@pytest.mark.parametrize("python,status", [("true", 0), ("false", 2)])
def test_make_bench_runs_every_benchmark_and_fails_on_a_miss(python, status):
    # -o bootstrap: the environment is taken as it is; PY stands in for the benchmarks' exit codes
    result = subprocess.run(["make", "-o", "bootstrap", "bench", f"PY={shutil.which(python)}"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == status, result.stdout + result.stderr
    assert result.stdout.count("== python ") == 5  # all five run, also after a miss
    assert ("missed a target" in result.stdout) == (status != 0)


def test_setup_py_without_torch_says_install_torch_first():
    block_torch = (
        "import runpy, sys\n"
        "class NoTorch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, NoTorch())\n"
        "sys.argv = ['setup.py', '--version']\n"
        "runpy.run_path('setup.py', run_name='__main__')\n"
    )
    result = subprocess.run([sys.executable, "-c", block_torch], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1
    assert "PyTorch is not installed. Install it first" in result.stderr
    assert "Traceback" not in result.stderr


def test_bootstrap_stamp_leaves_the_build_step_out():
    """Editing the extension-build part of bootstrap.sh must not reinstall the stack: the
    stamp hashes the pins and the recipe number only."""
    script = (ROOT / "tools" / "bootstrap.sh").read_text()
    stamp_line = next(line for line in script.splitlines() if line.startswith("stamp_hash="))
    assert "bootstrap.sh" not in stamp_line and "requirements" in stamp_line
    assert "--force" not in script  # ninja and the up-to-date check keep the build incremental
