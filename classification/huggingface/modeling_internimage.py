"""transformers models around the one InternImage definition (``classification.models``).

Both classes hold ``classification.models.InternImage`` as ``self.model``, so their weights
are ``model.<our name>``, as in the published Hub repos; the published repos call the
layer-scale parameters ``layer_scale1/2`` where ours are ``gamma1/gamma2``, which the
checkpoint conversion registered in ``classification.huggingface`` maps on load and back on
``save_pretrained``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutputWithNoAttention

from classification.models.checkpoint import routed_torch_load
from classification.models.intern_image import CrossAttention, InternImage, InternImageLayer
from ops_dcnv3.modules import DCNv3, DCNv3_pytorch

from .configuration_internimage import InternImageConfig


class InternImagePreTrainedModel(PreTrainedModel):
    config_class = InternImageConfig
    base_model_prefix = "model"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["InternImageLayer"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """InternImage's own initialisation, per module (transformers calls it for the modules
        whose weights a checkpoint did not provide): trunc-normal(.02) Linear weights, unit
        norms, PyTorch's conv init, each DCNv3's reset, layer scales at ``config.layer_scale``."""
        if isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            if isinstance(module, nn.BatchNorm2d):
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
                init.zeros_(module.num_batches_tracked)
        elif isinstance(module, nn.Conv2d):
            module.reset_parameters()  # torch.nn.init calls, which transformers guards
        elif isinstance(module, (DCNv3, DCNv3_pytorch)):
            module._reset_parameters()
            if module.center_feature_scale:
                init.zeros_(module.center_feature_scale_proj_weight)
                init.zeros_(module.center_feature_scale_proj_bias)
        elif isinstance(module, InternImageLayer) and module.layer_scale:
            init.constant_(module.gamma1, self.config.layer_scale)
            init.constant_(module.gamma2, self.config.layer_scale)
        elif isinstance(module, CrossAttention) and module.q_bias is not None:
            for bias in (module.q_bias, module.k_bias, module.v_bias):
                init.zeros_(bias)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """transformers' ``from_pretrained``, with a ``pytorch_model.bin`` read through
        ``read_checkpoint`` (the repository's one checkpoint reader: no pickled code runs)."""
        with routed_torch_load():
            return super().from_pretrained(*args, **kwargs)

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None) -> None:
        """Activation checkpointing of every block (InternImage's ``with_cp``)."""
        self.model.set_grad_checkpointing(True)

    def gradient_checkpointing_disable(self) -> None:
        self.model.set_grad_checkpointing(False)

    @property
    def is_gradient_checkpointing(self) -> bool:
        return bool(self.model.with_cp)


class InternImageModel(InternImagePreTrainedModel):
    """The trunk and pooling (no classifier): ``pooler_output`` (N, D) is the pooled
    pre-logits feature, ``hidden_states`` the four stage outputs (N, C_i, H_i, W_i) and
    ``last_hidden_state`` the last of them."""

    # a classification repo's classifier has no place here (as with other trunk-only models)
    _keys_to_ignore_on_load_unexpected = [r"^model\.head\."]

    def __init__(self, config: InternImageConfig):
        super().__init__(config)
        self.model = InternImage(**{**config.internimage_kwargs(), "num_classes": 0})
        self.post_init()

    def forward(self, pixel_values: torch.Tensor, output_hidden_states: bool | None = None,
                return_dict: bool | None = None, **kwargs) -> BaseModelOutputWithPooling | tuple:
        pooled, stages = self.model.forward_intermediates(pixel_values)
        output = BaseModelOutputWithPooling(last_hidden_state=stages[-1], pooler_output=pooled,
                                            hidden_states=tuple(stages))
        return output if return_dict is not False else output.to_tuple()


class InternImageForImageClassification(InternImagePreTrainedModel):
    """InternImage with its classifier (``config.num_classes`` logits). With ``labels``
    (class indices (N,), or class probabilities (N, num_classes)) ``loss`` is the cross
    entropy; ``output_hidden_states=True`` adds the four stage outputs."""

    def __init__(self, config: InternImageConfig):
        super().__init__(config)
        self.model = InternImage(**config.internimage_kwargs())
        self.post_init()

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None,
                output_hidden_states: bool | None = None, return_dict: bool | None = None,
                **kwargs) -> ImageClassifierOutputWithNoAttention | tuple:
        if output_hidden_states:
            pooled, stages = self.model.forward_intermediates(pixel_values)
            logits, hidden_states = self.model.forward_head(pooled), tuple(stages)
        else:
            logits, hidden_states = self.model(pixel_values), None
        loss = F.cross_entropy(logits, labels.to(logits.device)) if labels is not None else None
        output = ImageClassifierOutputWithNoAttention(loss=loss, logits=logits, hidden_states=hidden_states)
        return output if return_dict is not False else output.to_tuple()


# The class name the published remote code (and its auto_map) uses
InternImageModelForImageClassification = InternImageForImageClassification

__all__ = ["InternImageForImageClassification", "InternImageModel", "InternImageModelForImageClassification",
           "InternImagePreTrainedModel"]
