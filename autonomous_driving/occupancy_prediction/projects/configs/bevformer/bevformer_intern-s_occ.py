# BEVFormer-Occ with InternImage-S on Occ3D-nuScenes: the published model (mIoU 25.11).
# 6 cameras at 1600x900 (padded to 1600x928), a 4-frame temporal queue, a 200x200 BEV of
# 256 channels read as 16 heights, 4 encoder layers, a 3D-conv decoder to 200x200x16 voxels
# of 18 classes; AdamW 2e-4, 24 epochs, batch 1 per GPU x 8 GPUs.
#   ./tools/dist_train.sh projects/configs/bevformer/bevformer_intern-s_occ.py 8
#   ./tools/dist_test.sh projects/configs/bevformer/bevformer_intern-s_occ.py CKPT 8 [--eval_fscore]
_base_ = ['../datasets/custom_nus-3d.py', 'mmdet::_base_/default_runtime.py']
custom_imports = dict(
    imports=['autonomous_driving.occupancy_prediction.bevformer_occ'], allow_failed_imports=False)

point_cloud_range = [-40, -40, -1.0, 40, 40, 5.4]
voxel_size = [0.2, 0.2, 8]  # published, unused by the occupancy model
img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)

_dim_ = 256
_pos_dim_ = _dim_ // 2
_ffn_dim_ = _dim_ * 2
_num_levels_ = 4
bev_h_ = 200
bev_w_ = 200
pillar_h_ = 16
queue_length = 4  # each sequence holds 4 frames: 3 earlier ones and the current one
pretrained = 'https://huggingface.co/OpenGVLab/InternImage/resolve/main/mask_rcnn_internimage_s_fpn_3x_coco.pth'

model = dict(
    type='BEVFormerOcc',
    use_grid_mask=True,
    video_test_mode=True,
    data_preprocessor=dict(
        type='MultiViewDataPreprocessor',
        mean=img_norm_cfg['mean'],
        std=img_norm_cfg['std'],
        bgr_to_rgb=img_norm_cfg['to_rgb'],
        pad_size_divisor=32),
    img_backbone=dict(
        type='InternImage',
        core_op='DCNv3',
        channels=80,
        depths=[4, 4, 21, 4],
        groups=[5, 10, 20, 40],
        mlp_ratio=4.,
        drop_path_rate=0.3,
        norm_layer='LN',
        layer_scale=1.0,
        offset_scale=1.0,
        post_norm=True,
        with_cp=True,
        out_indices=(1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    img_neck=dict(
        type='FPN',
        in_channels=[160, 320, 640],
        out_channels=_dim_,
        start_level=0,
        add_extra_convs='on_output',
        num_outs=_num_levels_,
        relu_before_extra_convs=True),
    pts_bbox_head=dict(
        type='BEVFormerOccHead',
        bev_h=bev_h_,
        bev_w=bev_w_,
        num_query=900,  # published detection-head arguments, unused by the occupancy head
        in_channels=_dim_,
        sync_cls_avg_factor=True,
        num_classes=18,
        with_box_refine=True,
        as_two_stage=False,
        use_mask=False,
        pc_range=point_cloud_range,
        loss_occ=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
        transformer=dict(
            type='TransformerOcc',
            pillar_h=pillar_h_,
            num_classes=18,
            out_dim=32,
            norm_cfg=dict(type='BN'),
            norm_cfg_3d=dict(type='BN3d'),
            use_3d=True,
            use_conv=False,
            rotate_prev_bev=True,
            use_shift=True,
            use_can_bus=True,
            can_bus_norm=True,
            use_cams_embeds=True,
            rotate_center=[bev_w_ // 2, bev_h_ // 2],
            num_feature_levels=_num_levels_,
            num_cams=6,
            embed_dims=_dim_,
            encoder=dict(
                type='BEVFormerEncoder',
                num_layers=4,
                pc_range=point_cloud_range,
                num_points_in_pillar=8,
                return_intermediate=False,
                transformerlayers=dict(
                    type='BEVFormerLayer',
                    attn_cfgs=[
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
                    ],
                    feedforward_channels=_ffn_dim_,
                    ffn_dropout=0.1,
                    operation_order=('self_attn', 'norm', 'cross_attn', 'norm', 'ffn', 'norm')))),
        positional_encoding=dict(
            type='LearnedPositionalEncoding',
            num_feats=_pos_dim_,
            row_num_embed=bev_h_,
            col_num_embed=bev_w_)))

train_dataloader = dict(
    dataset=dict(bev_size=(bev_h_, bev_w_), pillar_h=pillar_h_, queue_length=queue_length))
val_dataloader = dict(dataset=dict(bev_size=(bev_h_, bev_w_), pillar_h=pillar_h_))
test_dataloader = val_dataloader

# AdamW with the layer-wise lr decay constructor at rate 1.0 (every group at the base lr; no
# weight decay on 1-D tensors, biases, norms and sampling offsets), gradients clipped at 35
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, weight_decay=0.05),
    constructor='CustomLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(num_layers=33, layer_decay_rate=1.0, depths=[4, 4, 21, 4]),
    clip_grad=dict(max_norm=35, norm_type=2))
# published lr_config: linear warmup over 500 iterations from 1/3, then cosine per epoch down
# to 1e-3 of the base lr
max_epochs = 24
param_scheduler = [
    dict(type='LinearLR', start_factor=1.0 / 3, by_epoch=False, begin=0, end=500),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, T_max=max_epochs,
         eta_min_ratio=1e-3),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
auto_scale_lr = dict(enable=False, base_batch_size=8)  # 8 GPUs x 1 sample (--autoscale-lr)
default_hooks = dict(logger=dict(interval=50), checkpoint=dict(interval=1))
