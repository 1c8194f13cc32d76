# The single-scale config tested multi-scale (0.5-1.75 x 2048x1024) + flip; test.py applies it
# for aug_test=True.
# Published: mIoU 86.96.
_base_ = ['./mask2former_internimage_h_1024x1024_80k_mapillary2cityscapes.py']
aug_test = True
aug_test_ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
