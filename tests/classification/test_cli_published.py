"""The published command lines: main.py flags (--amp-opt-level O1 by default, --use-zero,
--local-rank), the <output>/<cfg stem>/ layout (old <stem>/<tag> runs keep resuming), the
train_*.sh default arguments, main_accelerate.py's flags and launcher files, and ZeRO
(ZeroRedundancyOptimizer) over two gloo ranks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from photo_crops import CLASSES, photo_crops

from classification import main as trainer
from classification.config import adopt_legacy_output, get_config
from classification.utils import load_checkpoint_file

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "classification" / "configs"
LAUNCH = CONFIGS / "accelerate"
TINY_YAML = """\
DATA:
  IMG_SIZE: 32
  BATCH_SIZE: 4
  NUM_WORKERS: 0
MODEL:
  NUM_CLASSES: 3
  DROP_PATH_RATE: 0.0
  INTERN_IMAGE:
    CHANNELS: 16
    DEPTHS: [1, 1, 1, 1]
    GROUPS: [1, 2, 4, 8]
    CORE_OP: DCNv3_pytorch
TRAIN:
  EPOCHS: 1
  WARMUP_EPOCHS: 0
  BASE_LR: 0.05
AUG:
  MIXUP: 0.0
  CUTMIX: 0.0
  REPROB: 0.0
  AUTO_AUGMENT: none
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("photos")
    for split, n, seed in (("train", 4, 0), ("val", 2, 1)):
        for k, (label, image) in enumerate(photo_crops(n, seed, size=32)):
            folder = root / split / CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            image.save(folder / f"{k}.png")
    return str(root)


@pytest.fixture
def cfg(tmp_path) -> str:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_YAML)
    return str(path)


def _config(*argv: str):
    return get_config(trainer.build_parser().parse_args(list(argv)))


# ----------------------------------------------------------------------------- main.py flags
def test_amp_is_on_unless_o0():
    published = str(CONFIGS / "internimage_l_22kto1k_384.yaml")  # its yaml says O0
    assert trainer.build_parser().parse_args([]).amp_opt_level == "O1"
    assert _config("--cfg", published).AMP_OPT_LEVEL == "O1"  # the flag's default wins, as published
    assert _config("--cfg", published, "--amp-opt-level", "O0").AMP_OPT_LEVEL == "O0"


def test_use_zero_and_local_rank_flags():
    t = str(CONFIGS / "internimage_t_1k_224.yaml")
    assert _config("--cfg", t).TRAIN.OPTIMIZER.USE_ZERO is False
    assert _config("--cfg", t, "--use-zero").TRAIN.OPTIMIZER.USE_ZERO is True
    assert _config("--cfg", str(CONFIGS / "internimage_h_22kto1k_640.yaml")).TRAIN.OPTIMIZER.USE_ZERO is True
    for flag in ("--local-rank", "--local_rank"):  # old launchers
        assert trainer.build_parser().parse_args([flag, "3"]).local_rank == 3


def test_output_is_output_slash_config_stem(tmp_path):
    config = _config("--cfg", str(CONFIGS / "internimage_t_1k_224.yaml"), "--output", str(tmp_path),
                     "--tag", "anything")
    assert config.OUTPUT == str(tmp_path / "internimage_t_1k_224")
    assert config.TAG == "anything"


def test_old_layout_is_found(tmp_path):
    config = _config("--cfg", str(CONFIGS / "internimage_t_1k_224.yaml"), "--output", str(tmp_path))
    assert adopt_legacy_output(config) is None  # nothing anywhere: the new folder
    old = tmp_path / "internimage_t_1k_224" / "default"
    old.mkdir(parents=True)
    (old / "ckpt_epoch_3.pth").write_bytes(b"")
    message = adopt_legacy_output(config)
    assert config.OUTPUT == str(old) and "old output layout" in message
    fresh = _config("--cfg", str(CONFIGS / "internimage_t_1k_224.yaml"), "--output", str(tmp_path))
    (tmp_path / "internimage_t_1k_224" / "ckpt_epoch_0.pth").write_bytes(b"")
    assert adopt_legacy_output(fresh) is None  # the new folder has a run: it wins
    assert fresh.OUTPUT == str(tmp_path / "internimage_t_1k_224")


def test_a_run_in_the_old_layout_resumes(tmp_path, cfg, data):
    common = ["--cfg", cfg, "--data-path", data, "--output", str(tmp_path), "--amp-opt-level", "O0"]
    first = trainer.main([*common, "--epochs", "1"])
    assert first["output"] == str(tmp_path / "tiny") and first["epochs_run"] == 1
    old = tmp_path / "tiny" / "default"  # as the previous trainer laid it out
    old.mkdir()
    for name in os.listdir(tmp_path / "tiny"):
        if name != "default":
            shutil.move(str(tmp_path / "tiny" / name), str(old / name))
    second = trainer.main([*common, "--epochs", "2"])
    assert second["output"] == str(old) and second["epochs_run"] == 1  # epoch 1 only: resumed
    assert "old output layout" in (old / "log_rank0.txt").read_text()


