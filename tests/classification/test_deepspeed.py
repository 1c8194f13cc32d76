"""DeepSpeed ZeRO trainer (classification/main_deepspeed.py) on CPU with gloo: ZeRO-1 and
ZeRO-2 (+ CPU optimizer offload, bf16 autocast, EMA, accumulation) runs of a tiny InternImage
with the compiled DCNv3 op, auto-resume from ``latest``, consolidation to a plain file that
main.py and load_pretrained read, and two processes through train_in1k_deepspeed.sh."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import timm
import torch

# DeepSpeed JIT-builds a small shm op on its first CPU run (~45 s); keep it in a shared cache.
os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.expanduser("~/.cache/torch_extensions"))

from test_trainer import TINY_YAML, make_dataset, write_cfg  # noqa: E402

from classification import main as trainer  # noqa: E402
from classification import main_deepspeed as ds_main  # noqa: E402
from classification.config import load_config_file  # noqa: E402
from classification.models import build_model  # noqa: E402
from classification.models.checkpoint import load_pretrained, read_checkpoint  # noqa: E402
from classification.utils import epoch_history  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DS_YAML = TINY_YAML.replace("CORE_OP: DCNv3_pytorch", "CORE_OP: DCNv3").replace("EPOCHS: 5", "EPOCHS: 2")


@pytest.fixture(autouse=True)
def _restore_env():
    """main_deepspeed sets MASTER_ADDR/RANK/... defaults for a launcher-less run; undo them."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("ds_data"), "folder")


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    return write_cfg(tmp_path_factory.mktemp("ds_cfg"), DS_YAML)


def _run(cfg: str, data: str, out: str, *extra: str) -> dict:
    return ds_main.main(["--cfg", cfg, "--data-path", data, "--output", out, *extra])


