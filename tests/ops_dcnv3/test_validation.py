"""Bad input gives a clear error naming the argument, on every path (compiled kernel,
reference, direct torch.ops call) and never a crash."""

from __future__ import annotations

import pytest
import torch
from dcnv3_cases import Case

from ops_dcnv3 import dcnv3, dcnv3_core_pytorch, kernel_available

CASE = Case(group=2, group_channels=4)


def _call_both(x, offset, mask, params, remove_center=False, im2col_step=64):
    """Both implementations must refuse the same input with the same message."""
    errors = []
    for fn in (lambda: dcnv3(x, offset, mask, *params, im2col_step, remove_center),
               lambda: dcnv3_core_pytorch(x, offset, mask, *params, remove_center)):
        with pytest.raises((ValueError, TypeError)) as info:
            fn()
        errors.append(str(info.value))
    return errors


def _params(**changes):
    names = ["kernel_h", "kernel_w", "stride_h", "stride_w", "pad_h", "pad_w", "dilation_h",
             "dilation_w", "group", "group_channels", "offset_scale"]
    values = dict(zip(names, CASE.params()))
    values.update(changes)
    return tuple(values[name] for name in names)


@pytest.mark.parametrize("name", ["kernel_h", "kernel_w", "stride_h", "stride_w", "dilation_h",
                                  "dilation_w", "group", "group_channels"])
def test_scalar_arguments_below_one(name):
    x, offset, mask = CASE.inputs(requires_grad=False)
    for message in _call_both(x, offset, mask, _params(**{name: 0})):
        assert name in message and ">= 1" in message


def test_negative_pad():
    x, offset, mask = CASE.inputs(requires_grad=False)
    for message in _call_both(x, offset, mask, _params(pad_h=-1)):
        assert "pad_h" in message and ">= 0" in message


def test_im2col_step_below_one():
    x, offset, mask = CASE.inputs(requires_grad=False)
    with pytest.raises(ValueError, match="im2col_step must be >= 1"):
        dcnv3(x, offset, mask, *CASE.params(), 0, False)


def test_non_integer_kernel():
    x, offset, mask = CASE.inputs(requires_grad=False)
    for message in _call_both(x, offset, mask, _params(kernel_h=3.0)):
        assert "kernel_h must be an int" in message


def test_non_finite_offset_scale():
    x, offset, mask = CASE.inputs(requires_grad=False)
    for message in _call_both(x, offset, mask, _params(offset_scale=float("nan"))):
        assert "offset_scale" in message


@pytest.mark.parametrize("which", ["input", "offset", "mask"])
def test_wrong_rank(which):
    tensors = dict(zip(("input", "offset", "mask"), CASE.inputs(requires_grad=False)))
    tensors[which] = tensors[which].flatten(0, 1)
    for message in _call_both(tensors["input"], tensors["offset"], tensors["mask"], CASE.params()):
        assert f"{which} must be 4-D" in message


def test_channels_not_group_times_group_channels():
    x, offset, mask = CASE.inputs(requires_grad=False)
    for message in _call_both(x[..., :7], offset, mask, CASE.params()):
        assert "group * group_channels" in message and "7 channels" in message


@pytest.mark.parametrize("which,cut", [("offset", 1), ("mask", 1), ("offset", 0)])
def test_offset_mask_shape_inconsistent_with_output(which, cut):
    tensors = dict(zip(("input", "offset", "mask"), CASE.inputs(requires_grad=False)))
    t = tensors[which]
    tensors[which] = t[..., :-1] if cut else t[:, :-1]
    for message in _call_both(tensors["input"], tensors["offset"], tensors["mask"], CASE.params()):
        assert f"{which} must have shape" in message


def test_stride_mismatch_is_caught():
    """A stride-2 call with full-resolution offsets would read past the buffers."""
    x, offset, mask = CASE.inputs(requires_grad=False)
    for message in _call_both(x, offset, mask, _params(stride_h=2, stride_w=2)):
        assert "offset must have shape" in message


