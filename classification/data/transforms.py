"""Train / eval image transforms built from the AUG, DATA and TEST config keys."""

from __future__ import annotations

from collections.abc import Callable

from timm.data import create_transform
from torchvision import transforms as T
from yacs.config import CfgNode

_INTERPOLATIONS = {
    "bicubic": T.InterpolationMode.BICUBIC,
    "bilinear": T.InterpolationMode.BILINEAR,
    "nearest": T.InterpolationMode.NEAREST,
}


def _interpolation(config: CfgNode) -> str:
    name = config.DATA.INTERPOLATION
    if name not in _INTERPOLATIONS and name != "random":
        raise ValueError(
            f"DATA.INTERPOLATION must be one of {sorted(_INTERPOLATIONS)} or 'random', got {name!r}"
        )
    return name


def build_transform(is_train: bool, config: CfgNode) -> Callable:
    """RandomResizedCrop + flip + RandAugment + colour jitter + random erasing for training
    (timm's ImageNet recipe). Eval: with TEST.CROP the short side resized to IMG_SIZE and the
    centre IMG_SIZE square cropped, else a resize to IMG_SIZE x IMG_SIZE; then ToTensor and
    the AUG.MEAN / AUG.STD normalisation."""
    size = config.DATA.IMG_SIZE
    interpolation = _interpolation(config)
    mean, std = tuple(config.AUG.MEAN), tuple(config.AUG.STD)
    if is_train:
        auto_augment = config.AUG.AUTO_AUGMENT
        transform = create_transform(
            input_size=size,
            is_training=True,
            color_jitter=config.AUG.COLOR_JITTER if config.AUG.COLOR_JITTER > 0 else None,
            auto_augment=auto_augment if auto_augment and auto_augment != "none" else None,
            re_prob=config.AUG.REPROB,
            re_mode=config.AUG.REMODE,
            re_count=config.AUG.RECOUNT,
            hflip=config.AUG.HFLIP,
            interpolation=interpolation,
            mean=mean,
            std=std,
        )
        if size <= 32:
            # CIFAR-sized inputs: a padded random crop instead of RandomResizedCrop.
            transform.transforms[0] = T.RandomCrop(size, padding=4)
        return transform
    mode = _INTERPOLATIONS.get(interpolation, T.InterpolationMode.BICUBIC)
    if config.TEST.CROP:
        # As published (and measured): crop ratio 1.0, i.e. the short side resized to exactly
        # IMG_SIZE, then the centre IMG_SIZE x IMG_SIZE (only the long side loses pixels).
        steps = [T.Resize(size, interpolation=mode), T.CenterCrop(size)]
    else:
        steps = [T.Resize((size, size), interpolation=mode)]
    return T.Compose([*steps, T.ToTensor(), T.Normalize(mean, std)])
