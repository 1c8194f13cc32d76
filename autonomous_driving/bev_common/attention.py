"""The deformable attentions of BEVFormer (driving_occupancy_params.md §7–§9,
driving_openlane_params.md §3.2), with the published constructor arguments, parameter
names, initialisation and arithmetic:

- ``TemporalSelfAttention`` (TSA): BEV queries attend to [previous BEV, current BEV]
  (``num_bev_queue=2``); offsets and weights come from ``cat([history, query + pos])``,
  the two queue slots are averaged. ``double_value_proj=True`` applies ``value_proj`` twice
  (the OpenLane-V2 ROAD copy, driving_openlane_params.md §2.4); the default applies it once
  (occupancy).
- ``SpatialCrossAttention`` (SCA): per camera, only the BEV queries with a visible pillar
  point are re-batched (``max_len``) through ``MSDeformableAttention3D``, summed back and
  divided by the number of cameras that see them.
- ``MSDeformableAttention3D``: MSDA whose sampling points are grouped by pillar anchor (no
  output projection).
- ``CustomMSDeformableAttention``: mmcv's ``MultiScaleDeformableAttention`` (same
  parameters and init) on the same MSDA path as the others; the OpenLane-V2 lane decoder's
  cross-attention.

MSDA path (:func:`multi_scale_deformable_attn`): the decision of mmcv's own module —
``MultiScaleDeformableAttnFunction`` (the compiled kernel) for CUDA/MLU tensors, otherwise
``multi_scale_deformable_attn_pytorch`` — with both looked up in
``mmcv.ops.multi_scale_deform_attn`` at call time, so ``dense_common.stack_compat.
use_ops_dcnv3_msda()`` (which replaces them there) moves these modules to the ops_dcnv3
kernels with no change here. The published modules call a local ``_fp32`` Function
(``custom_fwd(cast_inputs=float32)``): under autocast the kernel runs on float32 inputs
with autocast off and returns float32; outside autocast the inputs pass unchanged.

Published defects fixed (identical at batch 1): TSA takes each sample's own history as the
offset input (``value[::2]``, published ``value[:bs]``); SCA selects the visible queries of
each sample from that sample's ``bev_mask`` (published: sample 0's for all)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

import torch
from mmcv.cnn.bricks.transformer import build_attention
from mmcv.ops import MultiScaleDeformableAttention
from mmcv.ops import multi_scale_deform_attn as _mmcv_msda
from mmcv.utils import IS_CUDA_AVAILABLE, IS_MLU_AVAILABLE
from mmdet.registry import MODELS
from mmengine.model import BaseModule, constant_init, xavier_init
from torch import nn

from dense_common import stack_compat

stack_compat.apply()  # as the dense plugins do: mmcv's MSDA runs on the ops_dcnv3 kernels

SCOPE = "mmdet"  # where this package registers; children built through mmcv's builders resolve here


def in_mmdet_scope(cfg: Mapping) -> dict:
    """A copy of ``cfg`` that mmcv's builders (mmengine's root ``MODELS``) resolve in mmdet's
    registry whatever the current default scope: ``_scope_`` makes ``build_from_cfg`` switch
    to mmdet's child registry (which falls back to the root for mmcv's own FFN, LN, ...)."""
    if not isinstance(cfg, Mapping):
        raise TypeError(f"expected a config dict, got {type(cfg).__name__}: {cfg!r}")
    out = dict(cfg)
    out.setdefault("_scope_", SCOPE)
    return out


def multi_scale_deformable_attn(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    im2col_step: int,
) -> torch.Tensor:
    """MSDA as mmcv's ``MultiScaleDeformableAttention`` runs it (module docstring): value
    (bs, keys, heads, head_dim), locations (bs, q, heads, levels, points, 2) in [0, 1],
    weights (bs, q, heads, levels, points) -> (bs, q, heads * head_dim)."""
    if (IS_CUDA_AVAILABLE and value.is_cuda) or (IS_MLU_AVAILABLE and value.is_mlu):
        device_type = value.device.type
        if torch.is_autocast_enabled(device_type):  # the published fp32 Function under amp
            with torch.autocast(device_type, enabled=False):
                return _mmcv_msda.MultiScaleDeformableAttnFunction.apply(
                    value.float(),
                    spatial_shapes,
                    level_start_index,
                    sampling_locations.float(),
                    attention_weights.float(),
                    im2col_step,
                )
        return _mmcv_msda.MultiScaleDeformableAttnFunction.apply(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step
        )
    return _mmcv_msda.multi_scale_deformable_attn_pytorch(
        value, spatial_shapes, sampling_locations, attention_weights
    )


def _check_heads(name: str, embed_dims: int, num_heads: int) -> None:
    if embed_dims % num_heads != 0:
        raise ValueError(
            f"{name}: embed_dims must be divisible by num_heads, got {embed_dims} and {num_heads}"
        )
    head_dim = embed_dims // num_heads
    if head_dim & (head_dim - 1):
        warnings.warn(
            f"{name}: a head dimension that is a power of 2 is faster in the CUDA MSDA kernel "
            f"(got {head_dim})",
            stacklevel=3,
        )


def _check_keys(name: str, spatial_shapes: torch.Tensor, num_value: int, num_levels: int) -> None:
    if spatial_shapes.dim() != 2 or spatial_shapes.shape != (num_levels, 2):
        raise ValueError(
            f"{name}: spatial_shapes must be ({num_levels}, 2) (h, w) per level, "
            f"got {tuple(spatial_shapes.shape)}"
        )
    total = int((spatial_shapes[:, 0] * spatial_shapes[:, 1]).sum())
    if total != num_value:
        raise ValueError(
            f"{name}: value has {num_value} keys but spatial_shapes {spatial_shapes.tolist()} cover {total}"
        )


def grid_init_bias(offsets: nn.Linear, num_heads: int, slots: int, num_points: int) -> None:
    """The published sampling-offset bias: head h points along (cos, sin)(2πh/heads) scaled so
    the larger component is ±1, times (point index + 1), repeated over ``slots`` (levels, or
    queue slots × levels); flattened (head, slot, point, xy). Computed in float32."""
    device = offsets.bias.device
    thetas = torch.arange(num_heads, dtype=torch.float32, device=device) * (2.0 * math.pi / num_heads)
    grid = torch.stack([thetas.cos(), thetas.sin()], -1)
    grid = (
        (grid / grid.abs().max(-1, keepdim=True)[0]).view(num_heads, 1, 1, 2).repeat(1, slots, num_points, 1)
    )
    grid = grid * torch.arange(1, num_points + 1, dtype=torch.float32, device=device).view(1, 1, -1, 1)
    with torch.no_grad():
        offsets.bias.copy_(grid.view(-1))


@MODELS.register_module()
class TemporalSelfAttention(BaseModule):
    """BEV self-attention over [history, current] (§7). ``forward`` takes ``query``
    (bs, nq, C), ``value`` (bs·2, nq, C) as [prev_bev, query] pairs or None (then the query
    is duplicated), ``reference_points`` (bs·2, nq, levels, 2) and the BEV ``spatial_shapes``
    [[bev_h, bev_w]]; it returns (bs, nq, C), residual included.

    ``double_value_proj``: the value goes through ``value_proj`` twice (the same weights,
    ``value_proj(value_proj(value))``), as the published OpenLane-V2 ROAD TSA does; False
    (default) is the occupancy TSA's single projection. No parameter is added."""

    def __init__(
        self,
        embed_dims: int = 256,
        num_heads: int = 8,
        num_levels: int = 4,
        num_points: int = 4,
        num_bev_queue: int = 2,
        im2col_step: int = 64,
        dropout: float = 0.1,
        batch_first: bool = True,
        norm_cfg: dict | None = None,
        init_cfg: dict | None = None,
        double_value_proj: bool = False,
    ):
        super().__init__(init_cfg)
        _check_heads(type(self).__name__, embed_dims, num_heads)
        if not isinstance(double_value_proj, bool):
            raise TypeError(
                f"TemporalSelfAttention: double_value_proj must be True or False, got {double_value_proj!r}"
            )
        self.double_value_proj = double_value_proj
        if num_bev_queue != 2:
            raise ValueError(
                "TemporalSelfAttention: num_bev_queue must be 2 (the value is [prev_bev, query]), "
                f"got {num_bev_queue}"
            )
        self.norm_cfg = norm_cfg
        self.dropout = nn.Dropout(dropout)
        self.batch_first = batch_first
        self.fp16_enabled = False
        self.im2col_step = im2col_step
        self.embed_dims = embed_dims
        self.num_levels = num_levels
        self.num_heads = num_heads
        self.num_points = num_points
        self.num_bev_queue = num_bev_queue
        queue_dims = embed_dims * num_bev_queue
        self.sampling_offsets = nn.Linear(queue_dims, num_bev_queue * num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(queue_dims, num_bev_queue * num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dims, embed_dims)
        self.output_proj = nn.Linear(embed_dims, embed_dims)
        self.init_weights()

    def init_weights(self) -> None:
        constant_init(self.sampling_offsets, 0.0)
        grid_init_bias(
            self.sampling_offsets, self.num_heads, self.num_levels * self.num_bev_queue, self.num_points
        )
        constant_init(self.attention_weights, val=0.0, bias=0.0)
        xavier_init(self.value_proj, distribution="uniform", bias=0.0)
        xavier_init(self.output_proj, distribution="uniform", bias=0.0)
        self._is_init = True

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        identity: torch.Tensor | None = None,
        query_pos: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        reference_points: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
        level_start_index: torch.Tensor | None = None,
        flag: str = "decoder",
        **kwargs,
    ) -> torch.Tensor:
        name = type(self).__name__
        queue = self.num_bev_queue
        if value is None:  # no history: the query (before the positional encoding) twice
            if not self.batch_first:
                raise ValueError(f"{name}: value=None (no prev_bev) needs batch_first=True")
            bs, num_bev, channels = query.shape
            value = torch.stack([query, query], 1).reshape(bs * queue, num_bev, channels)
        if identity is None:
            identity = query
        if query_pos is not None:
            query = query + query_pos
        if not self.batch_first:
            query = query.permute(1, 0, 2)
            value = value.permute(1, 0, 2)
        bs, num_query, channels = query.shape
        if channels != self.embed_dims:
            raise ValueError(f"{name}: query has {channels} channels, embed_dims is {self.embed_dims}")
        if value.dim() != 3 or value.shape[0] != bs * queue or value.shape[2] != channels:
            raise ValueError(
                f"{name}: value must be (bs·{queue}, keys, {channels}) = [prev_bev, query] per sample, "
                f"got {tuple(value.shape)} for bs={bs}"
            )
        num_value = value.shape[1]
        if spatial_shapes is None or reference_points is None:
            raise ValueError(f"{name}: reference_points and spatial_shapes are required")
        _check_keys(name, spatial_shapes, num_value, self.num_levels)
        if reference_points.shape[:3] != (bs * queue, num_query, self.num_levels):
            raise ValueError(
                f"{name}: reference_points must be (bs·{queue}, {num_query}, {self.num_levels}, 2|4), "
                f"got {tuple(reference_points.shape)}"
            )

        # Offsets and weights see [the sample's history, query + pos] (published value[:bs]: bs > 1 bug).
        history = value.view(bs, queue, num_value, channels)[:, 0]
        query = torch.cat([history, query], -1)
        value = self.value_proj(value)
        if self.double_value_proj:  # the OpenLane-V2 ROAD TSA (class docstring)
            value = self.value_proj(value)
        if key_padding_mask is not None:
            value = value.masked_fill(key_padding_mask[..., None], 0.0)
        value = value.reshape(bs * queue, num_value, self.num_heads, -1)

        heads, levels, points = self.num_heads, self.num_levels, self.num_points
        offsets = self.sampling_offsets(query).view(bs, num_query, heads, queue, levels, points, 2)
        weights = self.attention_weights(query).view(bs, num_query, heads, queue, levels * points)
        weights = weights.softmax(-1).view(bs, num_query, heads, queue, levels, points)  # per head and slot
        # queue slot next to the batch: row b·2 + slot, the layout of value
        weights = weights.permute(0, 3, 1, 2, 4, 5).reshape(bs * queue, num_query, heads, levels, points)
        offsets = offsets.permute(0, 3, 1, 2, 4, 5, 6).reshape(
            bs * queue, num_query, heads, levels, points, 2
        )

        if reference_points.shape[-1] == 2:
            normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1)  # (w, h)
            locations = (
                reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
            )
        elif reference_points.shape[-1] == 4:
            locations = (
                reference_points[:, :, None, :, None, :2]
                + offsets / points * reference_points[:, :, None, :, None, 2:] * 0.5
            )
        else:
            raise ValueError(
                f"{name}: the last dim of reference_points must be 2 or 4, got {reference_points.shape[-1]}"
            )

        output = multi_scale_deformable_attn(
            value, spatial_shapes, level_start_index, locations, weights, self.im2col_step
        )
        # (bs·2, nq, C) -> mean over the two queue slots -> (bs, nq, C)
        output = output.permute(1, 2, 0).reshape(num_query, channels, bs, queue).mean(-1).permute(2, 0, 1)
        output = self.output_proj(output)
        if not self.batch_first:
            output = output.permute(1, 0, 2)
        return self.dropout(output) + identity