def test_ds_config_follows_the_yacs_config():
    config = load_config_file(os.path.join(REPO, "classification/configs/internimage_t_1k_224.yaml"))
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    ds = ds_main.build_ds_config(config, 4, cpu, zero_stage=2, offload_optimizer="cpu")
    assert ds["train_micro_batch_size_per_gpu"] == config.DATA.BATCH_SIZE
    assert ds["train_batch_size"] == config.DATA.BATCH_SIZE * 4 * config.TRAIN.ACCUMULATION_STEPS
    assert ds["gradient_clipping"] == config.TRAIN.CLIP_GRAD
    assert ds["zero_optimization"]["stage"] == 2
    assert ds["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    config.defrost()
    config.AMP_OPT_LEVEL = "O1"
    assert ds_main.build_ds_config(config, 1, cpu)["torch_autocast"]["dtype"] == "bfloat16"  # bf16 on CPU
    if torch.cuda.is_available():
        assert ds_main.build_ds_config(config, 1, gpu)["fp16"]["loss_scale"] == 0  # dynamic
        assert ds_main.build_ds_config(config, 1, gpu, disable_grad_scaler=True)["fp16"]["loss_scale"] == 1.0


def test_zero1_trains_resumes_and_consolidates(cfg, data, tmp_path):
    out = str(tmp_path / "out")
    result = _run(cfg, data, out, "--zero-stage", "1", "--opts", "TRAIN.LR_LAYER_DECAY", "True")
    folder = result["output"]
    assert result["epochs_run"] == 2 and result["global_steps"] == 6
    history = epoch_history(os.path.join(folder, "metrics.jsonl"))
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    with open(os.path.join(folder, "latest")) as f:
        assert f.read().strip() == "epoch1"
    assert {"epoch1", "best"} <= set(os.listdir(folder)) and "epoch0" not in os.listdir(folder)  # keep 1
    # DeepSpeed's own file, with our client state, reads back safely without the opt-in
    client = read_checkpoint(os.path.join(folder, "epoch1", "mp_rank_00_model_states.pt"), trust=False)
    assert client["epoch"] == 1 and "lr_scheduler" in client and "max_accuracy" in client

    # auto-resume from <output>/latest: only the new epoch runs, the step count continues
    resumed = _run(
        cfg, data, out, "--zero-stage", "1", "--epochs", "3", "--opts", "TRAIN.LR_LAYER_DECAY", "True"
    )
    assert resumed["epochs_run"] == 1 and resumed["global_steps"] == 9
    assert [r["epoch"] for r in epoch_history(os.path.join(folder, "metrics.jsonl"))] == [0, 1, 2]

    # consolidation (given the save dir, i.e. its latest tag) -> plain {'model': ...}
    plain = str(tmp_path / "consolidated.pth")
    ds_main.main(["--consolidate", folder, "--out", plain])
    state = torch.load(plain, weights_only=True)
    model = build_model(load_config_file(cfg))
    model.load_state_dict(state["model"], strict=True)
    assert load_pretrained(build_model(load_config_file(cfg)), plain, strict=True).ok
    timm.models.load_checkpoint(build_model(load_config_file(cfg)), plain, strict=True)  # timm's reader too

    # the same accuracy from main.py on the plain file and from main_deepspeed on the ZeRO dir
    plain_eval = trainer.main(
        # O0: main.py's published default O1 would evaluate in bf16 autocast, DeepSpeed in fp32
        ["--cfg", cfg, "--data-path", data, "--output", out, "--tag", "e1", "--eval", "--resume", plain,
         "--amp-opt-level", "O0"]
    )
    zero_eval = _run(cfg, data, out, "--tag", "e2", "--eval", "--resume", os.path.join(folder, "epoch2"))
    assert plain_eval["acc1"] == zero_eval["acc1"] and plain_eval["val_loss"] == pytest.approx(
        zero_eval["val_loss"]
    )
    # and main.py fine-tunes from it
    tuned = trainer.main(
        [
            "--cfg",
            cfg,
            "--data-path",
            data,
            "--output",
            out + "-ft",  # a run of its own (outputs are <output>/<cfg stem>/, no tag level)
            "--tag",
            "ft",
            "--epochs",
            "1",
            "--pretrained",
            plain,
        ]
    )
    assert tuned["epochs_run"] == 1


def test_zero2_offload_bf16_ema_accumulation(cfg, data, tmp_path):
    out = str(tmp_path / "out")
    result = _run(
        cfg,
        data,
        out,
        "--zero-stage",
        "2",
        "--offload-optimizer",
        "cpu",
        "--amp-opt-level",
        "O1",
        "--accumulation-steps",
        "2",
        "--opts",
        "TRAIN.EMA.ENABLE",
        "True",
        "TRAIN.EMA.DECAY",
        "0.5",
    )
    folder = result["output"]
    history = epoch_history(os.path.join(folder, "metrics.jsonl"))
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert all(r["ema_acc1"] is not None for r in history) and "max_accuracy_ema" in result
    ema_file = str(tmp_path / "ema.pth")
    ds_main.consolidate(os.path.join(folder, "epoch1"), ema_file, ema=True)
    build_model(load_config_file(cfg)).load_state_dict(torch.load(ema_file)["model"], strict=True)
    assert os.path.isfile(os.path.join(folder, "ckpt_epoch_ema_best.pth"))


def test_two_processes_with_the_launch_script(cfg, data, tmp_path):
    out = str(tmp_path / "out")
    # PATH untouched: another ninja in the child would rebuild DeepSpeed's cached shm op (ninja
    # versions hash build commands differently); the script runs $PYTHON -m torch.distributed.run
    # when no torchrun is on PATH.
    env = {**os.environ, "GPUS": "2", "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.run(
        [
            "bash",
            os.path.join(REPO, "classification/train_in1k_deepspeed.sh"),
            cfg,
            "--data-path",
            data,
            "--output",
            out,
            "--zero-stage",
            "2",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = os.path.join(out, "tiny")
    files = os.listdir(os.path.join(folder, "epoch1"))
    assert sum(name.startswith("zero_pp_rank_") for name in files) == 2  # one optimizer shard per rank
    history = epoch_history(os.path.join(folder, "metrics.jsonl"))
    assert len(history) == 2
    plain = str(tmp_path / "c.pth")
    ds_main.consolidate(folder, plain)  # gathers both shards
    build_model(load_config_file(cfg)).load_state_dict(torch.load(plain)["model"], strict=True)


def test_launch_script_usage():
    proc = subprocess.run(
        ["bash", os.path.join(REPO, "classification/train_in1k_deepspeed.sh")], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "train_in1k_deepspeed.sh" in proc.stderr
