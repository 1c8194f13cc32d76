"""The DCNv3 module: published signature and parameter names, initialisation, and
DCNv3 (compiled kernel) == DCNv3_pytorch (reference) with the same weights."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from ops_dcnv3.functions import DCNv3Function, dcnv3_core_pytorch
from ops_dcnv3.modules import DCNv3, DCNv3_pytorch


def _randomise(module: torch.nn.Module, seed: int = 0) -> None:
    """Non-zero offsets/masks (the reset leaves them zero, i.e. taps on pixel centres)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            scale = 0.5 if name.startswith(("offset", "mask")) else 0.2
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale)


def test_parameter_names_and_shapes():
    m = DCNv3(channels=64, group=4, dw_kernel_size=5, center_feature_scale=True)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {
        "dw_conv.0.weight": (64, 1, 5, 5), "dw_conv.0.bias": (64,),
        "dw_conv.1.1.weight": (64,), "dw_conv.1.1.bias": (64,),
        "offset.weight": (72, 64), "offset.bias": (72,),
        "mask.weight": (36, 64), "mask.bias": (36,),
        "input_proj.weight": (64, 64), "input_proj.bias": (64,),
        "output_proj.weight": (64, 64), "output_proj.bias": (64,),
        "center_feature_scale_proj_weight": (4, 64), "center_feature_scale_proj_bias": (4,),
    }
    assert m.dw_conv[1][1].eps == 1e-6
    plain = DCNv3(channels=32, group=2, remove_center=True)
    assert plain.offset.out_features == 2 * 8 * 2 and plain.mask.out_features == 2 * 8
    assert "center_feature_scale_proj_weight" not in plain.state_dict()


def test_reset_parameters():
    m = DCNv3_pytorch(channels=16, group=2, center_feature_scale=True)
    for name in ("offset", "mask"):
        layer = getattr(m, name)
        assert torch.count_nonzero(layer.weight) == 0 and torch.count_nonzero(layer.bias) == 0
    assert torch.count_nonzero(m.input_proj.bias) == 0 and torch.count_nonzero(m.output_proj.bias) == 0
    bound = (6 / (16 + 16)) ** 0.5  # xavier-uniform
    assert m.input_proj.weight.abs().max() <= bound and m.input_proj.weight.std() > bound / 4
    assert torch.count_nonzero(m.center_feature_scale_proj_weight) == 0


def test_bad_configuration():
    with pytest.raises(ValueError, match="divisible by group"):
        DCNv3(channels=30, group=4)
    with pytest.raises(ValueError, match="remove_center needs an odd kernel_size"):
        DCNv3(channels=16, group=2, kernel_size=4, remove_center=True)
    with pytest.warns(UserWarning, match="not a power of 2"):
        DCNv3_pytorch(channels=24, group=2)
    with pytest.raises(ValueError, match="act_layer"):
        DCNv3(channels=16, group=2, act_layer="Swish")
    with pytest.raises(ValueError, match="norm_layer"):
        DCNv3(channels=16, group=2, norm_layer="GN")


@pytest.mark.parametrize("kwargs", [
    dict(channels=64, group=4),
    dict(channels=64, group=4, offset_scale=2.0),
    dict(channels=32, group=2, dw_kernel_size=5, center_feature_scale=True),
    dict(channels=32, group=4, remove_center=True, kernel_size=5, pad=2),
    dict(channels=16, group=1, act_layer="ReLU", norm_layer="BN"),
])
def test_kernel_module_matches_reference_module(kwargs):
    fast, slow = DCNv3(**kwargs).double(), DCNv3_pytorch(**kwargs).double()
    _randomise(fast)
    slow.load_state_dict(fast.state_dict(), strict=True)
    fast.eval(), slow.eval()
    x = torch.randn(2, 9, 10, kwargs["channels"], dtype=torch.float64)
    xs = x.clone().requires_grad_()
    x.requires_grad_()
    out_fast, out_slow = fast(x), slow(xs)
    torch.testing.assert_close(out_fast, out_slow)
    grad = torch.randn_like(out_fast)
    out_fast.backward(grad)
    out_slow.backward(grad)
    torch.testing.assert_close(x.grad, xs.grad)
    for (name, p), q in zip(fast.named_parameters(), slow.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_fresh_module_forward_is_close():
    """With the reset weights (zero offsets) both modules agree in float32 too."""
    fast = DCNv3(channels=64, group=4)
    slow = DCNv3_pytorch(channels=64, group=4)
    slow.load_state_dict(fast.state_dict())
    x = torch.randn(2, 14, 14, 64)
    torch.testing.assert_close(fast(x), slow(x), atol=1e-4, rtol=1e-4)


def test_published_function_entry_points():
    from dcnv3_cases import Case

    case = Case(group=2, group_channels=4)
    x, offset, mask = case.inputs()
    out = DCNv3Function.apply(x, offset, mask, *case.params(), 64, False)
    torch.testing.assert_close(out, dcnv3_core_pytorch(x, offset, mask, *case.params(), False))
    out.sum().backward()
    assert x.grad is not None and offset.grad is not None and mask.grad is not None


def test_missing_extension_falls_back_with_one_warning(tmp_path):
    """Importing never fails: without the compiled extension the reference runs, with
    one RuntimeWarning."""
    script = textwrap.dedent("""
        import sys, warnings
        sys.modules["ops_dcnv3._C"] = None  # makes `from . import _C` raise ImportError
        import torch
        import ops_dcnv3
        from ops_dcnv3.modules import DCNv3, DCNv3_pytorch
        assert not ops_dcnv3.extension_available() and ops_dcnv3.KERNEL_DEVICES == frozenset()
        fast, slow = DCNv3(16, group=2), DCNv3_pytorch(16, group=2)
        slow.load_state_dict(fast.state_dict())
        x = torch.randn(1, 5, 5, 16)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            a = fast(x); b = fast(x)
        messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        assert len(messages) == 1 and "pure-PyTorch reference" in messages[0], messages
        torch.testing.assert_close(a, slow(x))
        print("fallback ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "fallback ok" in result.stdout


def test_inference_fast_path_matches_autograd_path():
    """Without grad, CPU float32 linears run fused in oneDNN (bias, GELU) and the mask
    softmax runs transposed; the result equals the autograd path's."""
    from ops_dcnv3.modules.layers import linear

    module = DCNv3(channels=32, group=4, center_feature_scale=True)
    _randomise(module)
    x = torch.randn(2, 7, 9, 32)
    with torch.no_grad():
        fast = module(x)
    torch.testing.assert_close(fast, module(x), atol=1e-5, rtol=1e-5)
    layer = torch.nn.Linear(32, 48)
    with torch.no_grad():
        fused = linear(x, layer, gelu=True)
    torch.testing.assert_close(fused, torch.nn.functional.gelu(layer(x)), atol=1e-5, rtol=1e-5)
    assert fused.shape == (2, 7, 9, 48)
