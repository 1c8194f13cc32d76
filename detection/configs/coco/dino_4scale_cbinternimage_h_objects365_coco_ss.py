# DINO-4scale CB-InternImage-H (composite backbone), Objects365 -> COCO, single scale:
# the InternImage-H recipe with two trunks, both supervised in training (CBDINO).
_base_ = ['./dino_4scale_internimage_h_objects365_coco_ss.py']
# The published Objects365 detector (80-class head), saved by the mmdet 2 tree: its keys
# are converted to mmdet 3's on load (dense_common.checkpoint_conversion).
load_from = ('https://huggingface.co/OpenGVLab/InternImage/resolve/main/'
             'dino_4scale_cbinternimage_h_objects365_80classes.pth')
# published arguments: per-trunk out_indices (the assisting trunk's level 0 feeds the
# fusion only), zero-initialised fusion gammas, the lead trunk without a stem; the
# assisting trunk's losses weigh 0.5
model = dict(
    type='CBDINO',
    cb_first_weight=0.5,
    backbone=dict(type='CBInternImage', out_indices=[(0, 1, 2, 3), (1, 2, 3)], cb_zero_init=True,
                  cb_del_stages=1))

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
