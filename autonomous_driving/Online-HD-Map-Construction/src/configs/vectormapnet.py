# VectorMapNet with ResNet-50-DCN (caffe) on Argoverse 2: the published base config
# (mAP 42.79). Everything as vectormapnet_intern.py except the image trunk and the FPN
# inputs (ResNet-50 stages: 256 / 512 / 1024 / 2048 channels). The spec names only
# 'ResNet-50-DCN caffe' and its weights: the stage options below (frozen stem, frozen BN,
# DCNv2 in stages 3-4) are the usual mmdet3d ones, an assumption; the normalisation is kept.
#   bash tools/dist_train.sh src/configs/vectormapnet.py ${NUM_GPUS}
_base_ = ['./vectormapnet_intern.py']

model = dict(
    backbone_cfg=dict(
        img_backbone=dict(
            _delete_=True,
            type='ResNet',
            depth=50,
            num_stages=4,
            out_indices=(0, 1, 2, 3),
            frozen_stages=1,
            norm_cfg=dict(type='BN', requires_grad=False),
            norm_eval=True,
            style='caffe',
            dcn=dict(type='DCNv2', deform_groups=1, fallback_on_stride=False),
            stage_with_dcn=(False, False, True, True),
            init_cfg=dict(type='Pretrained', checkpoint='open-mmlab://detectron2/resnet50_caffe')),
        img_neck=dict(in_channels=[256, 512, 1024, 2048])))
