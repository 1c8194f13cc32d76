# Cityscapes (fine), 512x1024 crops, 2 images per GPU: mmseg's Cityscapes set-up, which
# matches the published one (test at 2048x1024, no resize to a multiple of 32).
_base_ = ['mmseg::_base_/datasets/cityscapes.py']
crop_size = (512, 1024)
train_dataloader = dict(batch_size=2)