# ----------------------------------------------------------------------------- train_*.sh
@pytest.mark.parametrize("script, main, data_path, output", [
    ("train_in1k.sh", "main.py", "data/imagenet", "work_dirs"),
    ("train_in1k_deepspeed.sh", "main_deepspeed.py", "data/imagenet", "work_dirs_deepspeed"),
    ("train_inat18.sh", "main.py", "data/inat2018", "work_dirs"),
])
def test_train_scripts_pass_the_published_defaults(tmp_path, script, main, data_path, output):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    srun = bin_dir / "srun"
    srun.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@"\n')  # prints what it would launch
    srun.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    for key in ("TRAIN_DATA_PATH", "TRAIN_OUTPUT", "TRAIN_MAIN"):
        env.pop(key, None)
    config = str(CONFIGS / "internimage_t_1k_224.yaml")
    run = subprocess.run(["bash", str(ROOT / "classification" / script), "part", "job", config,
                          "--output", "mine"], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    args = run.stdout.split("\n")
    launched = args[args.index("-u") + 1:]
    assert os.path.basename(launched[0]) == main
    assert launched[1:7] == ["--cfg", config, "--data-path", data_path, "--output", output]
    assert launched[7:9] == ["--output", "mine"]  # the user's arguments come last and win
    assert trainer.build_parser().parse_args(launched[1:9]).output == "mine"


# ----------------------------------------------------------------------------- main_accelerate.py
PUBLISHED_LAUNCHERS = ["dist_8gpus_ddp_fp16", "dist_8gpus_zero1", "dist_8gpus_zero1_wo_loss_scale",
                       "dist_8gpus_zero3_offload", "dist_8gpus_zero3_offload_wo_loss_scale"]


def test_accelerate_flags():
    from classification import main_accelerate

    args = main_accelerate.build_accelerate_parser().parse_args([])
    assert args.logger == "tensorboard" and args.disable_grad_scalar is False
    args = main_accelerate.build_accelerate_parser().parse_args(["--disable-grad-scalar", "--logger", "none"])
    assert args.disable_grad_scalar is True and args.logger == "none"
    ds = {"fp16": {"enabled": True, "loss_scale": 0, "initial_scale_power": 16}}
    main_accelerate.disable_loss_scaling(ds)
    assert ds["fp16"]["loss_scale"] == 1.0


@pytest.mark.parametrize("name", PUBLISHED_LAUNCHERS)
def test_published_launcher_files(name, tmp_path, monkeypatch):
    from accelerate.commands.config.config_args import load_config_from_file

    from classification import main_accelerate

    path = LAUNCH / f"{name}.yaml"
    launcher = load_config_from_file(str(path))  # accelerate's own parser accepts it
    raw = yaml.safe_load(path.read_text())
    assert raw["num_processes"] == 8
    if "ddp" in name:
        assert raw["distributed_type"] == "MULTI_GPU" and launcher.mixed_precision == "fp16"
        return
    ref = raw["deepspeed_config"]["deepspeed_config_file"]
    assert ref == f"classification/configs/accelerate/deepspeed/ds_config_{name[len('dist_8gpus_'):]}.json"
    ds = json.loads((ROOT / ref).read_text())
    assert ds["zero_optimization"]["stage"] == (3 if "zero3" in name else 1)
    assert ds["fp16"]["enabled"] is True
    # wo_loss_scale: the static loss scale 1; otherwise dynamic (0)
    assert ds["fp16"]["loss_scale"] == (1 if "wo_loss_scale" in name else 0)
    # launched from classification/ (as published) the repository-relative path is still found
    monkeypatch.chdir(ROOT / "classification")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", ref)
    main_accelerate.resolve_deepspeed_config_file()
    assert os.environ["ACCELERATE_DEEPSPEED_CONFIG_FILE"] == str(ROOT / ref)


# ----------------------------------------------------------------------------- ZeRO
def test_use_zero_with_one_process_is_a_plain_optimizer(cfg):
    import torch

    from classification.models import build_model

    config = _config("--cfg", cfg, "--use-zero")
    optimizer = trainer.build_training_optimizer(config, build_model(config))
    assert type(optimizer) is torch.optim.AdamW


def test_zero_shards_the_optimizer_state_over_two_ranks(tmp_path, cfg, data):
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "classification/main.py", "--cfg", cfg, "--data-path", data, "--output", str(out),
         "--use-zero", "--amp-opt-level", "O0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    folder = out / "tiny"
    held = []
    for rank in (0, 1):
        log = (folder / f"log_rank{rank}.txt").read_text()
        line = next(x for x in log.splitlines() if "ZeroRedundancyOptimizer over 2 ranks" in x)
        local, total = (int(w) for w in line.split("state of ")[1].split(" parameter")[0].split(" of "))
        held.append(local)
    assert sum(held) == total and 0 < min(held) and max(held) < total  # each rank holds a part
    checkpoint = load_checkpoint_file(str(folder / "ckpt_epoch_0.pth"))
    n_params = sum(len(g["params"]) for g in checkpoint["optimizer"]["param_groups"])
    assert len(checkpoint["optimizer"]["state"]) == n_params  # rank 0 saved every shard
    # the consolidated state has the plain format: one process resumes it with AdamW
    resumed = trainer.main(["--cfg", cfg, "--data-path", data, "--output", str(out), "--epochs", "2",
                            "--amp-opt-level", "O0"])
    assert resumed["epochs_run"] == 1
