"""Bad multi-scale deformable attention input gives a clear error naming the argument, on
every path (kernel entry, reference, direct torch.ops call), never a crash or a wrong read."""

from __future__ import annotations

import pytest
import torch
from msda_cases import Case

from ops_dcnv3.msda import (
    kernel_available,
    multi_scale_deformable_attn,
    multi_scale_deformable_attn_reference,
)

CASE = Case(batch=2, queries=3, heads=2, head_dim=4, levels=((3, 4), (2, 2)), points=2)


def _inputs():
    return list(CASE.inputs(requires_grad=False))


def _refuse(inputs, match, *, im2col_step=64, reference=True):
    """The entry and the reference refuse the same input with a message matching `match`."""
    value, shapes, starts, loc, weights = inputs
    with pytest.raises((ValueError, TypeError), match=match):
        multi_scale_deformable_attn(value, shapes, starts, loc, weights, im2col_step)
    if reference:
        with pytest.raises((ValueError, TypeError), match=match):
            multi_scale_deformable_attn_reference(value, shapes, loc, weights)


VALUE, SHAPES, STARTS, LOC, WEIGHTS = range(5)


@pytest.mark.parametrize(
    "index, bad, match",
    [
        (VALUE, lambda t: t[0], r"value must be 4-D \(batch, keys, heads, head_dim\)"),
        (LOC, lambda t: t[..., 0], r"sampling_locations must be 6-D"),
        (WEIGHTS, lambda t: t[..., None], r"attention_weights must be 5-D"),
        (SHAPES, lambda t: t.flatten(), r"spatial_shapes must be 2-D \(levels, 2\)"),
        (STARTS, lambda t: t[None], r"level_start_index must be 1-D"),
    ],
)
def test_wrong_rank(index, bad, match):
    inputs = _inputs()
    inputs[index] = bad(inputs[index])
    _refuse(inputs, match, reference=index != STARTS)


def test_locations_must_be_xy_pairs():
    inputs = _inputs()
    inputs[LOC] = torch.cat([inputs[LOC], inputs[LOC][..., :1]], dim=-1)
    _refuse(inputs, r"sampling_locations must end in \(x, y\) pairs")


@pytest.mark.parametrize("dim, name", [(0, "batch"), (2, "heads")])
def test_locations_batch_and_heads_must_match_value(dim, name):
    """The batch or heads of the locations and weights doubled, value left alone."""
    inputs = _inputs()
    inputs[LOC] = torch.cat([inputs[LOC], inputs[LOC]], dim=dim)
    inputs[WEIGHTS] = torch.cat([inputs[WEIGHTS], inputs[WEIGHTS]], dim=dim)
    _refuse(inputs, r"sampling_locations has batch .* but value .* has batch")


def test_attention_weights_shape():
    inputs = _inputs()
    inputs[WEIGHTS] = inputs[WEIGHTS][:, :, :, :, :1]
    _refuse(inputs, r"attention_weights must have shape \(batch, queries, heads, levels, points\)")


def test_spatial_shapes_must_cover_every_level():
    inputs = _inputs()
    inputs[SHAPES] = inputs[SHAPES][:1]
    _refuse(inputs, r"spatial_shapes must have shape \(levels, 2\) = \(2, 2\)")


def test_level_start_index_length():
    inputs = _inputs()
    inputs[STARTS] = inputs[STARTS][:1]
    _refuse(inputs, r"level_start_index must have shape \(levels,\) = \(2,\)", reference=False)


def test_spatial_shapes_inconsistent_with_value():
    inputs = _inputs()
    inputs[SHAPES] = torch.tensor([[3, 4], [2, 3]])
    _refuse(inputs, r"spatial_shapes \[\(3, 4\), \(2, 3\)\] hold 18 keys but value has 16")


def test_empty_level():
    inputs = _inputs()
    inputs[SHAPES] = torch.tensor([[4, 4], [0, 3]])
    _refuse(inputs, r"spatial_shapes\[1\] = \(0, 3\); every level must be at least 1x1")


