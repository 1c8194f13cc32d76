# Mask R-CNN InternImage-B FPN: the published backbone variant and the FPN
# in_channels; configs set the weights (init_cfg), schedule and optimiser.
_base_ = ['./mask_rcnn_internimage_fpn.py']
model = dict(
    backbone=dict(
        channels=112,
        depths=[4, 4, 21, 4],
        groups=[7, 14, 28, 56],
        drop_path_rate=0.4,
        offset_scale=1.0,
        post_norm=True),
    neck=dict(in_channels=[112, 224, 448, 896]))
