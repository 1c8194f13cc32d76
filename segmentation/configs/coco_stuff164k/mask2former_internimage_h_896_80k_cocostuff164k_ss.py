# The COCO-Stuff-164k Mask2Former-H with gradient clipping (max norm 0.1), as the published
# _ss file; single-scale test.
# Published: mIoU 52.6 (single-scale).
_base_ = ['./mask2former_internimage_h_896_80k_cocostuff164k.py']
optim_wrapper = dict(clip_grad=dict(max_norm=0.1, norm_type=2))
