"""Dense training on a machine without CUDA (dense_common/cpu_training.py), as the README
documents it: ``dist_train.sh CONFIG 2`` is data-parallel training over two gloo processes
(one run, one work dir, the data split between the ranks) and ``dist_test.sh CONFIG CKPT 2``
evaluates over two; ``--amp`` is bfloat16 autocast,
and the GPU-only launchers fail in one line. The detection scripts share the same code."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from seg_testutils import ROOT, SEG, tiny_config

from dense_common.cpu_training import CPUAutocastOptimWrapper, adapt_to_cpu

pytestmark = pytest.mark.skipif(torch.cuda.is_available(),
                                reason="checks the CPU path (this machine has CUDA)")


def test_dist_train_two_cpu_processes_train_one_model(tiny_dataset: Path, tmp_path: Path) -> None:
    config = tiny_config(tiny_dataset, tmp_path / "tiny.py", max_iters=1)
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1", PORT="29617")
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])  # torchrun
    work = tmp_path / "work"
    proc = subprocess.run(["bash", str(SEG / "dist_train.sh"), str(config), "2", "--work-dir", str(work)],
                          env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert out.count("no CUDA: data-parallel run over 2 CPU processes (gloo)") == 2  # both ranks
    assert (work / "iter_1.pth").is_file()
    logs = list(work.glob("*/*.log"))
    assert len(logs) == 1  # one run (rank 0 logs), not two racing into the folder
    log = logs[0].read_text()
    assert "Distributed training: True" in log
    assert re.search(r"Iter\(train\) \[1/1\]", log)

    # and dist_test.sh evaluates it over the same two gloo processes
    env["PORT"] = "29618"
    proc = subprocess.run(["bash", str(SEG / "dist_test.sh"), str(config), str(work / "iter_1.pth"), "2",
                           "--work-dir", str(tmp_path / "test")],
                          env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert out.count("no CUDA: data-parallel run over 2 CPU processes (gloo)") == 2
    assert "mIoU" in out


def test_amp_means_bf16_autocast_without_cuda() -> None:
    cfg = Config(dict(model=dict(type="EncoderDecoder", decode_head=dict(norm_cfg=dict(type="SyncBN"))),
                      optim_wrapper=dict(type="AmpOptimWrapper", loss_scale="dynamic",
                                         optimizer=dict(type="SGD", lr=0.1))))
    notes = adapt_to_cpu(cfg, "none")
    assert cfg.optim_wrapper.type == "CPUAutocastOptimWrapper" and "loss_scale" not in cfg.optim_wrapper
    assert notes == ["no CUDA: --amp is bfloat16 autocast on CPU (no loss scaling)"]
    assert cfg.model.decode_head.norm_cfg.type == "SyncBN"  # one process: mmengine reverts it itself
    model = torch.nn.Linear(4, 4)
    wrapper = CPUAutocastOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    with wrapper.optim_context(model):
        assert model(torch.ones(2, 4)).dtype == torch.bfloat16
    assert model(torch.ones(2, 4)).dtype == torch.float32


@pytest.mark.parametrize("launcher", ["slurm", "mpi"])
def test_gpu_only_launchers_refuse_in_one_line(launcher: str) -> None:
    cfg = Config(dict(model=dict(), optim_wrapper=dict(type="OptimWrapper")))
    with pytest.raises(SystemExit, match=rf"--launcher {launcher} needs CUDA devices .* dist_train.sh"):
        adapt_to_cpu(cfg, launcher)


EXIT_SCRIPT = """
import atexit, sys
import torch
import torch.distributed as dist
sys.path.insert(0, {repo!r})
from dense_common.cpu_training import start_gloo_group

# registered first, so it runs last: after the handler start_gloo_group registers
atexit.register(lambda: print("group alive at exit:", dist.is_initialized(), flush=True))
start_gloo_group()
t = torch.ones(3)
dist.all_reduce(t)  # leaves finished gloo work behind, as mmengine's result collection does
print("sum:", t.tolist(), flush=True)
"""


def test_the_gloo_group_is_destroyed_before_the_interpreter_exits(tmp_path: Path) -> None:
    """mmengine's Runner never destroys the group it runs in; a gloo group left to the
    interpreter's finalization can abort the process (SIGABRT, "terminate called without an
    active exception"), which failed dist_test.sh runs on CI. start_gloo_group destroys it at exit."""
    script = tmp_path / "exit_check.py"
    script.write_text(EXIT_SCRIPT.format(repo=str(ROOT)))
    env = dict(os.environ, RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(_free_port()), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "sum: [1.0, 1.0, 1.0]" in proc.stdout
    assert "group alive at exit: False" in proc.stdout, proc.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
