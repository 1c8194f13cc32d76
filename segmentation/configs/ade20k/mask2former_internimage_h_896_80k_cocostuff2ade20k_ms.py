# The _ss config tested multi-scale + flip (test.py applies it for aug_test=True): the
# published test scales 768..1024 around the 896 test scale.
# Published: mIoU 62.9.
_base_ = ['./mask2former_internimage_h_896_80k_cocostuff2ade20k_ss.py']
aug_test = True
aug_test_ratios = [768 / 896, 832 / 896, 1.0, 960 / 896, 1024 / 896]
