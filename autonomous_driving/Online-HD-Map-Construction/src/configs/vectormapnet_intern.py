# VectorMapNet with InternImage-S on Argoverse 2 (the published vectormapnet_intern.py,
# mAP 49.35): 7 ring cameras at 256x455 (padded to 256x480) -> IPM onto 4 planes of a
# 60 m x 30 m BEV (200x100 cells of 0.3 m) -> BEV neck (25x50) -> DGHead: a deformable
# detector of 120 two-corner element boxes, then an autoregressive polyline generator over
# quantised vertices (canvas 200x100). AdamW 1e-3, 130 epochs, batch 5 per GPU.
#   bash tools/dist_train.sh src/configs/vectormapnet_intern.py ${NUM_GPUS}
#   python tools/test.py src/configs/vectormapnet_intern.py CKPT --split val --eval
_base_ = ['./_base_/datasets/av2_online_map.py', 'mmdet::_base_/default_runtime.py']
custom_imports = dict(imports=['autonomous_driving.online_hdmap.registration'], allow_failed_imports=False)

roi_size = (60, 30)
canvas_size = (200, 100)
coords_dim = 2
num_class = 3
head_dim = 256
bev_channels = 128
num_points = 30  # published variable, unused by the model
img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
pretrained = 'https://huggingface.co/OpenGVLab/InternImage/resolve/main/internimage_s_1k_224.pth'

model = dict(
    type='VectorMapNet',
    model_name='VectorMapNet',
    data_preprocessor=dict(
        type='MultiViewDataPreprocessor',
        mean=img_norm_cfg['mean'],
        std=img_norm_cfg['std'],
        bgr_to_rgb=img_norm_cfg['to_rgb'],
        pad_size_divisor=32),
    backbone_cfg=dict(
        type='IPMEncoder',
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
            with_cp=False,
            out_indices=(0, 1, 2, 3),
            init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
        img_neck=dict(
            type='FPN',
            in_channels=[80, 160, 320, 640],
            out_channels=bev_channels,
            start_level=0,
            add_extra_convs=True,
            num_outs=4,
            norm_cfg=dict(type='BN2d'),
            relu_before_extra_convs=True),
        upsample=dict(zoom_size=(1, 2, 4, 8), in_channels=bev_channels, out_channels=bev_channels),
        xbound=[-roi_size[0] / 2, roi_size[0] / 2, 0.3],
        ybound=[-roi_size[1] / 2, roi_size[1] / 2, 0.3],
        heights=[-1.1, 0, 0.5, 1.1],
        out_channels=bev_channels,
        pretrained=None,
        num_cam=7),
    neck_input_channels=bev_channels,
    neck_cfg=None,  # the fixed conv / ResNet-18 layer1 BEV neck, 100x200 -> 25x50
    head_cfg=dict(
        type='DGHead',
        augmentation=True,
        augmentation_kwargs=dict(p=0.3, scale=0.01, bbox_type='xyxy'),
        det_net_cfg=dict(
            type='MapElementDetector',
            num_query=120,
            max_lines=35,
            bbox_size=2,
            canvas_size=canvas_size,
            separate_detect=False,
            discrete_output=False,
            num_classes=num_class,
            in_channels=bev_channels,
            score_thre=0.1,
            num_reg_fcs=2,
            num_points=4,
            iterative=False,
            pc_range=[-roi_size[0] / 2, -roi_size[1] / 2, -3, roi_size[0] / 2, roi_size[1] / 2, 5],
            sync_cls_avg_factor=True,
            transformer=dict(
                type='DeformableDetrTransformer_',
                encoder=dict(type='PlaceHolderEncoder', embed_dims=head_dim),
                decoder=dict(
                    type='DeformableDetrTransformerDecoder_',
                    num_layers=6,
                    return_intermediate=True,
                    transformerlayers=dict(
                        type='DetrTransformerDecoderLayer',
                        attn_cfgs=[
                            dict(type='MultiheadAttention', embed_dims=head_dim, num_heads=8, attn_drop=0.1,
                                 proj_drop=0.1),
                            dict(type='MultiScaleDeformableAttention', embed_dims=head_dim, num_heads=8,
                                 num_levels=1),
                        ],
                        ffn_cfgs=dict(type='FFN', embed_dims=head_dim, feedforward_channels=head_dim * 2,
                                      num_fcs=2, ffn_drop=0.1, act_cfg=dict(type='ReLU', inplace=True)),
                        operation_order=('norm', 'self_attn', 'norm', 'cross_attn', 'norm', 'ffn')))),
            positional_encoding=dict(type='SinePositionalEncoding', num_feats=head_dim // 2, normalize=True,
                                     offset=-0.5),
            loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=2.0),
            loss_reg=dict(type='LinesLoss', loss_weight=0.1),
            train_cfg=dict(
                assigner=dict(
                    type='HungarianLinesAssigner',
                    cost=dict(
                        type='MapQueriesCost',
                        cls_cost=dict(type='FocalLossCost', weight=2.0),
                        reg_cost=dict(type='BBoxCostC', weight=0.1),
                        iou_cost=dict(type='IoUCostC', weight=1, box_format='xyxy'))),
                sampler=dict(type='PseudoSampler'))),
        gen_net_cfg=dict(
            type='PolylineGenerator',
            in_channels=bev_channels,
            encoder_config=None,
            decoder_config=dict(
                layer_config=dict(d_model=head_dim, nhead=8, dim_feedforward=head_dim * 2, dropout=0.2,
                                  norm_first=True, re_zero=True),
                num_layers=6),
            class_conditional=True,
            num_classes=num_class,
            canvas_size=canvas_size,
            max_seq_length=500,
            decoder_cross_attention=False,
            use_discrete_vertex_embeddings=True,
            coord_dim=coords_dim),
        max_num_vertices=80,
        top_p_gen_model=0.9,
        sync_cls_avg_factor=True))

# AdamW, the backbone (IPM encoder: trunk, FPN, upsample, outconvs) at 0.1x, grad clip 3.5
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=1e-2),
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1)}),
    clip_grad=dict(max_norm=3.5, norm_type=2))
# published lr_config: step at epochs 100 and 120, linear warmup over 400 iterations from 0.1
max_epochs = 130
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=400),
    dict(type='MultiStepLR', by_epoch=True, begin=0, end=max_epochs, milestones=[100, 120], gamma=0.1),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=5)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
auto_scale_lr = dict(enable=False, base_batch_size=40)  # 8 GPUs x 5 samples (--autoscale-lr)
default_hooks = dict(logger=dict(interval=50), checkpoint=dict(interval=5))
# backbone.masked_embeds, det_net.label_embed and transformer.level_embeds get no gradient
find_unused_parameters = True
