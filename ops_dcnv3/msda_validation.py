"""Argument checks shared by every multi-scale deformable attention path (compiled kernels
and reference), in the style of :mod:`ops_dcnv3.validation`: each error names the argument
and what was expected, so a bad call never reaches a kernel."""

from __future__ import annotations

import contextlib
import numbers
import warnings

import torch

NAMES = ("value", "spatial_shapes", "level_start_index", "sampling_locations", "attention_weights")


def check_msda_args(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor | None,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    im2col_step: int | None = None,
) -> None:
    """Validates one call. ``level_start_index`` None (the reference's signature) skips
    that argument. The level table's *values* (each level at least 1x1, the starts the
    running sum of H*W, the total the number of keys) are checked when it lives on the
    CPU outside torch.compile; on a GPU the kernel checks them (reading them here would
    cost a second device synchronisation)."""
    tracing = torch.jit.is_tracing()
    # Under ONNX export the checks hold but the tracer warns that they are constants.
    with warnings.catch_warnings() if tracing else contextlib.nullcontext():
        if tracing:
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
        _check(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step)


def _check(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step):
    tensors = dict(
        zip(NAMES, (value, spatial_shapes, level_start_index, sampling_locations, attention_weights))
    )
    if level_start_index is None:
        del tensors["level_start_index"]
    for name, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"msda: {name} must be a torch.Tensor, got {type(tensor).__name__}")
    ranks = {
        "value": (4, "(batch, keys, heads, head_dim)"),
        "spatial_shapes": (2, "(levels, 2)"),
        "level_start_index": (1, "(levels,)"),
        "sampling_locations": (6, "(batch, queries, heads, levels, points, 2)"),
        "attention_weights": (5, "(batch, queries, heads, levels, points)"),
    }
    for name, tensor in tensors.items():
        rank, layout = ranks[name]
        if tensor.dim() != rank:
            raise ValueError(f"msda: {name} must be {rank}-D {layout}, got shape {tuple(tensor.shape)}")
    for name in ("value", "sampling_locations", "attention_weights"):
        if not tensors[name].is_floating_point():
            raise TypeError(f"msda: {name} must be a floating-point tensor, got {tensors[name].dtype}")
    for name in ("sampling_locations", "attention_weights"):
        if tensors[name].dtype != value.dtype:
            raise TypeError(
                f"msda: {name} dtype {tensors[name].dtype} differs from value dtype {value.dtype}"
            )
    for name in ("spatial_shapes", "level_start_index"):
        if name in tensors and (
            tensors[name].is_floating_point()
            or tensors[name].is_complex()
            or tensors[name].dtype == torch.bool
        ):
            raise TypeError(f"msda: {name} must be an integer tensor, got {tensors[name].dtype}")
    for name, tensor in tensors.items():
        if tensor.device != value.device:
            raise ValueError(f"msda: {name} is on {tensor.device} but value is on {value.device}")
    if im2col_step is not None and (
        isinstance(im2col_step, bool) or not isinstance(im2col_step, numbers.Integral) or im2col_step < 1
    ):
        raise ValueError(f"msda: im2col_step must be an int >= 1, got {im2col_step!r}")

    batch, keys, heads, head_dim = value.shape
    if sampling_locations.shape[-1] != 2:
        raise ValueError(
            f"msda: sampling_locations must end in (x, y) pairs, got shape {tuple(sampling_locations.shape)}"
        )
    loc_batch, queries, loc_heads, levels, points, _ = sampling_locations.shape
    if (loc_batch, loc_heads) != (batch, heads):
        raise ValueError(
            f"msda: sampling_locations has batch {loc_batch} and {loc_heads} heads but value "
            f"{tuple(value.shape)} has batch {batch} and {heads} heads"
        )
    if tuple(attention_weights.shape) != tuple(sampling_locations.shape[:5]):
        raise ValueError(
            f"msda: attention_weights must have shape (batch, queries, heads, levels, points) = "
            f"{tuple(sampling_locations.shape[:5])}, got {tuple(attention_weights.shape)}"
        )
    for name, size in (("heads", heads), ("head_dim", head_dim), ("levels", levels), ("points", points)):
        if size < 1:
            raise ValueError(
                f"msda: empty input, {name} is 0 (value {tuple(value.shape)}, sampling_locations "
                f"{tuple(sampling_locations.shape)})"
            )
    if tuple(spatial_shapes.shape) != (levels, 2):
        raise ValueError(
            f"msda: spatial_shapes must have shape (levels, 2) = ({levels}, 2) for the {levels} "
            f"levels of sampling_locations, got {tuple(spatial_shapes.shape)}"
        )
    if level_start_index is not None and tuple(level_start_index.shape) != (levels,):
        raise ValueError(
            f"msda: level_start_index must have shape (levels,) = ({levels},), got "
            f"{tuple(level_start_index.shape)}"
        )
    if spatial_shapes.device.type == "cpu" and not _compiling():
        _check_level_values(spatial_shapes, level_start_index, keys)


def _compiling() -> bool:
    return torch.compiler.is_compiling() or torch.jit.is_scripting()


def _check_level_values(
    spatial_shapes: torch.Tensor, level_start_index: torch.Tensor | None, keys: int
) -> None:
    shapes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    starts = None if level_start_index is None else [int(s) for s in level_start_index.tolist()]
    total = 0
    for level, (h, w) in enumerate(shapes):
        if h < 1 or w < 1:
            raise ValueError(f"msda: spatial_shapes[{level}] = ({h}, {w}); every level must be at least 1x1")
        if starts is not None and starts[level] != total:
            raise ValueError(
                f"msda: level_start_index[{level}] = {starts[level]} but the levels before it "
                f"hold {total} keys (level_start_index must be the running sum of H*W)"
            )
        total += h * w
    if total != keys:
        raise ValueError(
            f"msda: spatial_shapes {shapes} hold {total} keys but value has {keys} "
            "(value's dim 1 must be the sum of H*W over the levels)"
        )
