# DINO-4scale CB-InternImage-H, Objects365 -> LVIS v1 (1203 classes), evaluated on the full
# LVIS v1 val set, single scale: the minival recipe with the val annotations. (The published
# run also used a federated classification loss, which mmdet 3's DINO head lacks.)
_base_ = ['./dino_4scale_cbinternimage_h_objects365_lvis_minival_ss.py']
data_root = 'data/lvis_v1/'
val_dataloader = dict(dataset=dict(ann_file='annotations/lvis_v1_val.json'))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/lvis_v1_val.json')
test_evaluator = val_evaluator
