# UperNet + InternImage-H, ADE20K, 896x896 crops, 160k iterations (16 GPUs x 1 images).
# Published: mIoU 59.9 / 60.3 (single / multi-scale).
_base_ = [
    '../_base_/models/upernet_internimage.py',
    '../_base_/datasets/ade20k_896.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_160k.py',
]
crop_size = (896, 896)
pretrained = 'https://huggingface.co/OpenGVLab/InternImage/resolve/main/internimage_h_jointto22k_384.pth'
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        channels=320,
        depths=[6, 6, 32, 6],
        groups=[10, 20, 40, 80],
        drop_path_rate=0.5,
        layer_scale=None,
        dw_kernel_size=5,
        res_post_norm=True,
        level2_post_norm=True,
        level2_post_norm_block_ids=[5, 11, 17, 23, 29],
        center_feature_scale=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[320, 640, 1280, 2560], num_classes=150),
    auxiliary_head=dict(in_channels=1280, num_classes=150))
optim_wrapper = dict(
    optimizer=dict(lr=2e-5),
    paramwise_cfg=dict(num_layers=50, layer_decay_rate=0.95, depths=[6, 6, 32, 6], offset_lr_scale=1.0),
    clip_grad=dict(max_norm=0.1, norm_type=2))
train_dataloader = dict(batch_size=1)  # 16 GPUs x 1 image
