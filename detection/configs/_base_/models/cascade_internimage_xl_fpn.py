# Cascade Mask R-CNN InternImage-XL FPN: the published backbone variant and the FPN
# in_channels; configs set the weights (init_cfg), schedule and optimiser.
_base_ = ['./cascade_internimage_fpn.py']
model = dict(
    backbone=dict(
        channels=192,
        depths=[5, 5, 24, 5],
        groups=[12, 24, 48, 96],
        drop_path_rate=0.4,
        offset_scale=2.0,
        post_norm=True),
    neck=dict(in_channels=[192, 384, 768, 1536]))
