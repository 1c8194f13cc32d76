"""Small pieces for the sam/ tests: a tiny Segment Anything built from the package's own
blocks, and the published DINO-T detection config pointed at the detection tests' tiny
COCO set (tests/detection/tiny_det_data.py)."""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
for path in (REPO / "tests" / "detection", REPO / "detection"):  # tiny_det_data; mmdet_custom
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from tiny_det_data import CLASSES, write_tiny_coco  # noqa: E402

DINO_T = REPO / "detection/configs/coco/dino_4scale_internimage_t_1x_coco_layer_wise_lr.py"
TINY_SAM = "vit_test"  # the --sam_type the tests register for tiny_sam
__all__ = ["CLASSES", "DINO_T", "REPO", "TINY_SAM", "tiny_coco_config", "tiny_sam", "write_tiny_coco"]


def tiny_sam():
    """SAM's architecture (ViT image encoder with windowed + global attention, prompt
    encoder, two-way transformer mask decoder), scaled down: 256 px input, a 32-wide
    2-block encoder. The published vit_b at 1024 px costs ~15 s per image on one CPU
    thread; this one a few milliseconds."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    size, patch, dim = 256, 16, 32
    return Sam(
        image_encoder=ImageEncoderViT(img_size=size, patch_size=patch, embed_dim=dim, depth=2, num_heads=2,
                                      mlp_ratio=2.0, out_chans=dim, qkv_bias=True, use_rel_pos=True,
                                      window_size=4, global_attn_indexes=(1,),
                                      norm_layer=partial(torch.nn.LayerNorm, eps=1e-6)),
        prompt_encoder=PromptEncoder(embed_dim=dim, image_embedding_size=(size // patch, size // patch),
                                     input_image_size=(size, size), mask_in_chans=4),
        mask_decoder=MaskDecoder(transformer_dim=dim, num_multimask_outputs=3, iou_head_depth=1,
                                 iou_head_hidden_dim=16,
                                 transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=64,
                                                               num_heads=2)),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375]).eval()


def tiny_coco_config(root: Path, ann: Path, max_per_img: int = 8) -> Path:
    """The published DINO-T config on the tiny set: no pretrained download, 3 classes, small
    images, ``max_per_img`` boxes per image (a random detector's top scores)."""
    text = f"""
_base_ = [{str(DINO_T)!r}]
model = dict(backbone=dict(init_cfg=None, with_cp=False), bbox_head=dict(num_classes=3),
             num_queries=50, test_cfg=dict(max_per_img={max_per_img}))
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 96), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
test_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False, dataset=dict(
    data_root={str(root)!r}, metainfo=dict(classes={CLASSES!r}), ann_file={ann.name!r},
    data_prefix=dict(img='images/'), pipeline=test_pipeline))
val_dataloader = test_dataloader
test_evaluator = dict(ann_file={str(ann)!r})
val_evaluator = test_evaluator
default_hooks = dict(logger=dict(interval=1))
"""
    path = root / "dino_t_tiny.py"
    path.write_text(text)
    return path
