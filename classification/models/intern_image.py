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
from torch import nn

from ops_dcnv3.modules import DCNv3, DCNv3_pytorch, build_act_layer, build_norm_layer
from ops_dcnv3.modules.layers import linear

CORE_OPS = {"DCNv3": DCNv3, "DCNv3_pytorch": DCNv3_pytorch}


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
        x = self.act(self.norm1(self.conv1(x)))
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.act, nn.GELU) and self.act.approximate == "none":
            x = linear(x, self.fc1, gelu=True)  # fused on CPU inference
        else:
            x = self.act(self.fc1(x))
        return self.drop(linear(self.drop(x), self.fc2))


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

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layer_scale:
            if self.post_norm:
                x = x + self.drop_path(self.gamma1 * self.norm1(self.dcn(x)))
                return x + self.drop_path(self.gamma2 * self.norm2(self.mlp(x)))
            x = x + self.drop_path(self.gamma1 * self.dcn(self.norm1(x)))
            return x + self.drop_path(self.gamma2 * self.mlp(self.norm2(x)))
        if self.post_norm:
            x = x + self.drop_path(self.norm1(self.dcn(x)))
            return x + self.drop_path(self.norm2(self.mlp(x)))
        if self.res_post_norm:
            x = x + self.drop_path(self.res_post_norm1(self.dcn(self.norm1(x))))
            return x + self.drop_path(self.res_post_norm2(self.mlp(self.norm2(x))))
        x = x + self.drop_path(self.dcn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))

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
        self.num_features = int(channels * 2 ** (self.num_levels - 1))
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
            head_features = int(self.num_features * cls_scale)
            self.conv_head = nn.Sequential(
                nn.Conv2d(self.num_features, head_features, kernel_size=1, bias=False),
                build_norm_layer(head_features, "BN", "channels_first", "channels_first"),
                build_act_layer(act_layer))
            self.head = nn.Linear(head_features, num_classes) if num_classes > 0 else nn.Identity()
        else:
            pretrain_embed_dim, clip_embed_dim, attn_pool_heads = 1024, 768, 16
            self.dcnv3_head_x4 = nn.Sequential(
                nn.Conv2d(self.num_features, pretrain_embed_dim * 4, kernel_size=1), nn.PixelShuffle(2))
            self.dcnv3_head_x3 = nn.Conv2d(self.num_features // 2, pretrain_embed_dim, kernel_size=1)
            self.clip_projector = AttentionPoolingBlock(
                dim=pretrain_embed_dim, num_heads=attn_pool_heads, qkv_bias=True, out_dim=clip_embed_dim)
            self.fc_norm = build_norm_layer(clip_embed_dim, "LN")
            self.head = nn.Linear(clip_embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.num_layers = len(depths)
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
    def forward_multiscale(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four level outputs (before downsampling), channels-first (N, C_i, H_i, W_i):
        the features detection and segmentation heads consume."""
        x = self.pos_drop(self.patch_embed(x))
        features = []
        for level in self.levels:
            x, feature = level(x, return_wo_downsample=True)
            features.append(feature.permute(0, 3, 1, 2).contiguous())
        return features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features before the classifier, (N, head width)."""
        if self.use_clip_projector:
            features = self.forward_multiscale(x)
            x4 = self.dcnv3_head_x4(features[3])
            x3 = self.dcnv3_head_x3(features[2])
            tokens = (x4 + x3).flatten(-2).transpose(1, 2)
            return self.fc_norm(self.clip_projector(tokens))
        x = self.pos_drop(self.patch_embed(x))
        for level in self.levels:
            x = level(x)
        x = self.conv_head(x.permute(0, 3, 1, 2))
        return torch.flatten(self.avgpool(x), 1)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

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