def test_integer_dtype():
    x, offset, mask = CASE.inputs(requires_grad=False)
    for message in _call_both(x.long(), offset, mask, CASE.params()):
        assert "input must be a floating-point tensor" in message and "int64" in message


def test_mixed_dtypes():
    x, offset, mask = CASE.inputs(requires_grad=False)
    for message in _call_both(x, offset.float(), mask, CASE.params()):
        assert "offset dtype torch.float32 differs from input dtype torch.float64" in message


def test_mixed_devices():
    x, offset, mask = CASE.inputs(requires_grad=False)
    for message in _call_both(x, offset, mask.to("meta"), CASE.params()):
        assert "mask is on meta" in message


def test_not_a_tensor():
    x, offset, mask = CASE.inputs(requires_grad=False)
    for message in _call_both(x.numpy(), offset, mask, CASE.params()):
        assert "input must be a torch.Tensor" in message


def test_empty_output():
    case = Case(h=2, w=2, kernel=(5, 5), pad=(0, 0))
    x = torch.zeros(1, 2, 2, 8, dtype=torch.float64)
    stub = torch.zeros(1, 1, 1, 1, dtype=torch.float64)
    for message in _call_both(x, stub, stub, case.params()):
        assert "empty output" in message


def test_remove_center_needs_odd_kernel():
    case = Case(kernel=(2, 3), pad=(0, 1))
    x, offset, mask = case.inputs(requires_grad=False)
    for message in _call_both(x, offset, mask, case.params(), remove_center=True):
        assert "remove_center needs an odd kernel" in message


@pytest.mark.skipif(not kernel_available("cpu"), reason="ops_dcnv3 extension not built")
def test_direct_op_call_is_guarded():
    """torch.ops.ops_dcnv3.dcnv3 bypasses the Python checks; the C++ ones still stop a
    bad call before any memory is touched."""
    x, offset, mask = CASE.inputs(requires_grad=False)
    op = torch.ops.ops_dcnv3.dcnv3
    with pytest.raises(RuntimeError, match="offset must be"):
        op(x, offset[:, :, :, :-2], mask, *CASE.params(), 64, False)
    with pytest.raises(RuntimeError, match="input channels"):
        op(x[..., :6], offset, mask, *CASE.params(), 64, False)
    with pytest.raises(RuntimeError, match="share a dtype"):
        op(x, offset.float(), mask, *CASE.params(), 64, False)
    with pytest.raises(RuntimeError, match="remove_center needs an odd kernel"):
        op(x, offset, mask, 2, 3, 1, 1, 0, 1, 1, 1, 2, 4, 1.0, 64, True)
    with pytest.raises(RuntimeError, match="must be >= 1"):
        op(x, offset, mask, 3, 3, 0, 1, 1, 1, 1, 1, 2, 4, 1.0, 64, False)
    with pytest.raises(RuntimeError, match="grad_output has shape"):
        torch.ops.ops_dcnv3.dcnv3_backward(x[:, :2], x, offset, mask, *CASE.params(), 64, False)


def test_nan_offsets_do_not_crash():
    """NaN/inf locations never index wild memory: they give NaN where they sample (the
    semantics of test_nan_semantics.py) and leave every other output alone."""
    x, offset, mask = CASE.inputs(requires_grad=False)
    offset = offset.clone()
    offset[0, 0, 0, :] = float("nan")
    offset[0, 1, 1, :] = float("inf")
    out = dcnv3(x, offset, mask, *CASE.params(), 64, False)
    assert out.shape == (2, 8, 9, 8)
    assert torch.isfinite(out[1]).all()
    assert out[0, 0, 0].isnan().all() and out[0, 1, 1].isnan().all()
    poisoned = torch.zeros(out.shape[:3], dtype=torch.bool)
    poisoned[0, 0, 0] = poisoned[0, 1, 1] = True
    assert torch.isfinite(out[~poisoned]).all()
