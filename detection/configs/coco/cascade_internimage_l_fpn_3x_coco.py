# Cascade Mask R-CNN InternImage-L FPN, 3x schedule (multi-scale + crop), COCO.
_base_ = ['../_base_/models/cascade_internimage_l_fpn.py', '../_base_/internimage_3x.py']
pretrained = 'https://huggingface.co/OpenGVLab/InternImage/resolve/main/internimage_l_22k_192to384.pth'
model = dict(backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
# trained on 32 GPUs x 2 images (batch 64), lr 2e-4, with an EMA of the weights
optim_wrapper = dict(
    optimizer=dict(lr=0.0002),
    paramwise_cfg=dict(num_layers=37, layer_decay_rate=0.90, depths=[5, 5, 22, 5], offset_lr_scale=0.01))
auto_scale_lr = dict(base_batch_size=64)
custom_hooks = [
    dict(type='EMAHook', ema_type='ExpMomentumEMA', momentum=0.0001, update_buffers=True, priority=49)]
