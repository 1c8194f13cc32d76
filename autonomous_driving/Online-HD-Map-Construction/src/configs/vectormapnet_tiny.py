# VectorMapNet at toy sizes, for CPU tests and smoke runs: vectormapnet_intern.py with sizes
# only changed (classes, canvas, wiring, losses, optimiser and schedule as published).
# InternImage 16 channels [1, 1, 2, 1] without pretrained weights, 32-channel BEV of 1.2 m
# cells (50x25), 20 element queries (top 10 kept), 2-layer 64-wide detector and generator
# decoders, at most 16 sampled vertices per line, cameras resized to 48x85 (padded to
# 64x96). Sized for tests/autonomous_driving/hdmap/synthetic_av2.py's 64x48 images.
_base_ = ['./vectormapnet_intern.py']

roi_size = (60, 30)
canvas_size = (200, 100)
head_dim = 64
bev_channels = 32
img_size = (48, 85)

model = dict(
    backbone_cfg=dict(
        img_backbone=dict(channels=16, depths=[1, 1, 2, 1], groups=[1, 2, 4, 8], init_cfg=None),
        img_neck=dict(in_channels=[16, 32, 64, 128], out_channels=bev_channels),
        upsample=dict(in_channels=bev_channels, out_channels=bev_channels),
        xbound=[-roi_size[0] / 2, roi_size[0] / 2, 1.2],
        ybound=[-roi_size[1] / 2, roi_size[1] / 2, 1.2],
        out_channels=bev_channels),
    neck_input_channels=bev_channels,
    head_cfg=dict(
        max_sample_length=16,
        det_net_cfg=dict(
            num_query=20,
            max_lines=10,
            in_channels=bev_channels,
            transformer=dict(
                encoder=dict(embed_dims=head_dim),
                decoder=dict(
                    num_layers=2,
                    transformerlayers=dict(
                        attn_cfgs=[
                            dict(type='MultiheadAttention', embed_dims=head_dim, num_heads=4, attn_drop=0.1,
                                 proj_drop=0.1),
                            dict(type='MultiScaleDeformableAttention', embed_dims=head_dim, num_heads=4,
                                 num_levels=1),
                        ],
                        ffn_cfgs=dict(embed_dims=head_dim, feedforward_channels=head_dim * 2)))),
            positional_encoding=dict(num_feats=head_dim // 2)),
        gen_net_cfg=dict(
            in_channels=bev_channels,
            decoder_config=dict(
                layer_config=dict(d_model=head_dim, nhead=4, dim_feedforward=head_dim * 2),
                num_layers=2))))

_pipeline_tail = [
    dict(type='LoadMultiViewImageFromFiles', color_type='unchanged'),
    dict(type='ResizeMultiViewImages', size=img_size, change_intrinsics=True),
    dict(type='PadMultiViewImages', size_divisor=32, change_intrinsics=True),
]
train_pipeline = [
    dict(type='VectorizeMap', coords_dim=2, roi_size=roi_size, simplify=True, normalize=True),
    dict(type='PolygonizeLocalMapBbox', canvas_size=canvas_size, coord_dim=2, num_class=3, threshold=4 / 200),
    *_pipeline_tail,
    dict(type='PackMapInputs', keys=['img', 'polys', 'vectors'], meta_keys=['token', 'ego2img']),
]
test_pipeline = [*_pipeline_tail, dict(type='PackMapInputs', keys=['img'], meta_keys=['token', 'ego2img'])]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(pipeline=test_pipeline))
test_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(pipeline=test_pipeline))
