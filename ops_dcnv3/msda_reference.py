"""Pure-PyTorch multi-scale deformable attention: the ground truth the compiled kernels are
tested against, and the portable ONNX form (standard operators only).

One ``grid_sample`` per level (bilinear, zero padding, align_corners=False), which is the
operator's sampling rule by definition (msda.md), then the attention-weighted sum. Works
on any device; float16 and bfloat16 inputs are computed in float32 (normalised locations
need the precision: bfloat16 resolves only 1/256 of a level) and returned in their own
dtype."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .msda_validation import check_msda_args


def multi_scale_deformable_attn_reference(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """value (batch, keys, heads, head_dim), spatial_shapes (levels, 2) as (H, W),
    sampling_locations (batch, queries, heads, levels, points, 2) as normalised (x, y),
    attention_weights (batch, queries, heads, levels, points) ->
    (batch, queries, heads * head_dim). The signature of mmcv's
    ``multi_scale_deformable_attn_pytorch``."""
    check_msda_args(value, spatial_shapes, None, sampling_locations, attention_weights)
    batch, _, heads, head_dim = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    if (batch == 0 or queries == 0) and not torch.jit.is_tracing():
        return value.new_zeros((batch, queries, heads * head_dim))
    dtype = torch.float64 if value.dtype == torch.float64 else torch.float32
    # Python ints: an ONNX trace records the level sizes as constants (they are static).
    level_sizes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]

    # grid_sample's grid spans [-1, 1] over the pixel edges of each level.
    grid = sampling_locations.to(dtype) * 2 - 1
    # (batch, queries, heads, levels, points, 2) -> (batch * heads, queries, levels, points, 2);
    # -1 for the batch everywhere keeps it dynamic in an ONNX trace.
    grid = grid.transpose(1, 2).reshape(-1, queries, levels, points, 2)
    per_level = []
    first_key = 0
    for level, (h, w) in enumerate(level_sizes):
        # (batch, h*w, heads, head_dim) -> (batch * heads, head_dim, h, w)
        image = value[:, first_key : first_key + h * w].to(dtype)
        image = image.permute(0, 2, 3, 1).reshape(-1, head_dim, h, w)
        per_level.append(
            F.grid_sample(
                image, grid[:, :, level], mode="bilinear", padding_mode="zeros", align_corners=False
            )
        )  # (batch * heads, head_dim, queries, points)
        first_key += h * w
    samples = torch.stack(per_level, dim=3)  # (batch * heads, head_dim, queries, levels, points)
    weights = attention_weights.to(dtype).transpose(1, 2).reshape(-1, 1, queries, levels, points)
    out = (samples * weights).sum(dim=(3, 4))  # (batch * heads, head_dim, queries)
    out = out.reshape(-1, heads * head_dim, queries).transpose(1, 2)
    return out.contiguous().to(value.dtype)
