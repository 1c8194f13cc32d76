# ROAD_BEVFormer at toy sizes, for CPU tests and smoke runs: internimage-s.py with sizes only
# changed (classes, wiring, losses, schedule as published). InternImage 16 channels
# [1, 1, 2, 1], 32-channel features, a 10x20 BEV over the published range, one encoder layer
# with 2 pillar points, 2 decoder layers in each head, 10 lane and 10 traffic-element queries,
# no pretrained trunk, single-process loaders. Sized for ~64x48 camera images
# (tests/autonomous_driving/openlane/synthetic_openlane.py writes such a dataset).
_base_ = ['./internimage-s.py']

point_cloud_range = [-51.2, -25.6, -2.3, 51.2, 25.6, 1.7]
num_cams = 7
_dim_ = 32
_pos_dim_ = _dim_ // 2
_ffn_dim_ = _dim_ * 2
_num_levels_ = 4
bev_h_ = 10
bev_w_ = 20
num_query = 10

model = dict(
    img_backbone=dict(channels=16, depths=[1, 1, 2, 1], groups=[1, 2, 4, 8], drop_path_rate=0.0,
                      init_cfg=None),
    img_neck=dict(in_channels=[16, 32, 64, 128], out_channels=_dim_),
    bev_constructor=dict(
        embed_dims=_dim_,
        bev_h=bev_h_,
        bev_w=bev_w_,
        rotate_center=[bev_h_ // 2, bev_w_ // 2],
        encoder=dict(
            num_layers=1,
            num_points_in_pillar=2,
            transformerlayers=dict(
                attn_cfgs=[
                    dict(type='TemporalSelfAttention', embed_dims=_dim_, num_levels=1,
                         double_value_proj=True),
                    dict(
                        type='SpatialCrossAttention',
                        embed_dims=_dim_,
                        num_cams=num_cams,
                        pc_range=point_cloud_range,
                        deformable_attention=dict(
                            type='MSDeformableAttention3D', embed_dims=_dim_, num_points=4,
                            num_levels=_num_levels_)),
                ],
                feedforward_channels=_ffn_dim_,
                # the published FFN default is 256 wide: other widths name it
                ffn_cfgs=dict(type='FFN', embed_dims=_dim_, feedforward_channels=_ffn_dim_, num_fcs=2,
                              ffn_drop=0.1, act_cfg=dict(type='ReLU', inplace=True)))),
        positional_encoding=dict(num_feats=_pos_dim_, row_num_embed=bev_h_, col_num_embed=bev_w_)),
    pts_bbox_head=dict(
        in_channels=_dim_,
        num_query=num_query,
        bev_h=bev_h_,
        bev_w=bev_w_,
        transformer=dict(
            embed_dims=_dim_,
            decoder=dict(
                num_layers=2,
                transformerlayers=dict(
                    attn_cfgs=[
                        dict(type='MultiheadAttention', embed_dims=_dim_, num_heads=8, dropout=0.1),
                        dict(type='CustomMSDeformableAttention', embed_dims=_dim_, num_levels=1),
                    ],
                    feedforward_channels=_ffn_dim_,
                    ffn_cfgs=dict(type='FFN', embed_dims=_dim_, feedforward_channels=_ffn_dim_, num_fcs=2,
                                  ffn_drop=0.1, act_cfg=dict(type='ReLU', inplace=True)))))),
    bbox_head=dict(
        num_query=num_query,
        in_channels=_dim_,
        transformer=dict(
            encoder=dict(
                num_layers=2,
                transformerlayers=dict(
                    attn_cfgs=dict(type='MultiScaleDeformableAttention', embed_dims=_dim_),
                    feedforward_channels=_ffn_dim_,
                    ffn_cfgs=dict(type='FFN', embed_dims=_dim_, feedforward_channels=_ffn_dim_, num_fcs=2,
                                  ffn_drop=0.1, act_cfg=dict(type='ReLU', inplace=True)))),
            decoder=dict(
                num_layers=2,
                transformerlayers=dict(
                    attn_cfgs=[
                        dict(type='MultiheadAttention', embed_dims=_dim_, num_heads=8, dropout=0.1),
                        dict(type='MultiScaleDeformableAttention', embed_dims=_dim_),
                    ],
                    feedforward_channels=_ffn_dim_,
                    ffn_cfgs=dict(type='FFN', embed_dims=_dim_, feedforward_channels=_ffn_dim_, num_fcs=2,
                                  ffn_drop=0.1, act_cfg=dict(type='ReLU', inplace=True))))),
        positional_encoding=dict(num_feats=_pos_dim_)),
    lclc_head=dict(in_channels_o1=_dim_, in_channels_o2=_dim_),
    lcte_head=dict(in_channels_o1=_dim_, in_channels_o2=_dim_))

train_dataloader = dict(num_workers=0, persistent_workers=False)
val_dataloader = dict(num_workers=0, persistent_workers=False)
test_dataloader = val_dataloader
default_hooks = dict(logger=dict(interval=1))
