# BEVFormer-Occ at toy sizes, for CPU tests and smoke runs: the intern-s config with sizes
# only changed (classes, wiring, losses, schedule as published). InternImage 16 channels
# [1, 1, 2, 1], 64-channel BEV of 20x20 cells over the published range (4 m cells, 16 heights
# of 0.4 m: the labels are 20x20x16), one encoder layer, 4 points per pillar, a 2-frame
# queue, no pretrained trunk. Sized for ~96x64 camera images (tests/autonomous_driving/
# synthetic_occ.py writes such a dataset).
_base_ = ['./bevformer_intern-s_occ.py']

point_cloud_range = [-40, -40, -1.0, 40, 40, 5.4]
_dim_ = 64
_pos_dim_ = _dim_ // 2
_ffn_dim_ = _dim_ * 2
_num_levels_ = 4
bev_h_ = 20
bev_w_ = 20
pillar_h_ = 16
queue_length = 2

model = dict(
    img_backbone=dict(channels=16, depths=[1, 1, 2, 1], groups=[1, 2, 4, 8], init_cfg=None),
    img_neck=dict(in_channels=[32, 64, 128], out_channels=_dim_),
    pts_bbox_head=dict(
        bev_h=bev_h_,
        bev_w=bev_w_,
        in_channels=_dim_,
        transformer=dict(
            embed_dims=_dim_,
            rotate_center=[bev_w_ // 2, bev_h_ // 2],
            encoder=dict(
                num_layers=1,
                num_points_in_pillar=4,
                transformerlayers=dict(
                    attn_cfgs=[
                        dict(type='TemporalSelfAttention', embed_dims=_dim_, num_levels=1, num_points=4,
                             num_bev_queue=2),
                        dict(
                            type='SpatialCrossAttention',
                            embed_dims=_dim_,
                            num_cams=6,
                            pc_range=point_cloud_range,
                            deformable_attention=dict(
                                type='MSDeformableAttention3D', embed_dims=_dim_, num_points=4,
                                num_levels=_num_levels_)),
                    ],
                    feedforward_channels=_ffn_dim_,
                    # the published FFN default is 256 wide: other widths name it
                    ffn_cfgs=dict(type='FFN', embed_dims=_dim_, feedforward_channels=_ffn_dim_, num_fcs=2,
                                  ffn_drop=0.1, act_cfg=dict(type='ReLU', inplace=True))))),
        positional_encoding=dict(num_feats=_pos_dim_, row_num_embed=bev_h_, col_num_embed=bev_w_)))

train_dataloader = dict(
    dataset=dict(bev_size=(bev_h_, bev_w_), pillar_h=pillar_h_, queue_length=queue_length))
val_dataloader = dict(dataset=dict(bev_size=(bev_h_, bev_w_), pillar_h=pillar_h_))
test_dataloader = val_dataloader
# 80 m / 20 cells in x and y, 6.4 m / 16 in z
val_evaluator = dict(voxel_size=[4.0, 4.0, 0.4])
test_evaluator = val_evaluator
