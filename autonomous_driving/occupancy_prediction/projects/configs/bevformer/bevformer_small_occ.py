# BEVFormer-Occ small: ResNet-50 (its last two stages, 2 FPN levels), one encoder layer, and
# camera images resized by 0.2 in training and 0.8 in test (published values, kept: the two
# scales differ). The rest, optimizer included, is the base (ResNet) recipe.
_base_ = ['./bevformer_base_occ.py']
_dim_ = 256
_num_levels_ = 2
point_cloud_range = [-40, -40, -1.0, 40, 40, 5.4]

model = dict(
    data_preprocessor=dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True),
    img_backbone=dict(
        _delete_=True,
        type='ResNet',
        depth=50,
        num_stages=4,
        out_indices=(2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=False),
        norm_eval=True,
        style='pytorch',
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')),
    img_neck=dict(in_channels=[1024, 2048], out_channels=_dim_, num_outs=_num_levels_),
    pts_bbox_head=dict(
        transformer=dict(
            num_feature_levels=_num_levels_,
            encoder=dict(
                num_layers=1,
                transformerlayers=dict(attn_cfgs=[
                    dict(type='TemporalSelfAttention', embed_dims=_dim_, num_levels=1, num_points=4,
                         num_bev_queue=2),
                    dict(
                        type='SpatialCrossAttention',
                        embed_dims=_dim_,
                        num_cams=6,
                        pc_range=point_cloud_range,
                        deformable_attention=dict(
                            type='MSDeformableAttention3D', embed_dims=_dim_, num_points=8,
                            num_levels=_num_levels_)),
                ])))))

_scale_pipeline_ = {
    'train': [
        dict(type='LoadMultiViewImageFromFiles', to_float32=True),
        dict(type='PhotoMetricDistortionMultiViewImage'),
        dict(type='LoadOccGTFromFile', data_root='data/occ3d-nus'),
        dict(type='RandomScaleImageMultiViewImage', scales=[0.2]),
        dict(type='PackMultiViewInputs', keys=['img', 'voxel_semantics', 'mask_lidar', 'mask_camera']),
    ],
    'test': [
        dict(type='LoadMultiViewImageFromFiles', to_float32=True),
        dict(type='LoadOccGTFromFile', data_root='data/occ3d-nus'),
        dict(type='RandomScaleImageMultiViewImage', scales=[0.8]),
        dict(type='PackMultiViewInputs', keys=['img', 'voxel_semantics', 'mask_lidar', 'mask_camera']),
    ],
}
train_dataloader = dict(dataset=dict(pipeline=_scale_pipeline_['train']))
val_dataloader = dict(dataset=dict(pipeline=_scale_pipeline_['test']))
test_dataloader = val_dataloader
load_from = None