@MODELS.register_module()
class MSDeformableAttention3D(BaseModule):
    """MSDA over the camera features with ``num_points`` split across the D pillar anchors
    of each query (§9): point p samples around anchor ``p mod D``. No output projection,
    dropout or residual: SCA adds those."""

    def __init__(
        self,
        embed_dims: int = 256,
        num_heads: int = 8,
        num_levels: int = 4,
        num_points: int = 8,
        im2col_step: int = 64,
        dropout: float = 0.1,
        batch_first: bool = True,
        norm_cfg: dict | None = None,
        init_cfg: dict | None = None,
    ):
        super().__init__(init_cfg)
        _check_heads(type(self).__name__, embed_dims, num_heads)
        self.norm_cfg = norm_cfg
        self.batch_first = batch_first
        self.output_proj = None  # published: none (and no dropout layer; ``dropout`` is accepted, unused)
        self.fp16_enabled = False
        self.im2col_step = im2col_step
        self.embed_dims = embed_dims
        self.num_levels = num_levels
        self.num_heads = num_heads
        self.num_points = num_points
        self.sampling_offsets = nn.Linear(embed_dims, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dims, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dims, embed_dims)
        self.init_weights()

    def init_weights(self) -> None:
        constant_init(self.sampling_offsets, 0.0)
        grid_init_bias(self.sampling_offsets, self.num_heads, self.num_levels, self.num_points)
        constant_init(self.attention_weights, val=0.0, bias=0.0)
        xavier_init(self.value_proj, distribution="uniform", bias=0.0)
        self._is_init = True

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        identity: torch.Tensor | None = None,
        query_pos: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        reference_points: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
        level_start_index: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        """``query`` (B', nq', C), ``value`` (B', keys, C), ``reference_points`` (B', nq', D, 2)
        normalised image coordinates -> (B', nq', C)."""
        name = type(self).__name__
        if value is None:
            value = query
        if query_pos is not None:
            query = query + query_pos
        if not self.batch_first:
            query = query.permute(1, 0, 2)
            value = value.permute(1, 0, 2)
        bs, num_query, channels = query.shape
        if channels != self.embed_dims or value.shape[-1] != self.embed_dims:
            raise ValueError(
                f"{name}: query and value must have embed_dims={self.embed_dims} channels, "
                f"got {channels} and {value.shape[-1]}"
            )
        num_value = value.shape[1]
        if spatial_shapes is None or reference_points is None:
            raise ValueError(f"{name}: reference_points and spatial_shapes are required")
        _check_keys(name, spatial_shapes, num_value, self.num_levels)
        if reference_points.shape[-1] != 2:  # published: NotImplementedError for boxes
            raise ValueError(
                f"{name}: reference_points must be (x, y) points, got last dim {reference_points.shape[-1]}"
            )
        if reference_points.dim() != 4 or reference_points.shape[:2] != (bs, num_query):
            raise ValueError(
                f"{name}: reference_points must be ({bs}, {num_query}, D, 2), "
                f"got {tuple(reference_points.shape)}"
            )
        anchors = reference_points.shape[2]
        if self.num_points % anchors:
            raise ValueError(
                f"{name}: num_points={self.num_points} must be a multiple of the number of "
                f"pillar anchors D={anchors}"
            )

        value = self.value_proj(value)
        if key_padding_mask is not None:
            value = value.masked_fill(key_padding_mask[..., None], 0.0)
        value = value.view(bs, num_value, self.num_heads, -1)
        heads, levels, points = self.num_heads, self.num_levels, self.num_points
        offsets = self.sampling_offsets(query).view(bs, num_query, heads, levels, points, 2)
        weights = self.attention_weights(query).view(bs, num_query, heads, levels * points)
        weights = weights.softmax(-1).view(
            bs, num_query, heads, levels, points
        )  # jointly over levels, points

        normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1)  # (w, h)
        offsets = offsets / normalizer[None, None, None, :, None, :]
        offsets = offsets.view(bs, num_query, heads, levels, points // anchors, anchors, 2)
        locations = reference_points[:, :, None, None, None, :, :] + offsets  # the anchor is the inner index
        locations = locations.view(bs, num_query, heads, levels, points, 2)

        output = multi_scale_deformable_attn(
            value, spatial_shapes, level_start_index, locations, weights, self.im2col_step
        )
        if not self.batch_first:
            output = output.permute(1, 0, 2)
        return output


@MODELS.register_module()
class SpatialCrossAttention(BaseModule):
    """BEV queries attend to the camera features where their pillar projects (§8).
    ``forward`` takes ``query`` (bs, nq, C), ``key``/``value`` (N, keys, bs, C),
    ``reference_points_cam`` (N, bs, nq, D, 2) and ``bev_mask`` (N, bs, nq, D) from
    ``BEVFormerEncoder.point_sampling``; returns (bs, nq, C), residual included. A query no
    camera sees gets ``output_proj.bias`` plus the residual."""

    def __init__(
        self,
        embed_dims: int = 256,
        num_cams: int = 6,
        pc_range: list[float] | None = None,
        dropout: float = 0.1,
        init_cfg: dict | None = None,
        batch_first: bool = False,
        deformable_attention: Mapping = dict(
            type="MSDeformableAttention3D",
            embed_dims=256,
            num_points=8,
            num_levels=4,
        ),
        **kwargs,
    ):
        super().__init__(init_cfg)
        self.init_cfg = init_cfg
        self.dropout = nn.Dropout(dropout)
        self.pc_range = pc_range
        self.fp16_enabled = False
        self.deformable_attention = build_attention(in_mmdet_scope(deformable_attention))
        if getattr(self.deformable_attention, "embed_dims", embed_dims) != embed_dims:
            raise ValueError(
                f"SpatialCrossAttention: deformable_attention has embed_dims="
                f"{self.deformable_attention.embed_dims}, the layer {embed_dims}"
            )
        self.embed_dims = embed_dims
        self.num_cams = num_cams
        self.output_proj = nn.Linear(embed_dims, embed_dims)
        self.batch_first = batch_first
        self.init_weight()

    def init_weight(self) -> None:  # published name (TransformerOcc's init does not call it again)
        xavier_init(self.output_proj, distribution="uniform", bias=0.0)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None,
        value: torch.Tensor | None,
        residual: torch.Tensor | None = None,
        query_pos: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        reference_points: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
        reference_points_cam: torch.Tensor | None = None,
        bev_mask: torch.Tensor | None = None,
        level_start_index: torch.Tensor | None = None,
        flag: str = "encoder",
        **kwargs,
    ) -> torch.Tensor:
        name = type(self).__name__
        if key is None:
            key = query
        if value is None:
            value = key
        inp_residual = query if residual is None else residual
        slots = torch.zeros_like(query)
        if query_pos is not None:
            query = query + query_pos
        if reference_points_cam is None or bev_mask is None:
            raise ValueError(
                f"{name}: reference_points_cam and bev_mask (from BEVFormerEncoder.point_sampling) "
                "are required"
            )
        bs, num_query, channels = query.shape
        if channels != self.embed_dims:
            raise ValueError(f"{name}: query has {channels} channels, embed_dims is {self.embed_dims}")
        if value.dim() != 4 or value.shape[0] != self.num_cams or value.shape[2] != bs:
            raise ValueError(
                f"{name}: key/value must be (num_cams={self.num_cams}, keys, bs={bs}, C), "
                f"got {tuple(value.shape)}"
            )
        if bev_mask.shape[:3] != (self.num_cams, bs, num_query):
            raise ValueError(
                f"{name}: bev_mask must be ({self.num_cams}, {bs}, {num_query}, D), "
                f"got {tuple(bev_mask.shape)}"
            )
        anchors = reference_points_cam.shape[3]

        # Each sample's own visible queries per camera (published: sample 0's for every sample).
        visible = bev_mask.sum(-1) > 0  # (N, bs, nq)
        indexes = [[visible[cam, b].nonzero().squeeze(-1) for cam in range(self.num_cams)] for b in range(bs)]
        max_len = max(len(index) for per_sample in indexes for index in per_sample)
        queries_rebatch = query.new_zeros([bs, self.num_cams, max_len, self.embed_dims])
        reference_points_rebatch = reference_points_cam.new_zeros([bs, self.num_cams, max_len, anchors, 2])
        for b in range(bs):
            for cam in range(self.num_cams):
                index = indexes[b][cam]
                queries_rebatch[b, cam, : len(index)] = query[b, index]
                reference_points_rebatch[b, cam, : len(index)] = reference_points_cam[cam, b, index]

        num_keys = key.shape[1]
        key = key.permute(2, 0, 1, 3).reshape(bs * self.num_cams, num_keys, self.embed_dims)
        value = value.permute(2, 0, 1, 3).reshape(bs * self.num_cams, num_keys, self.embed_dims)
        queries = self.deformable_attention(
            query=queries_rebatch.view(bs * self.num_cams, max_len, self.embed_dims),
            key=key,
            value=value,
            reference_points=reference_points_rebatch.view(bs * self.num_cams, max_len, anchors, 2),
            spatial_shapes=spatial_shapes,
            level_start_index=level_start_index,
        ).view(bs, self.num_cams, max_len, self.embed_dims)
        for b in range(bs):
            for cam in range(self.num_cams):
                index = indexes[b][cam]
                slots[b, index] += queries[b, cam, : len(index)]

        count = visible.permute(1, 2, 0).sum(-1)  # cameras seeing each query, (bs, nq)
        count = torch.clamp(count, min=1.0)
        slots = slots / count[..., None]
        slots = self.output_proj(slots)
        return self.dropout(slots) + inp_residual


