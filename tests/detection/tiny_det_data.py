"""A tiny real-photo instance-segmentation set in COCO format for the detection tests:
three scikit-image photos (a person, a cat, a coffee cup), downscaled, one box and one
polygon mask per photo around the subject."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("person", "cat", "cup")
# photo, class, subject box (x1, y1, x2, y2) in the original photo's pixels
SUBJECTS = (
    ("astronaut", "person", (40, 10, 450, 512)),
    ("chelsea", "cat", (110, 20, 400, 300)),
    ("coffee", "cup", (100, 30, 480, 330)),
)


def _ellipse(box: tuple[float, float, float, float], points: int = 16) -> list[float]:
    x1, y1, x2, y2 = box
    cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
    polygon = []
    for k in range(points):
        angle = 2 * math.pi * k / points
        polygon += [round(cx + rx * math.cos(angle), 2), round(cy + ry * math.sin(angle), 2)]
    return polygon


def write_tiny_coco(root: Path, width: int = 160) -> Path:
    """Writes ``root/images/*.jpg`` and ``root/annotations.json``; returns the json path."""
    import skimage.data

    (root / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_id, (name, label, box) in enumerate(SUBJECTS, start=1):
        photo = getattr(skimage.data, name)()
        if photo.ndim == 2:
            photo = np.stack([photo] * 3, axis=-1)
        scale = width / photo.shape[1]
        height = round(photo.shape[0] * scale)
        Image.fromarray(photo[..., :3]).resize((width, height)).save(root / "images" / f"{name}.jpg")
        images.append(dict(id=image_id, file_name=f"{name}.jpg", width=width, height=height))
        x1, y1, x2, y2 = (min(v * scale, limit) for v, limit in zip(box, (width, height) * 2))
        annotations.append(dict(
            id=image_id, image_id=image_id, category_id=CLASSES.index(label) + 1, iscrowd=0,
            bbox=[x1, y1, x2 - x1, y2 - y1], area=math.pi * (x2 - x1) * (y2 - y1) / 4,
            segmentation=[_ellipse((x1, y1, x2, y2))]))
    categories = [dict(id=i + 1, name=name) for i, name in enumerate(CLASSES)]
    path = root / "annotations.json"
    path.write_text(json.dumps(dict(images=images, annotations=annotations, categories=categories)))
    return path
