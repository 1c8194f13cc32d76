"""Every launcher file in classification/configs/accelerate/*.yaml, launched as the README
says: ``accelerate launch --config_file FILE classification/main_accelerate.py --cfg ...``,
for one training step of a tiny InternImage on generated photos (train, validate, save the
state). The files are written for 8 GPUs; the one override is ``--num_processes`` (1 here,
or the GPUs present), so the DDP / DeepSpeed ZeRO-1 / ZeRO-3-offload settings, the mixed
precision and the DeepSpeed json are the shipped ones. Files with the same effective
settings (same launcher keys, same DeepSpeed json content) share one launch. All of them
run on CPU too (DDP over gloo, fp16/bf16 autocast, DeepSpeed's CPU accelerator with ZeRO-3
offload to torch's AdamW), so nothing is skipped; where DeepSpeed's CPU accelerator has no
fp16 (a CPU without AVX512-FP16/AMX-FP16, such as AMD EPYC), the fp16 DeepSpeed files must
refuse clearly instead.

Also: two processes are one data-parallel run or a clear refusal (never two trainings
racing into one folder): ``torchrun --nproc_per_node 2`` on CPU trains one model over gloo,
and ``accelerate launch --cpu --num_processes 2`` (which starts a single process) refuses."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from test_trainer import TINY_YAML, make_dataset, write_cfg

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAUNCH_DIR = os.path.join(REPO, "classification", "configs", "accelerate")
SCRIPT = os.path.join(REPO, "classification", "main_accelerate.py")
# one epoch of one step: 2 training images in a batch of 2
ONE_STEP_YAML = (TINY_YAML.replace("EPOCHS: 5", "EPOCHS: 1").replace("WARMUP_EPOCHS: 1", "WARMUP_EPOCHS: 0")
                 .replace("BATCH_SIZE: 8", "BATCH_SIZE: 2"))


def _settings(path: str) -> str:
    """The effective settings of a launcher file: its keys and its DeepSpeed json's content."""
    with open(path) as f:
        raw = yaml.safe_load(f)
    ds_file = (raw.get("deepspeed_config") or {}).get("deepspeed_config_file")
    if ds_file:
        with open(os.path.join(REPO, ds_file)) as f:
            raw["deepspeed_config"] = {**raw["deepspeed_config"], "deepspeed_config_file": json.load(f)}
    return json.dumps(raw, sort_keys=True)


def _launch_groups() -> dict[str, list[str]]:
    """First file of each distinct setup -> every file with that setup."""
    groups: dict[str, list[str]] = {}
    for path in sorted(glob.glob(os.path.join(LAUNCH_DIR, "*.yaml"))):
        groups.setdefault(_settings(path), []).append(path)
    return {paths[0]: paths for paths in groups.values()}


GROUPS = _launch_groups()


@pytest.fixture(scope="module")
def launch_inputs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("launch")
    return {"data": make_dataset(root / "data", "folder", n_train=2, n_val=2),
            "cfg": write_cfg(root, ONE_STEP_YAML), "root": str(root)}


def _env() -> dict[str, str]:
    launcher_vars = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")
    env = {k: v for k, v in os.environ.items() if k not in launcher_vars}
    env["OMP_NUM_THREADS"] = "1"
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    return env


def _run(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=_env(), capture_output=True, text=True, timeout=timeout, cwd=REPO)


def _deepspeed_fp16(launcher: str) -> bool:
    settings = json.loads(_settings(launcher))
    ds = (settings.get("deepspeed_config") or {}).get("deepspeed_config_file") or {}
    return settings["distributed_type"] == "DEEPSPEED" and (ds.get("fp16") or {}).get("enabled") is True


@pytest.mark.parametrize("launcher", sorted(GROUPS), ids=os.path.basename)
def test_launcher_trains_one_step(launcher: str, launch_inputs: dict[str, str]) -> None:
    from classification.main_accelerate import deepspeed_cpu_fp16

    covered = ", ".join(os.path.basename(p) for p in GROUPS[launcher])
    processes = str(max(torch.cuda.device_count(), 1))
    out = os.path.join(launch_inputs["root"], os.path.basename(launcher)[:-5])
    proc = _run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", launcher,
                 "--num_processes", processes, "--main_process_port", "29641", SCRIPT,
                 "--cfg", launch_inputs["cfg"], "--data-path", launch_inputs["data"], "--output", out])
    log = proc.stdout + proc.stderr
    if _deepspeed_fp16(launcher) and not torch.cuda.is_available() and not deepspeed_cpu_fp16():
        # DeepSpeed's CPU accelerator has no fp16 on this CPU (AMD EPYC, Intel before Sapphire
        # Rapids): a clear refusal before any training, naming the way out
        assert proc.returncode != 0 and "enables fp16" in log and "bf16" in log, f"{covered}:\n{log[-4000:]}"
        assert not glob.glob(os.path.join(out, "*", "accelerate", "epoch0"))
        return
    assert proc.returncode == 0, f"{covered}:\n{log[-4000:]}"
    with open(launcher) as f:
        raw = yaml.safe_load(f)
    deepspeed = raw["distributed_type"] == "DEEPSPEED"
    expected = "DistributedType.DEEPSPEED" if deepspeed else "DistributedType.MULTI_"
    assert f"{processes} process(es); {expected}" in log, log[-3000:]
    assert "Epoch 0: top-1" in log
    assert glob.glob(os.path.join(out, "*", "accelerate", "epoch0"))  # the state was saved


def test_every_launcher_is_covered() -> None:
    assert sorted(p for paths in GROUPS.values() for p in paths) == sorted(
        glob.glob(os.path.join(LAUNCH_DIR, "*.yaml")))
    assert len(GROUPS) >= 5  # DDP fp16/bf16, ZeRO-1 fp16/bf16, ZeRO-3 offload


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU path")
def test_torchrun_two_cpu_processes_are_one_run(launch_inputs: dict[str, str]) -> None:
    out = os.path.join(launch_inputs["root"], "torchrun")
    proc = _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                 "--master_port", "29643", SCRIPT, "--cfg", launch_inputs["cfg"],
                 "--data-path", launch_inputs["data"], "--output", out])
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "2 process(es); DistributedType.MULTI_CPU" in log
    assert log.count("Epoch 0: top-1") == 1  # rank 0 reports for the one run


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU path")
def test_accelerate_cpu_num_processes_2_refuses(launch_inputs: dict[str, str]) -> None:
    out = os.path.join(launch_inputs["root"], "refused")
    proc = _run([sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
                 "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", SCRIPT,
                 "--cfg", launch_inputs["cfg"], "--data-path", launch_inputs["data"], "--output", out])
    assert proc.returncode != 0
    assert "started a single process for --num_processes > 1" in proc.stdout + proc.stderr
    assert not os.path.exists(out)  # refused before writing anything
