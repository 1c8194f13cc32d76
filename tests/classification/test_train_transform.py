"""The real ImageNet training transform runs end to end: at IMG_SIZE 64 (the other trainer
tests run at 32 px, where RandomResizedCrop gives way to a padded crop) the train
transform starts with timm's RandomResizedCropAndInterpolation, the eval transform resizes
the short side and centre-crops, and one epoch of a tiny model trains through both."""

from __future__ import annotations

import math
import os

import torch
from test_trainer import TINY_YAML, make_dataset, tiny_config, write_cfg
from timm.data.transforms import RandomResizedCropAndInterpolation
from torchvision import transforms as T

from classification import main as trainer
from classification.data import build_loader
from classification.utils import epoch_history

SIZE = 64
YAML_64 = TINY_YAML.replace("IMG_SIZE: 32", f"IMG_SIZE: {SIZE}").replace("AUTO_AUGMENT: none",
                                                                         "AUTO_AUGMENT: rand-m9-mstd0.5-inc1")


def test_train_and_eval_transforms_at_64_px(tmp_path):
    data = make_dataset(tmp_path / "data", "folder", n_train=4, n_val=2)
    config = tiny_config(**{"DATA.DATA_PATH": data, "DATA.IMG_SIZE": SIZE, "TEST.CROP": True})
    ds_train, ds_val, loader_train, loader_val, _ = build_loader(config, rank=0, world_size=1)
    assert isinstance(ds_train.transform.transforms[0], RandomResizedCropAndInterpolation)
    assert ds_train.transform.transforms[0].size == (SIZE, SIZE)
    eval_steps = ds_val.transform.transforms
    assert isinstance(eval_steps[0], T.Resize) and eval_steps[0].size == SIZE  # short side
    assert isinstance(eval_steps[1], T.CenterCrop)
    images, _ = next(iter(loader_train))
    assert images.shape[1:] == (3, SIZE, SIZE)
    # random crops: two passes over the same image differ
    first, second = ds_train[0][0], ds_train[0][0]
    assert first.shape == (3, SIZE, SIZE) and not torch.equal(first, second)
    images, _ = next(iter(loader_val))
    assert images.shape[1:] == (3, SIZE, SIZE)


def test_one_epoch_at_64_px_with_the_real_transform(tmp_path):
    data = make_dataset(tmp_path / "data", "folder", n_train=4, n_val=2)
    cfg = write_cfg(tmp_path, YAML_64)
    result = trainer.main(["--cfg", cfg, "--data-path", data, "--output", str(tmp_path / "out"),
                           "--epochs", "1", "--batch-size", "4", "--opts", "TEST.CROP", "True"])
    assert result["epochs_run"] == 1 and math.isfinite(result["train_loss"])
    (record,) = epoch_history(os.path.join(result["output"], "metrics.jsonl"))
    assert record["updates"] == 3  # 12 images, batch 4
    with open(os.path.join(result["output"], "config.json")) as f:
        assert f'"IMG_SIZE": {SIZE}' in f.read()
