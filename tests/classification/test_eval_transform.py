"""The evaluation transform is the published one (spec fidelity.md), checked on real photos
against a transform written from the spec with torchvision.transforms.functional."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

from classification.config import IMAGENET_MEAN, IMAGENET_STD, load_config_file
from classification.data import build_transform

CONFIG = "classification/configs/internimage_t_1k_224.yaml"


def _photo(name: str) -> Image.Image:
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)())


def _spec_transform(image: Image.Image, size: int, crop: bool) -> torch.Tensor:
    """fidelity.md: with TEST.CROP the short side resized to exactly IMG_SIZE (crop ratio 1.0,
    bicubic), then the centre IMG_SIZE square; without it a resize to IMG_SIZE x IMG_SIZE;
    ImageNet mean/std."""
    if crop:
        image = F.center_crop(F.resize(image, size, interpolation=InterpolationMode.BICUBIC), [size, size])
    else:
        image = F.resize(image, [size, size], interpolation=InterpolationMode.BICUBIC)
    return F.normalize(F.to_tensor(image), IMAGENET_MEAN, IMAGENET_STD)


def _config(size: int, crop: bool):
    return load_config_file(CONFIG, ["DATA.IMG_SIZE", str(size), "TEST.CROP", str(crop)])


# chelsea is 300x451 (landscape), rocket 427x640; astronaut is square (512x512)
@pytest.mark.parametrize("photo", ["chelsea", "rocket", "astronaut"])
@pytest.mark.parametrize("crop", [True, False])
@pytest.mark.parametrize("size", [224, 384])
def test_eval_transform_is_the_published_one(photo, crop, size):
    image = _photo(photo)
    ours = build_transform(False, _config(size, crop))(image)
    assert ours.shape == (3, size, size)
    torch.testing.assert_close(ours, _spec_transform(image, size, crop), rtol=0, atol=0)



def test_crop_ratio_is_one():
    """Not timm's 0.875: a square photo is resized to IMG_SIZE and nothing is cut."""
    image = _photo("astronaut")
    ours = build_transform(False, _config(224, True))(image)
    torch.testing.assert_close(ours, _spec_transform(image, 224, crop=False), rtol=0, atol=0)
