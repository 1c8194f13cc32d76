"""InternImage (CVPR 2023): the one backbone definition used by classification,
detection and segmentation.

Module names, parameter shapes and arithmetic follow the published checkpoints
(``shared/spec/model.md``), so their state_dicts load with ``strict=True``. Feature maps
travel channels-last (N, H, W, C) from the stem to the head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as checkpoint
from timm.layers import DropPath, trunc_normal_
from timm.models._features import feature_take_indices
from torch import nn

from ops_dcnv3.modules import DCNv3, DCNv3_pytorch, build_act_layer, build_norm_layer
from ops_dcnv3.modules.layers import (
    channels_last_memory,
    hooks_attached,
    linear,
    mlp_in_row_blocks,
    mlp_in_row_blocks_serves,
)

CORE_OPS = {"DCNv3": DCNv3, "DCNv3_pytorch": DCNv3_pytorch}
_NOT_TRACEABLE = (
    "InternImage does not support {tool}: DCNv3 and the block flags take Python branches on "
    "tensor properties. Use torch.compile(model) to optimise it, or torch.export.export(model, (x,)) "
    "for a whole graph (torch.jit.trace also works, as used by the ONNX export).")


class StemLayer(nn.Module):
    """Two stride-2 3x3 convs: (N, 3, H, W) -> (N, H/4, W/4, C)."""

    def __init__(self, in_chans: int = 3, out_chans: int = 96, act_layer: str = "GELU",
                 norm_layer: str = "LN"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, out_chans // 2, kernel_size=3, stride=2, padding=1)
        self.norm1 = build_norm_layer(out_chans // 2, norm_layer, "channels_first", "channels_first")
        self.act = build_act_layer(act_layer)
        self.conv2 = nn.Conv2d(out_chans // 2, out_chans, kernel_size=3, stride=2, padding=1)
        self.norm2 = build_norm_layer(out_chans, norm_layer, "channels_first", "channels_last")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.conv1(channels_last_memory(x))))
        return self.norm2(self.conv2(x))


class DownsampleLayer(nn.Module):
    """Stride-2 3x3 conv doubling the channels: (N, H, W, C) -> (N, H/2, W/2, 2C)."""

    def __init__(self, channels: int, norm_layer: str = "LN"):
        super().__init__()
        self.conv = nn.Conv2d(channels, 2 * channels, kernel_size=3, stride=2, padding=1, bias=False)
        self.norm = build_norm_layer(2 * channels, norm_layer, "channels_first", "channels_last")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x.permute(0, 3, 1, 2)))


class MLPLayer(nn.Module):
    def __init__(self, in_features: int, hidden_features: int | None = None,
                 out_features: int | None = None, act_layer: str = "GELU", drop: float = 0.0):
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = build_act_layer(act_layer)
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """fc2(act(fc1(x))), plus ``residual`` when given (added after the dropout)."""
        exact_gelu = isinstance(self.act, nn.GELU) and self.act.approximate == "none"
        dropout_off = self.drop.p == 0.0 or not self.training
        if (exact_gelu and dropout_off and not hooks_attached(self.act, self.drop)
                and mlp_in_row_blocks_serves(x, self.fc1, self.fc2, residual)):
            return mlp_in_row_blocks(x, self.fc1, self.fc2, residual)
        if exact_gelu:
            x = linear(x, self.fc1, gelu=True)
        else:
            x = self.act(self.fc1(x))
        x = self.drop(x)
        if residual is None:
            return self.drop(linear(x, self.fc2))
        if self.drop.p == 0.0 or not self.training:  # dropout is the identity: fuse the add
            return linear(x, self.fc2, residual=residual)
        return residual + self.drop(linear(x, self.fc2))


class InternImageLayer(nn.Module):
    """One block: DCNv3 token mixing and an MLP, each residual (model.md's table)."""

    def __init__(self, core_op: type[nn.Module], channels: int, groups: int, mlp_ratio: float = 4.0,
                 drop: float = 0.0, drop_path: float = 0.0, act_layer: str = "GELU",
                 norm_layer: str = "LN", post_norm: bool = False, layer_scale: float | None = None,
                 offset_scale: float = 1.0, with_cp: bool = False, dw_kernel_size: int | None = None,
                 res_post_norm: bool = False, center_feature_scale: bool = False,
                 remove_center: bool = False):
        super().__init__()
        self.channels = channels
        self.groups = groups
        self.mlp_ratio = mlp_ratio
        self.with_cp = with_cp
        self.norm1 = build_norm_layer(channels, "LN")
        self.post_norm = post_norm
        self.dcn = core_op(channels=channels, kernel_size=3, stride=1, pad=1, dilation=1, group=groups,
                           offset_scale=offset_scale, act_layer=act_layer, norm_layer=norm_layer,
                           dw_kernel_size=dw_kernel_size, center_feature_scale=center_feature_scale,
                           remove_center=remove_center)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = build_norm_layer(channels, "LN")
        self.mlp = MLPLayer(channels, int(channels * mlp_ratio), act_layer=act_layer, drop=drop)
        self.layer_scale = layer_scale is not None
        if self.layer_scale:
            self.gamma1 = nn.Parameter(layer_scale * torch.ones(channels))
            self.gamma2 = nn.Parameter(layer_scale * torch.ones(channels))
        self.res_post_norm = res_post_norm
        if res_post_norm:
            self.res_post_norm1 = build_norm_layer(channels, "LN")
            self.res_post_norm2 = build_norm_layer(channels, "LN")

    def _residual(self, x: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
        """``x + self.drop_path(branch)``. Training with stochastic depth draws timm's
        per-sample keep mask (same draws, same scaling) and applies it with one addcmul: the
        multiply and the add in one pass over the activations instead of two."""
        drop = self.drop_path
        if not (self.training and isinstance(drop, DropPath) and drop.drop_prob > 0.0):
            return x + drop(branch)
        keep = 1.0 - drop.drop_prob
        keep_mask = branch.new_empty((branch.shape[0],) + (1,) * (branch.ndim - 1)).bernoulli_(keep)
        if keep > 0.0 and drop.scale_by_keep:
            keep_mask.div_(keep)
        return torch.addcmul(x, branch, keep_mask)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layer_scale:
            if self.post_norm:
                x = self._residual(x, self.gamma1 * self.norm1(self.dcn(x)))
                return self._residual(x, self.gamma2 * self.norm2(self.mlp(x)))
            x = self._residual(x, self.gamma1 * self.dcn(self.norm1(x)))
            return self._residual(x, self.gamma2 * self.mlp(self.norm2(x)))
        if self.post_norm:
            x = self._residual(x, self.norm1(self.dcn(x)))
            return self._residual(x, self.norm2(self.mlp(x)))
        if self.res_post_norm:
            x = self._residual(x, self.res_post_norm1(self.dcn(self.norm1(x))))
            return self._residual(x, self.res_post_norm2(self.mlp(self.norm2(x))))
        if isinstance(self.drop_path, nn.Identity) or not self.training:
            # The residual adds fused into DCNv3's output projection and fc2 (not where a
            # hook on dcn would then see the sum instead of the branch).
            if hooks_attached(self.dcn):
                x = x + self.dcn(self.norm1(x))
            else:
                x = self.dcn(self.norm1(x), residual=x)
            return self.mlp(self.norm2(x), residual=x)
        x = self._residual(x, self.dcn(self.norm1(x)))
        return self._residual(x, self.mlp(self.norm2(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.with_cp and x.requires_grad:
            return checkpoint.checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)


class InternImageBlock(nn.Module):
    """One level: its blocks, optional level-2 post-norms, the level norm, downsample."""

    def __init__(self, core_op: type[nn.Module], channels: int, depth: int, groups: int,
                 downsample: bool = True, mlp_ratio: float = 4.0, drop: float = 0.0,
                 drop_path: float | Sequence[float] = 0.0, act_layer: str = "GELU",
                 norm_layer: str = "LN", post_norm: bool = False, offset_scale: float = 1.0,
                 layer_scale: float | None = None, with_cp: bool = False,
                 dw_kernel_size: int | None = None, post_norm_block_ids: Sequence[int] | None = None,
                 res_post_norm: bool = False, center_feature_scale: bool = False,
                 remove_center: bool = False):
        super().__init__()
        self.channels = channels
        self.depth = depth
        self.post_norm = post_norm
        self.center_feature_scale = center_feature_scale
        self.blocks = nn.ModuleList([
            InternImageLayer(
                core_op=core_op, channels=channels, groups=groups, mlp_ratio=mlp_ratio, drop=drop,
                drop_path=drop_path[i] if isinstance(drop_path, Sequence) else drop_path,
                act_layer=act_layer, norm_layer=norm_layer, post_norm=post_norm,
                layer_scale=layer_scale, offset_scale=offset_scale, with_cp=with_cp,
                dw_kernel_size=dw_kernel_size, res_post_norm=res_post_norm,
                center_feature_scale=center_feature_scale, remove_center=remove_center)
            for i in range(depth)
        ])
        if not post_norm or center_feature_scale:
            self.norm = build_norm_layer(channels, "LN")
        self.post_norm_block_ids = list(post_norm_block_ids) if post_norm_block_ids else None
        if self.post_norm_block_ids is not None:
            self.post_norms = nn.ModuleList(
                [build_norm_layer(channels, "LN", eps=1e-6) for _ in self.post_norm_block_ids])
        self.downsample = DownsampleLayer(channels, norm_layer) if downsample else None

    def forward(self, x: torch.Tensor, return_wo_downsample: bool = False):
        for i, block in enumerate(self.blocks):
            x = block(x)
            if self.post_norm_block_ids is not None and i in self.post_norm_block_ids:
                x = self.post_norms[self.post_norm_block_ids.index(i)](x)
        if not self.post_norm or self.center_feature_scale:
            x = self.norm(x)
        feature = x
        if self.downsample is not None:
            x = self.downsample(x)
        return (x, feature) if return_wo_downsample else x


class CrossAttention(nn.Module):
    """Multi-head attention of one query over a token sequence (separate q/k/v biases)."""

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, out_dim: int | None = None):
        super().__init__()
        out_dim = out_dim or dim
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim ** -0.5
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.k_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = self.k_bias = self.v_bias = None
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, out_dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        n, len_q, _ = x.shape
        len_kv = k.shape[1]
        q = F.linear(x, self.q.weight, self.q_bias).reshape(n, len_q, self.num_heads, -1).transpose(1, 2)
        k = F.linear(k, self.k.weight, self.k_bias).reshape(n, len_kv, self.num_heads, -1).transpose(1, 2)
        v = F.linear(v, self.v.weight, self.v_bias).reshape(n, len_kv, self.num_heads, -1).transpose(1, 2)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = self.attn_drop(attn.softmax(dim=-1))
        x = (attn @ v).transpose(1, 2).reshape(n, len_q, -1)
        return self.proj_drop(self.proj(x))


class AttentionPoolingBlock(nn.Module):
    """Pools tokens (N, L, C) into one vector: the mean token attends over all tokens."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, out_dim: int | None = None):
        super().__init__()
        self.norm1_q = build_norm_layer(dim, "LN")
        self.norm1_k = build_norm_layer(dim, "LN")
        self.norm1_v = build_norm_layer(dim, "LN")
        self.cross_dcn = CrossAttention(dim, num_heads=num_heads, qkv_bias=qkv_bias, out_dim=out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        query = self.norm1_q(x.mean(1, keepdim=True))
        return self.cross_dcn(query, k=self.norm1_k(x), v=self.norm1_v(x)).squeeze(1)


class InternImage(nn.Module):
    """InternImage backbone and classifier. Variants are set by ``channels``, ``depths``,
    ``groups`` and the flags below (see ``classification/models/variants.py``)."""

    def __init__(self, core_op: str = "DCNv3", channels: int = 64, depths: Sequence[int] = (3, 4, 18, 5),
                 groups: Sequence[int] = (3, 6, 12, 24), num_classes: int = 1000, mlp_ratio: float = 4.0,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.2, drop_path_type: str = "linear",
                 act_layer: str = "GELU", norm_layer: str = "LN", layer_scale: float | None = None,
                 offset_scale: float = 1.0, post_norm: bool = False, cls_scale: float = 1.5,
                 with_cp: bool = False, dw_kernel_size: int | None = None,
                 use_clip_projector: bool = False, level2_post_norm: bool = False,
                 level2_post_norm_block_ids: Sequence[int] | None = None, res_post_norm: bool = False,
                 center_feature_scale: bool = False, remove_center: bool = False, in_chans: int = 3,
                 **kwargs):
        super().__init__()
        if core_op not in CORE_OPS:
            raise ValueError(f"core_op must be one of {sorted(CORE_OPS)}, got {core_op!r}")
        if len(depths) != len(groups):
            raise ValueError(f"depths {list(depths)} and groups {list(groups)} must have one entry per level")
        if drop_path_type not in ("linear", "uniform"):
            raise ValueError(f"drop_path_type must be 'linear' or 'uniform', got {drop_path_type!r}")
        if kwargs:
            raise TypeError(f"InternImage got unexpected arguments: {sorted(kwargs)}")
        self.core_op = core_op
        self.num_classes = num_classes
        self.num_levels = len(depths)
        self.depths = list(depths)
        self.channels = channels
        last_channels = int(channels * 2 ** (self.num_levels - 1))
        self.post_norm = post_norm
        self.mlp_ratio = mlp_ratio
        self.use_clip_projector = use_clip_projector
        self.level2_post_norm_block_ids = level2_post_norm_block_ids
        self.remove_center = remove_center
        self.with_cp = with_cp

        self.patch_embed = StemLayer(in_chans, channels, act_layer=act_layer, norm_layer=norm_layer)
        self.pos_drop = nn.Dropout(p=drop_rate)
        total = sum(depths)  # stochastic depth rises linearly over all blocks
        dpr = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        if drop_path_type == "uniform":
            dpr = [drop_path_rate] * sum(depths)
        op = CORE_OPS[core_op]
        self.levels = nn.ModuleList()
        for i in range(self.num_levels):
            post_norm_block_ids = level2_post_norm_block_ids if level2_post_norm and i == 2 else None
            self.levels.append(InternImageBlock(
                core_op=op, channels=int(channels * 2 ** i), depth=depths[i], groups=groups[i],
                mlp_ratio=mlp_ratio, drop=drop_rate, drop_path=dpr[sum(depths[:i]):sum(depths[:i + 1])],
                act_layer=act_layer, norm_layer=norm_layer, post_norm=post_norm,
                downsample=i < self.num_levels - 1, layer_scale=layer_scale, offset_scale=offset_scale,
                with_cp=with_cp, dw_kernel_size=dw_kernel_size, post_norm_block_ids=post_norm_block_ids,
                res_post_norm=res_post_norm, center_feature_scale=center_feature_scale,
                remove_center=remove_center))

        if not use_clip_projector:
            head_features = int(last_channels * cls_scale)
            self.conv_head = nn.Sequential(
                nn.Conv2d(last_channels, head_features, kernel_size=1, bias=False),
                build_norm_layer(head_features, "BN", "channels_first", "channels_first"),
                build_act_layer(act_layer))
            self.head = nn.Linear(head_features, num_classes) if num_classes > 0 else nn.Identity()
        else:
            pretrain_embed_dim, clip_embed_dim, attn_pool_heads = 1024, 768, 16
            self.dcnv3_head_x4 = nn.Sequential(
                nn.Conv2d(last_channels, pretrain_embed_dim * 4, kernel_size=1), nn.PixelShuffle(2))
            self.dcnv3_head_x3 = nn.Conv2d(last_channels // 2, pretrain_embed_dim, kernel_size=1)
            self.clip_projector = AttentionPoolingBlock(
                dim=pretrain_embed_dim, num_heads=attn_pool_heads, qkv_bias=True, out_dim=clip_embed_dim)
            self.fc_norm = build_norm_layer(clip_embed_dim, "LN")
            self.head = nn.Linear(clip_embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.num_layers = len(depths)
        # timm conventions: the pooled (pre-logits) width, the pooling kind and the stage features
        self.num_features = head_features if not use_clip_projector else clip_embed_dim
        self.head_hidden_size = self.num_features
        self.default_pool = "attn" if use_clip_projector else "avg"
        self.global_pool = self.default_pool
        self.has_head = True  # False once prune_intermediate_layers removed the head
        self.feature_info = [dict(num_chs=int(channels * 2 ** i), reduction=4 * 2 ** i, module=f"levels.{i}")
                             for i in range(self.num_levels)]
        if not self.patch_embed.conv1.weight.is_meta:  # meta tensors hold no values to initialise
            self.apply(self._init_weights)
            self.apply(self._init_deform_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    @staticmethod
    def _init_deform_weights(m: nn.Module) -> None:
        if isinstance(m, (DCNv3, DCNv3_pytorch)):
            m._reset_parameters()

    # ------------------------------------------------------------------ features
    def _level_outputs(self, x: torch.Tensor, num_levels: int | None = None,
                       last_only: bool = False) -> list[torch.Tensor]:
        """The outputs (before downsampling, channels-last) of the first ``num_levels`` levels,
        or with ``last_only`` just the last level's (each level called plainly, so forward hooks
        on a level see its usual output)."""
        if isinstance(x, torch.fx.Proxy):
            raise RuntimeError(_NOT_TRACEABLE.format(tool="torch.fx symbolic tracing"))
        in_chans = self.patch_embed.conv1.in_channels
        if x.dim() != 4 or x.shape[1] != in_chans:  # static check: compile/export/ONNX trace through it
            hint = ""
            if x.dim() == 4 and x.shape[-1] == in_chans:
                hint = " (this looks like (N, H, W, C): pass x.permute(0, 3, 1, 2))"
            elif x.dim() == 3 and x.shape[0] == in_chans:
                hint = " (no batch axis: pass x.unsqueeze(0))"
            raise ValueError(f"{type(self).__name__} expects images of layout (N, C, H, W) with "
                             f"C = {in_chans} channels, got shape {tuple(x.shape)}{hint}")
        x = self.pos_drop(self.patch_embed(x))
        if last_only:  # the last level has no downsample: its output is its feature
            for level in self.levels:
                x = level(x)
            return [x]
        outputs = []
        for level in self.levels:
            if num_levels is not None and len(outputs) == num_levels:
                break
            x, feature = level(x, return_wo_downsample=True)
            outputs.append(feature)
        return outputs

    def _pre_pool(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        """The (N, D, h, w) map the pooling reduces: conv_head of the last level, or for the
        CLIP-projector head (H/G) the summed stage-3/4 projections at stride 16."""
        if self.use_clip_projector:
            x4 = self.dcnv3_head_x4(outputs[3].permute(0, 3, 1, 2).contiguous())
            x3 = self.dcnv3_head_x3(outputs[2].permute(0, 3, 1, 2).contiguous())
            return x4 + x3
        return self.conv_head(outputs[-1].permute(0, 3, 1, 2))

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_clip_projector:
            return self.fc_norm(self.clip_projector(x.flatten(-2).transpose(1, 2)))
        return torch.flatten(self.avgpool(x), 1)

    def _features_from_levels(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        if not self.has_head:  # pruned: the last kept level is the output
            return outputs[-1].permute(0, 3, 1, 2).contiguous()
        if len(self.levels) != self.num_levels:
            raise RuntimeError(f"the model was pruned to {len(self.levels)} of {self.num_levels} levels; "
                               "use forward_intermediates(x, intermediates_only=True)")
        x = self._pre_pool(outputs)
        return self._pool(x) if self.global_pool else x

    def forward_multiscale(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four level outputs (before downsampling), channels-first (N, C_i, H_i, W_i):
        the features detection and segmentation heads consume."""
        return [feature.permute(0, 3, 1, 2).contiguous() for feature in self._level_outputs(x)]

    def forward_intermediates(self, x: torch.Tensor, indices: int | Sequence[int] | None = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False
                              ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's feature API: the level outputs at ``indices`` (None: all; an int n: the last
        n; negative indices count from the end), (N, C_i, H_i, W_i) for ``output_fmt`` 'NCHW'
        or (N, H_i, W_i, C_i) for 'NHWC'. Returns them alone with ``intermediates_only``, else
        ``(forward_features output, intermediates)``. ``stop_early`` skips the levels after the
        last requested one (with ``intermediates_only``; the pooled output needs every level).
        ``norm`` is accepted for timm compatibility and changes nothing: every level output
        already passed its level's norm, and there is no separate final norm."""
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.levels), indices)
        outputs = self._level_outputs(x, max_index + 1 if stop_early and intermediates_only else None)
        if output_fmt == "NCHW":
            intermediates = [outputs[i].permute(0, 3, 1, 2).contiguous() for i in take_indices]
        else:
            intermediates = [outputs[i] for i in take_indices]
        if intermediates_only:
            return intermediates
        return self._features_from_levels(outputs), intermediates

    def prune_intermediate_layers(self, indices: int | Sequence[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drops the levels after the last of ``indices`` (and that level's downsample) and,
        with ``prune_head`` or when levels were dropped (the head needs them all), the
        classification head; returns the absolute indices. A head-less
        model's ``forward_features`` returns the last kept level (N, C, H, W). ``prune_norm``
        is accepted for timm compatibility: the level norms belong to the returned features."""
        take_indices, max_index = feature_take_indices(len(self.levels), indices)
        self.levels = self.levels[:max_index + 1]
        self.levels[-1].downsample = None  # nothing consumes it any more
        if prune_head or max_index + 1 < self.num_levels:
            for name in ("conv_head", "dcnv3_head_x4", "dcnv3_head_x3", "clip_projector", "fc_norm"):
                if hasattr(self, name):
                    delattr(self, name)
            self.head = nn.Identity()
            self.num_classes = 0
            self.global_pool = ""
            self.has_head = False
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features before the classifier, (N, num_features). After
        ``reset_classifier(0, '')``: the unpooled map (N, D, h, w) the pooling would reduce
        (conv_head output at stride 32; for H/G the 1024-channel stride-16 token map)."""
        # the CLIP-projector head needs stage 3 too; the conv head only the last level
        return self._features_from_levels(self._level_outputs(x, last_only=not self.use_clip_projector))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The classifier on ``forward_features`` output; ``pre_logits`` returns its input."""
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    # ------------------------------------------------------------------ timm model API
    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh ``head`` for ``num_classes`` (0: none, ``forward`` returns the pooled
        features). ``global_pool=''`` also removes the pooling (only with ``num_classes=0``);
        the default pooling ('avg', or 'attn' for the CLIP-projector head) restores it."""
        if global_pool is not None:
            if global_pool not in ("", self.default_pool):
                raise ValueError(f"global_pool must be '' or {self.default_pool!r} for this model, "
                                 f"got {global_pool!r}")
            if global_pool and not self.has_head:
                raise ValueError("the head was pruned (prune_intermediate_layers); no pooling to restore")
            self.global_pool = global_pool
        if num_classes > 0 and not self.global_pool:
            raise ValueError(f"num_classes={num_classes} needs pooled features; with global_pool='' "
                             "pass num_classes=0")
        self.num_classes = num_classes
        reference = next(self.parameters())
        if num_classes > 0:
            head = nn.Linear(self.head_hidden_size, num_classes, device=reference.device,
                             dtype=reference.dtype)
            self._init_weights(head)
            self.head = head
        else:
            self.head = nn.Identity()

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing of every block (the ``with_cp`` option)."""
        self.with_cp = enable
        for level in self.levels:
            for block in level.blocks:
                block.with_cp = enable

    def __prepare_scriptable__(self) -> InternImage:
        # torch.jit.script calls this first: fail here with a pointer, not deep inside DCNv3
        raise RuntimeError(_NOT_TRACEABLE.format(tool="TorchScript (torch.jit.script)"))

    # ------------------------------------------------------------------ training helpers
    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameters trained without weight decay: 1-D tensors (norms, biases, layer-scale
        gammas, attention biases)."""
        return {name for name, p in self.named_parameters() if p.ndim <= 1}

    @torch.jit.ignore
    def layer_decay_scales(self, decay_ratio: float) -> dict[str, float]:
        """lr multiplier of every parameter under layer-wise lr decay (classification.md):
        the last block of the last level gets ratio**0, each earlier block one power more,
        ``patch_embed`` shares levels.0.blocks.0's, a level's ``downsample``/``norm`` share
        the next level's first block's, heads and the rest get 1."""
        total = sum(self.depths)

        def block_id(level: int, block: int) -> int:
            return sum(self.depths[:level]) + block

        scales = {}
        for name, _ in self.named_parameters():
            parts = name.split(".")
            if parts[0] == "patch_embed":
                layer = 0
            elif parts[0] == "levels":
                level = int(parts[1])
                if parts[2] == "blocks":
                    layer = block_id(level, int(parts[3]))
                elif parts[2] in ("downsample", "norm") and level + 1 < self.num_levels:
                    layer = block_id(level + 1, 0)
                else:  # the last level's norm, level-2 post-norms
                    layer = total
            else:
                layer = total
            scales[name] = decay_ratio ** max(total - 1 - layer, 0)
        return scales
