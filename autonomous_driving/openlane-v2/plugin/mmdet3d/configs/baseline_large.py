# ROAD_BEVFormer with ResNet-50: the published "base r50" row (OLS 0.292). The InternImage-S
# config with the trunk swapped: torchvision ResNet-50, C3-C5 (out_indices (1, 2, 3)), stem
# and first stage frozen, BatchNorm in eval mode; the FPN adds its fourth level by a stride-2
# conv on its last output (add_extra_convs='on_output', ReLU before it). Everything else as
# internimage-s.py.
#   ./tools/dist_train.sh plugin/mmdet3d/configs/baseline_large.py 8
_base_ = ['./internimage-s.py']

model = dict(
    img_backbone=dict(
        _delete_=True,
        type='ResNet',
        depth=50,
        num_stages=4,
        out_indices=(1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=False),
        norm_eval=True,
        style='pytorch',
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')),
    img_neck=dict(in_channels=[512, 1024, 2048]))
