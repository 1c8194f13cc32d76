"""Helpers of the segmentation tests: paths, a script runner (the scripts run as users
run them, in a subprocess with the venv's python), the tiny real-photo dataset writer
and a tiny training config."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
SEG = ROOT / "segmentation"
CONFIGS = SEG / "configs"
T_ADE = CONFIGS / "ade20k" / "upernet_internimage_t_512_160k_ade20k.py"

# three photos from scikit-image; labels: luminance split into dark / mid / bright
PHOTOS = ("astronaut", "chelsea", "coffee")
CLASSES = ("dark", "mid", "bright")
PALETTE = [[40, 40, 160], [40, 160, 40], [220, 200, 60]]
SIZE = 48


def run_script(script: str, *args: str, cwd: Path | None = None, timeout: int = 300
               ) -> subprocess.CompletedProcess:
    """``python segmentation/<script> args...``; segmentation/ goes on PYTHONPATH so that
    configs' ``custom_imports=['mmseg_custom']`` resolve in the child."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SEG), env.get("PYTHONPATH", "")) if p)
    env.setdefault("OMP_NUM_THREADS", "2")
    return subprocess.run([sys.executable, str(SEG / script), *map(str, args)], cwd=cwd or ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def luminance_labels(rgb: np.ndarray) -> np.ndarray:
    gray = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.digitize(gray, [85.0, 170.0]).astype(np.uint8)


def write_tiny_dataset(root: Path) -> Path:
    """``root/img/<photo>.png`` (SIZE x SIZE RGB) and ``root/ann/<photo>.png`` (labels 0..2)."""
    import skimage.data

    (root / "img").mkdir()
    (root / "ann").mkdir()
    for name in PHOTOS:
        photo = getattr(skimage.data, name)()
        image = Image.fromarray(photo).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)
        image.save(root / "img" / f"{name}.png")
        Image.fromarray(luminance_labels(np.asarray(image))).save(root / "ann" / f"{name}.png")
    return root


def tiny_config(data_root: Path, path: Path, max_iters: int, lr: float = 2e-3) -> Path:
    """A config that inherits the real UperNet InternImage-T ADE20K config and swaps in the
    tiny dataset, 3 classes, random init, narrower heads (64/32 channels instead of 512/256:
    they dominate the cost at this size), a short constant-lr schedule and no validation
    during training (test.py evaluates)."""
    path.write_text(f'''
_base_ = [{str(T_ADE)!r}]
crop_size = ({SIZE}, {SIZE})
classes = {CLASSES!r}
metainfo = dict(classes=classes, palette={PALETTE!r})
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(init_cfg=None, drop_path_rate=0.0),
    decode_head=dict(num_classes=3, channels=64),
    auxiliary_head=dict(num_classes=3, channels=32))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=crop_size, keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
dataset = dict(
    _delete_=True, type='BaseSegDataset', data_root={str(data_root)!r}, metainfo=metainfo,
    img_suffix='.png', seg_map_suffix='.png', data_prefix=dict(img_path='img', seg_map_path='ann'))
train_dataloader = dict(batch_size=3, num_workers=0, persistent_workers=False,
                        dataset=dict(dataset, pipeline=train_pipeline))
test_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                       dataset=dict(dataset, pipeline=test_pipeline))
optim_wrapper = dict(optimizer=dict(lr={lr}))
param_scheduler = []
train_cfg = dict(max_iters={max_iters}, val_interval=1000)
val_cfg = None
val_dataloader = None
val_evaluator = None
default_hooks = dict(
    logger=dict(interval=1),
    checkpoint=dict(interval=4, max_keep_ckpts=2, save_best=None))
''')
    return path