def test_level_start_index_inconsistent():
    inputs = _inputs()
    inputs[STARTS] = torch.tensor([0, 11])
    _refuse(inputs, r"level_start_index\[1\] = 11 but the levels before it hold 12 keys", reference=False)


@pytest.mark.parametrize("index, name", [(LOC, "sampling_locations"), (WEIGHTS, "attention_weights")])
def test_dtype_must_match_value(index, name):
    inputs = _inputs()
    inputs[index] = inputs[index].float()
    _refuse(inputs, rf"{name} dtype torch.float32 differs from value dtype torch.float64")


def test_value_must_be_floating():
    inputs = _inputs()
    inputs[VALUE] = inputs[VALUE].long()
    _refuse(inputs, r"value must be a floating-point tensor")


@pytest.mark.parametrize("index, name", [(SHAPES, "spatial_shapes"), (STARTS, "level_start_index")])
def test_level_table_must_be_integer(index, name):
    inputs = _inputs()
    inputs[index] = inputs[index].double()
    _refuse(inputs, rf"{name} must be an integer tensor", reference=index == SHAPES)


def test_not_a_tensor():
    inputs = _inputs()
    inputs[SHAPES] = [[3, 4], [2, 2]]
    _refuse(inputs, r"spatial_shapes must be a torch.Tensor, got list")


@pytest.mark.parametrize("step", [0, -1, 2.0, True])
def test_im2col_step(step):
    _refuse(_inputs(), r"im2col_step must be an int >= 1", im2col_step=step, reference=False)


def test_empty_dimensions():
    value, shapes, starts, loc, weights = Case(heads=1, levels=((2, 2),)).inputs(requires_grad=False)
    for name, (v, x, w) in {
        "heads": (value[:, :, :0], loc[:, :, :0], weights[:, :, :0]),
        "head_dim": (value[..., :0], loc, weights),
        "points": (value, loc[:, :, :, :, :0], weights[..., :0]),
    }.items():
        _refuse([v, shapes, starts, x, w], rf"empty input, {name} is 0")
    _refuse(
        [value, shapes[:0], starts[:0], loc[:, :, :, :0], weights[:, :, :, :0]], r"empty input, levels is 0"
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU for a second device")
def test_devices_must_match():
    inputs = _inputs()
    inputs[LOC] = inputs[LOC].cuda()
    _refuse(inputs, r"sampling_locations is on cuda:0 but value is on cpu")


@pytest.mark.skipif(not kernel_available("cpu"), reason="ops_dcnv3 MSDA kernel not built")
@pytest.mark.parametrize(
    "change, match",
    [
        (lambda i: i.__setitem__(SHAPES, torch.tensor([[3, 4], [2, 3]])), "hold 18 keys but value has 16"),
        (lambda i: i.__setitem__(STARTS, torch.tensor([0, 11])), r"level_start_index\[1\] is 11"),
        (lambda i: i.__setitem__(SHAPES, torch.tensor([[16, 1], [0, 5]])), "level 1 has spatial shape 0x5"),
        (lambda i: i.__setitem__(WEIGHTS, i[WEIGHTS][..., :1]), "attention_weights must be"),
        (lambda i: i.__setitem__(LOC, i[LOC].float()), "must share a floating dtype"),
    ],
)
def test_direct_op_call_is_checked(change, match):
    """torch.ops.ops_dcnv3.msda skips the Python checks: the C++ ones still refuse."""
    inputs = _inputs()
    change(inputs)
    with pytest.raises(RuntimeError, match=match):
        torch.ops.ops_dcnv3.msda(*inputs, 64)
    grad = torch.zeros(CASE.batch, CASE.queries, CASE.heads * CASE.head_dim, dtype=torch.float64)
    with pytest.raises(RuntimeError, match=match):
        torch.ops.ops_dcnv3.msda_backward(grad, *inputs, 64)
