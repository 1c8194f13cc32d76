"""Accelerate trainer (classification/main_accelerate.py) on CPU: a run with the tensorboard
tracker, auto-resume through save_state/load_state under ``accelerate launch``, a clear
error for a missing tracker, and the launcher configs under classification/configs/accelerate
(every referenced DeepSpeed json exists, parses and matches its launcher file)."""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import subprocess
import sys

import pytest
import yaml
from test_trainer import TINY_YAML, make_dataset, write_cfg

from classification import main_accelerate as acc_main
from classification.utils import epoch_history

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAUNCH_DIR = os.path.join(REPO, "classification", "configs", "accelerate")
ACC_YAML = TINY_YAML.replace("EPOCHS: 5", "EPOCHS: 2")


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """Accelerate keeps process-wide singletons; each in-process run starts clean."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    saved = dict(os.environ)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    os.environ.clear()
    os.environ.update(saved)


def test_train_then_resume_under_accelerate_launch(tmp_path):
    data = make_dataset(tmp_path / "data", "folder")
    cfg = write_cfg(tmp_path, ACC_YAML)
    out = str(tmp_path / "out")
    args = ["--cfg", cfg, "--data-path", data, "--output", out, "--opts", "TRAIN.EMA.ENABLE", "True"]
    result = acc_main.main([*args, "--logger", "tensorboard"])
    folder = result["output"]
    assert result["epochs_run"] == 2 and result["updates"] == 6
    history = epoch_history(os.path.join(folder, "metrics.jsonl"))
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    # the tensorboard tracker writes where classification/main.py's events go
    assert glob.glob(os.path.join(folder, "tensorboard", "events.out.tfevents.*"))
    assert acc_main.latest_state(folder).endswith("epoch1")

    # the same command with more epochs, now through the launcher: load_state continues the run
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--cpu",
            "--num_processes",
            "1",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            os.path.join(REPO, "classification", "main_accelerate.py"),
            *args,
            "--epochs",
            "3",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stderr + proc.stdout
    assert [r["epoch"] for r in epoch_history(os.path.join(folder, "metrics.jsonl"))] == [0, 1, 2]
    assert acc_main.latest_state(folder).endswith("epoch2")
    assert not os.path.isdir(os.path.join(folder, "accelerate", "epoch1"))  # SAVE_CKPT_NUM 1


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed")
def test_missing_wandb_is_a_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match="pip install wandb"):
        acc_main.main(["--cfg", write_cfg(tmp_path, ACC_YAML), "--logger", "wandb"])


def _launcher_files() -> list[str]:
    return sorted(glob.glob(os.path.join(LAUNCH_DIR, "*.yaml")))


def test_launcher_configs_cover_the_published_setups():
    names = {os.path.basename(p)[:-5] for p in _launcher_files()}
    assert {  # the published names, then our bf16 and explicitly named variants
        "dist_8gpus_ddp_fp16",
        "dist_8gpus_zero1",
        "dist_8gpus_zero1_wo_loss_scale",
        "dist_8gpus_zero3_offload",
        "dist_8gpus_zero3_offload_wo_loss_scale",
        "ddp_fp16",
        "ddp_bf16",
        "zero1_fp16",
        "zero1_bf16",
        "zero3_offload_fp16",
        "zero3_offload_bf16",
    } <= names


@pytest.mark.parametrize("path", _launcher_files(), ids=os.path.basename)
def test_launcher_config_references_are_valid(path):
    from accelerate.commands.config.config_args import load_config_from_file

    launcher = load_config_from_file(path)  # accelerate's own parser accepts it
    with open(path) as f:
        raw = yaml.safe_load(f)
    name = os.path.basename(path)
    precision = "bf16" if "bf16" in name else "fp16"
    if raw["distributed_type"] != "DEEPSPEED":
        assert launcher.mixed_precision == precision
        return
    ref = raw["deepspeed_config"]["deepspeed_config_file"]
    full = os.path.join(REPO, ref)  # relative to the repository root, where one launches from
    assert os.path.isfile(full), f"{name} references missing {ref}"
    with open(full) as f:
        ds = json.load(f)
    zero = ds["zero_optimization"]
    assert zero["stage"] == (3 if "zero3" in name else 1)
    if "offload" in name:
        assert zero["offload_optimizer"]["device"] == "cpu" and zero["offload_param"]["device"] == "cpu"
    assert ds.get(precision, {}).get("enabled") is True
    if precision == "fp16":  # dynamic loss scaling, or the static scale 1 of *_wo_loss_scale
        assert ds["fp16"]["loss_scale"] == (1 if "wo_loss_scale" in name else 0)
    from accelerate.utils import DeepSpeedPlugin

    DeepSpeedPlugin(hf_ds_config=full)  # accelerate reads the json as it would at launch


def test_every_deepspeed_json_is_used():
    used = set()
    for path in _launcher_files():
        with open(path) as f:
            ref = (yaml.safe_load(f).get("deepspeed_config") or {}).get("deepspeed_config_file")
        if ref:
            used.add(os.path.basename(ref))
    found = glob.glob(os.path.join(LAUNCH_DIR, "**", "*.json"), recursive=True)
    assert used == {os.path.basename(p) for p in found}
