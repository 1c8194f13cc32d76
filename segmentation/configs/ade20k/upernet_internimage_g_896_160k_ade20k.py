# UperNet + InternImage-G, ADE20K, 896x896 crops, 160k iterations (16 GPUs x 1 image).
# The H recipe (ade20k_896 pipelines, AdamW 2e-5, layer decay 0.95, clipping 0.1) on the
# G backbone (3B parameters); published mIoU 62.9 (multi-scale).
_base_ = ['./upernet_internimage_h_896_160k_ade20k.py']
pretrained = 'https://huggingface.co/OpenGVLab/InternImage/resolve/main/internimage_g_pretrainto22k_384.pth'
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
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[512, 1024, 2048, 4096]),
    auxiliary_head=dict(in_channels=2048))
optim_wrapper = dict(paramwise_cfg=dict(num_layers=56, depths=[2, 2, 48, 4]))
