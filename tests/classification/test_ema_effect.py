"""TRAIN.EMA has the effect its decay implies, in all three trainers (main.py, DeepSpeed,
Accelerate): starting from known weights w0 (--pretrained) and taking exactly one optimizer
update to w1 (one batch of all 24 images, one epoch), the saved EMA equals
``decay * w0 + (1 - decay) * w1``: it moved away from w0 and differs from the live model."""

from __future__ import annotations

import glob
import os

import pytest
import torch

os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.expanduser("~/.cache/torch_extensions"))

from test_trainer import TINY_YAML, make_dataset, tiny_config, write_cfg  # noqa: E402

from classification.models import build_model  # noqa: E402
from classification.models.checkpoint import read_checkpoint  # noqa: E402

DECAY = 0.75
# one update of a large lr (no warm-up): w1 - w0 is far above float noise
ONE_UPDATE = [
    "--epochs",
    "1",
    "--batch-size",
    "24",
    "--opts",
    "TRAIN.WARMUP_EPOCHS",
    "0",
    "TRAIN.BASE_LR",
    "1.0",
    "TRAIN.EMA.ENABLE",
    "True",
    "TRAIN.EMA.DECAY",
    str(DECAY),
]


@pytest.fixture(autouse=True)
def _restore_env():
    """The DeepSpeed/Accelerate trainers set launcher variables; Accelerate keeps singletons."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
    try:
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=True)
    except ImportError:
        pass


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("ema_data"), "folder")  # 24 train images


def _setup(tmp_path, core_op: str = "DCNv3_pytorch") -> tuple[str, str, dict]:
    """(config file, pretrained file, w0): w0 is a fresh tiny model's state_dict."""
    text = TINY_YAML.replace("CORE_OP: DCNv3_pytorch", f"CORE_OP: {core_op}")
    cfg = write_cfg(tmp_path, text)
    torch.manual_seed(123)
    model = build_model(tiny_config(**{"MODEL.INTERN_IMAGE.CORE_OP": core_op}))
    w0 = {k: v.detach().clone() for k, v in model.state_dict().items()}
    pretrained = str(tmp_path / "w0.pth")
    torch.save({"model": w0}, pretrained)
    return cfg, pretrained, w0


def _assert_ema_follows_the_decay(w0: dict, w1: dict, ema: dict) -> None:
    floats = [k for k, v in w0.items() if v.is_floating_point()]
    assert set(floats) <= set(w1) and set(floats) <= set(ema)
    moved = max((w1[k].float() - w0[k].float()).abs().max().item() for k in floats)
    assert moved > 1e-3, "the model did not train: the test would prove nothing"
    for k in floats:
        want = DECAY * w0[k].float() + (1 - DECAY) * w1[k].float()
        torch.testing.assert_close(
            ema[k].float(), want, atol=1e-6, rtol=1e-5, msg=lambda m, k=k: f"ema {k}: {m}"
        )
    # the EMA is neither the start nor the live model
    assert max((ema[k].float() - w0[k].float()).abs().max().item() for k in floats) > 1e-4
    assert max((ema[k].float() - w1[k].float()).abs().max().item() for k in floats) > 1e-4


def test_main_ema_follows_its_decay(tmp_path, data):
    from classification import main as trainer

    cfg, pretrained, w0 = _setup(tmp_path)
    result = trainer.main(
        [
            "--cfg",
            cfg,
            "--data-path",
            data,
            "--output",
            str(tmp_path / "out"),
            "--pretrained",
            pretrained,
            "--amp-opt-level",
            "O0",
            *ONE_UPDATE,
        ]
    )
    checkpoint = read_checkpoint(os.path.join(result["output"], "ckpt_epoch_0.pth"))
    _assert_ema_follows_the_decay(w0, checkpoint["model"], checkpoint["ema"])


def test_deepspeed_ema_follows_its_decay(tmp_path, data):
    pytest.importorskip("deepspeed")
    from classification import main_deepspeed as ds_main

    cfg, pretrained, w0 = _setup(tmp_path, "DCNv3")
    result = ds_main.main(
        [
            "--cfg",
            cfg,
            "--data-path",
            data,
            "--output",
            str(tmp_path / "out"),
            "--pretrained",
            pretrained,
            "--zero-stage",
            "1",
            "--amp-opt-level",
            "O0",
            *ONE_UPDATE,
        ]
    )
    folder = result["output"]
    w1 = ds_main.read_zero_weights(folder)
    ema = ds_main.read_zero_weights(folder, ema=True)
    _assert_ema_follows_the_decay(w0, w1, ema)


def test_accelerate_ema_follows_its_decay(tmp_path, data):
    pytest.importorskip("accelerate")
    from safetensors.torch import load_file

    from classification import main_accelerate as acc_main

    cfg, pretrained, w0 = _setup(tmp_path)
    result = acc_main.main(
        [
            "--cfg",
            cfg,
            "--data-path",
            data,
            "--output",
            str(tmp_path / "out"),
            "--pretrained",
            pretrained,
            *ONE_UPDATE,
        ]
    )
    state = acc_main.latest_state(result["output"])
    (model_file,) = glob.glob(os.path.join(state, "model*.safetensors"))
    w1 = load_file(model_file)
    # registered checkpointables: the run counters and the EMA (ModelEmaV3.state_dict(): module.*)
    customs = [
        torch.load(f, map_location="cpu", weights_only=True)
        for f in sorted(glob.glob(os.path.join(state, "custom_checkpoint_*.pkl")))
    ]
    (ema_state,) = [
        c for c in customs if isinstance(c, dict) and any(str(k).startswith("module.") for k in c)
    ]
    ema = {k.removeprefix("module."): v for k, v in ema_state.items()}
    _assert_ema_follows_the_decay(w0, w1, ema)
