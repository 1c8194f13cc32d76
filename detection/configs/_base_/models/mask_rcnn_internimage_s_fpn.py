# Mask R-CNN InternImage-S FPN: the published backbone variant and the FPN
# in_channels; configs set the weights (init_cfg), schedule and optimiser.
_base_ = ['./mask_rcnn_internimage_fpn.py']
model = dict(
    backbone=dict(
        channels=80,
        depths=[4, 4, 21, 4],
        groups=[5, 10, 20, 40],
        drop_path_rate=0.3,
        offset_scale=1.0,
        post_norm=True),
    neck=dict(in_channels=[80, 160, 320, 640]))