@MODELS.register_module()
class CustomMSDeformableAttention(MultiScaleDeformableAttention):
    """mmcv's ``MultiScaleDeformableAttention`` (parameters ``sampling_offsets``,
    ``attention_weights``, ``value_proj``, ``output_proj``; the same init) with the published
    BEVFormer signature (``flag`` accepted) and the MSDA path of this module (fp32 kernel
    under autocast). ``batch_first=False`` by default, as published."""

    def __init__(
        self,
        embed_dims: int = 256,
        num_heads: int = 8,
        num_levels: int = 4,
        num_points: int = 4,
        im2col_step: int = 64,
        dropout: float = 0.1,
        batch_first: bool = False,
        norm_cfg: dict | None = None,
        init_cfg: dict | None = None,
    ):
        super().__init__(
            embed_dims=embed_dims,
            num_heads=num_heads,
            num_levels=num_levels,
            num_points=num_points,
            im2col_step=im2col_step,
            dropout=dropout,
            batch_first=batch_first,
            norm_cfg=norm_cfg,
            init_cfg=init_cfg,
        )
        self.fp16_enabled = False

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        identity: torch.Tensor | None = None,
        query_pos: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        reference_points: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
        level_start_index: torch.Tensor | None = None,
        flag: str = "decoder",
        **kwargs,
    ) -> torch.Tensor:
        name = type(self).__name__
        if value is None:
            value = query
        if identity is None:
            identity = query
        if query_pos is not None:
            query = query + query_pos
        if not self.batch_first:
            query = query.permute(1, 0, 2)
            value = value.permute(1, 0, 2)
        bs, num_query, _ = query.shape
        num_value = value.shape[1]
        if spatial_shapes is None or reference_points is None:
            raise ValueError(f"{name}: reference_points and spatial_shapes are required")
        _check_keys(name, spatial_shapes, num_value, self.num_levels)

        value = self.value_proj(value)
        if key_padding_mask is not None:
            value = value.masked_fill(key_padding_mask[..., None], 0.0)
        value = value.view(bs, num_value, self.num_heads, -1)
        heads, levels, points = self.num_heads, self.num_levels, self.num_points
        offsets = self.sampling_offsets(query).view(bs, num_query, heads, levels, points, 2)
        weights = self.attention_weights(query).view(bs, num_query, heads, levels * points)
        weights = weights.softmax(-1).view(bs, num_query, heads, levels, points)
        if reference_points.shape[-1] == 2:
            normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1)
            locations = (
                reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
            )
        elif reference_points.shape[-1] == 4:
            locations = (
                reference_points[:, :, None, :, None, :2]
                + offsets / points * reference_points[:, :, None, :, None, 2:] * 0.5
            )
        else:
            raise ValueError(
                f"{name}: the last dim of reference_points must be 2 or 4, got {reference_points.shape[-1]}"
            )
        output = multi_scale_deformable_attn(
            value, spatial_shapes, level_start_index, locations, weights, self.im2col_step
        )
        output = self.output_proj(output)
        if not self.batch_first:
            output = output.permute(1, 0, 2)
        return self.dropout(output) + identity
