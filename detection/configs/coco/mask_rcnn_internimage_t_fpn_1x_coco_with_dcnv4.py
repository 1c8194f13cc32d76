# Mask R-CNN InternImage-T FPN, 1x, COCO, with the backbone's DCNv4-style operator switch:
# use_dcn_v4_op=True packs the sampling offsets and the softmaxed mask into one tensor
# (the DCNv4 kernel's input layout); the arithmetic is DCNv3's, so the weights and the
# outputs are those of mask_rcnn_internimage_t_fpn_1x_coco.
_base_ = ['./mask_rcnn_internimage_t_fpn_1x_coco.py']
model = dict(backbone=dict(use_dcn_v4_op=True))
