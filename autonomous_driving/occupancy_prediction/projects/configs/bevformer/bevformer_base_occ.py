# BEVFormer-Occ with ResNet-101-DCN (caffe style), the published base model (mIoU 23.67):
# the intern-s model with the image trunk replaced, started from the FCOS3D checkpoint; caffe
# normalisation (BGR, mean only); AdamW with weight decay 0.01 and the trunk at 0.1x lr.
_base_ = ['./bevformer_intern-s_occ.py']
_dim_ = 256

model = dict(
    data_preprocessor=dict(mean=[103.530, 116.280, 123.675], std=[1.0, 1.0, 1.0], bgr_to_rgb=False),
    img_backbone=dict(
        _delete_=True,
        type='ResNet',
        depth=101,
        num_stages=4,
        out_indices=(1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN2d', requires_grad=False),
        norm_eval=True,
        style='caffe',
        dcn=dict(type='DCNv2', deform_groups=1, fallback_on_stride=False),
        stage_with_dcn=(False, False, True, True)),
    img_neck=dict(in_channels=[512, 1024, 2048], out_channels=_dim_))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={'img_backbone': dict(lr_mult=0.1)}),
    clip_grad=dict(max_norm=35, norm_type=2))
load_from = 'ckpts/r101_dcn_fcos3d_pretrain.pth'
