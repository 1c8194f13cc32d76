# DINO-4scale CB-InternImage-H, Objects365 (20-class head) -> PASCAL VOC 2012: the VOC07
# recipe (VOC2007 + VOC2012 trainval, lr 5e-5, validated on VOC2007 test); `test.py`
# predicts the VOC2012 test images (no public annotations: the results are dumped for the
# evaluation server, data/VOCdevkit/VOC2012test as the published config lays it out).
_base_ = ['./dino_4scale_cbinternimage_h_objects365_voc07.py']
test_dataloader = dict(
    dataset=dict(
        data_root='data/VOCdevkit/',
        ann_file='VOC2012test/ImageSets/Main/test.txt',
        data_prefix=dict(sub_data_root='VOC2012test/')))
test_evaluator = dict(
    _delete_=True, type='DumpDetResults', out_file_path='work_dirs/voc12_test_predictions.pkl')
