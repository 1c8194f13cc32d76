# Mask R-CNN InternImage-T FPN: the published backbone variant and the FPN
# in_channels; configs set the weights (init_cfg), schedule and optimiser.
_base_ = ['./mask_rcnn_internimage_fpn.py']
model = dict(
    backbone=dict(
        channels=64,
        depths=[4, 4, 18, 4],
        groups=[4, 8, 16, 32],
        drop_path_rate=0.2,
        offset_scale=1.0,
        post_norm=False),
    neck=dict(in_channels=[64, 128, 256, 512]))
