# DINO-4scale InternImage-G, Objects365 pretraining -> COCO fine-tuning, single scale: the
# InternImage-H recipe (20k iterations, 1 image per GPU, layer-wise lr decay 0.94, 1e-3 lr
# on the deformable-attention offsets) on the G backbone (3B parameters), with the
# published memory-saving EfficientFFN (split 4, activation checkpointing) in every
# transformer layer. Published box mAP 65.3. The run starts from the Objects365 detector:
# pass it with --cfg-options load_from=... (published files convert on load).
_base_ = ['./dino_4scale_internimage_h_objects365_coco_ss.py']
efficient_ffn = dict(type='EfficientFFN', split=4, use_checkpoint=True)
model = dict(
    backbone=dict(
        channels=512,
        depths=[2, 2, 48, 4],
        groups=[16, 32, 64, 128],
        drop_path_rate=0.5,
        layer_scale=None,
        offset_scale=1.0,
        post_norm=True,
        dw_kernel_size=5,
        res_post_norm=False,
        level2_post_norm=True,
        level2_post_norm_block_ids=[5, 11, 17, 23, 29, 35, 41, 47],
        center_feature_scale=True,
        with_cp=True,
        init_cfg=None),
    neck=dict(in_channels=[1024, 2048, 4096]),
    encoder=dict(layer_cfg=dict(ffn_cfg=efficient_ffn)),
    decoder=dict(layer_cfg=dict(ffn_cfg=efficient_ffn)))
optim_wrapper = dict(paramwise_cfg=dict(num_layers=56, depths=[2, 2, 48, 4]))
