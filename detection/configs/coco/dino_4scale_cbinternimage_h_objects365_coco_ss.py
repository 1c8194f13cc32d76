# DINO-4scale CB-InternImage-H (composite backbone), Objects365 -> COCO, single scale:
# the InternImage-H recipe with two trunks, both supervised in training (CBDINO).
_base_ = ['./dino_4scale_internimage_h_objects365_coco_ss.py']
# The published Objects365 detector (80-class head). It was saved by the mmdet 2 tree:
# its DINO head keys must be converted to mmdet 3 names before it loads fully.
load_from = ('https://huggingface.co/OpenGVLab/InternImage/resolve/main/'
             'dino_4scale_cbinternimage_h_objects365_80classes.pth')
model = dict(type='CBDINO', backbone=dict(type='CBInternImage'))

# test.py --tta: horizontal flip at the test scale, boxes merged by mmdet's DetTTAModel
tta_model = dict(type='DetTTAModel', tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.65), max_per_img=300))
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(type='Resize', scale={{_base_.test_scale}}, keep_ratio=True)],
            [dict(type='RandomFlip', prob=1.0), dict(type='RandomFlip', prob=0.0)],
            [dict(type='LoadAnnotations', with_bbox=True)],
            [dict(type='PackDetInputs',
                  meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor', 'flip',
                             'flip_direction'))],
        ]),
]
