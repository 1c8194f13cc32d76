# Cascade Mask R-CNN InternImage-L FPN: the published backbone variant and the FPN
# in_channels; configs set the weights (init_cfg), schedule and optimiser.
_base_ = ['./cascade_internimage_fpn.py']
model = dict(
    backbone=dict(
        channels=160,
        depths=[5, 5, 22, 5],
        groups=[10, 20, 40, 80],
        drop_path_rate=0.4,
        offset_scale=2.0,
        post_norm=True),
    neck=dict(in_channels=[160, 320, 640, 1280]))
