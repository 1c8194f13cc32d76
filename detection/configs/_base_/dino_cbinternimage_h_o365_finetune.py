# CB-InternImage-H DINO fine-tuned from its Objects365 detector on another dataset: the COCO
# recipe with a shorter multi-scale range (600-1200); leaves set the dataset, the number
# of classes and the schedule.
_base_ = ['../coco/dino_4scale_cbinternimage_h_objects365_coco_ss.py']
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomResize', scale=[(2000, 600), (2000, 1200)], keep_ratio=True),
    dict(type='PackDetInputs'),
]
