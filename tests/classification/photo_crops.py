"""Tiny real-image classification data for the trainer tests: random crops of
scikit-image photos, one class per photo."""

from __future__ import annotations

import numpy as np
from PIL import Image

CLASSES = ("chelsea", "rocket", "hubble_deep_field")  # a cat, a rocket, the night sky


def photo_crops(n_per_class: int, seed: int, size: int = 40) -> list[tuple[int, Image.Image]]:
    """``n_per_class`` random square crops per photo, resized to ``size``, as (label, image)."""
    import skimage.data

    rng = np.random.default_rng(seed)
    out = []
    for label, name in enumerate(CLASSES):
        photo = getattr(skimage.data, name)()
        for _ in range(n_per_class):
            s = int(rng.integers(100, min(photo.shape[:2])))
            y = int(rng.integers(0, photo.shape[0] - s + 1))
            x = int(rng.integers(0, photo.shape[1] - s + 1))
            out.append((label, Image.fromarray(photo[y : y + s, x : x + s]).resize((size, size))))
    return out
