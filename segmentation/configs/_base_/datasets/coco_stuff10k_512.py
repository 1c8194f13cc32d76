# COCO-Stuff-10k (171 classes; label 0 is "unlabelled", hence reduce_zero_label),
# 512x512 crops, 1 image per GPU; test images resized to 2048x512 then to a multiple of 32.
# The ADE20K 512 set-up (ade20k_512.py: same pipelines) on mmseg's COCO-Stuff-10k dataset.
_base_ = ['./ade20k_512.py']
dataset_type = 'COCOStuffDataset'
data_root = 'data/coco_stuff10k'
train_dataloader = dict(
    batch_size=1,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        reduce_zero_label=True,
        data_prefix=dict(img_path='images/train2014', seg_map_path='annotations/train2014')))
val_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        reduce_zero_label=True,
        data_prefix=dict(img_path='images/test2014', seg_map_path='annotations/test2014')))
test_dataloader = val_dataloader
