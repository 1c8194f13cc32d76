"""mmengine hooks behind the published script flags (registered in mmengine's root HOOKS
registry, which mmdet's and mmseg's registries fall back to)."""

from __future__ import annotations

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@HOOKS.register_module(force=True)
class FuseConvBNHook(Hook):
    """``test.py --fuse-conv-bn``: folds every BatchNorm that follows a convolution into the
    convolution's weights (mmcv's ``fuse_conv_bn``) once the checkpoint is loaded, before
    testing: same outputs in eval mode, fewer operations."""

    priority = "VERY_HIGH"

    def before_test(self, runner) -> None:
        from mmcv.cnn import fuse_conv_bn

        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        fuse_conv_bn(model)
