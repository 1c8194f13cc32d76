"""The CPU inference fast path of the backbone (oneDNN linears with fused GELU/residual,
the DCNv3 kernel reading the transposed mask) against the plain path, and bfloat16
autocast inference against float32."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from classification.models import InternImage
from ops_dcnv3 import dcnv3, kernel_available

pytestmark = pytest.mark.skipif(not kernel_available("cpu"), reason="ops_dcnv3 extension not built")

TINY = dict(channels=16, depths=(2, 1, 2, 1), groups=(2, 2, 4, 4), num_classes=10, drop_path_rate=0.0)


def _tiny_model(seed: int = 0, **kwargs) -> InternImage:
    torch.manual_seed(seed)
    model = InternImage(**{**TINY, **kwargs}).eval()
    # Non-zero offsets/masks: the published init zeroes them, which would sample the plain grid.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".dcn.offset." in name or ".dcn.mask." in name:
                p.normal_(0.0, 0.2)
    return model


def test_fast_path_matches_plain_path():
    model = _tiny_model()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():  # oneDNN linears, fused residual adds
        fast = model(x)
    plain = model(x)  # grad mode: F.linear and separate adds
    assert plain.requires_grad
    torch.testing.assert_close(fast, plain.detach(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("autocast", [False, True], ids=["float32", "bf16-autocast"])
@pytest.mark.parametrize("kind", ["plain", "gelu", "residual"])
def test_fused_linear_matches_unfused(kind, autocast):
    from ops_dcnv3.modules import layers

    torch.manual_seed(0)
    layer = torch.nn.Linear(24, 16)
    x, residual = torch.randn(3, 5, 24), torch.randn(3, 5, 16)
    kwargs = {"gelu": kind == "gelu", "residual": residual if kind == "residual" else None}
    with torch.autocast("cpu", torch.bfloat16, enabled=autocast):
        with torch.inference_mode():  # the fused oneDNN call
            fused = layers.linear(x, layer, **kwargs)
        expected = torch.nn.functional.linear(x, layer.weight, layer.bias)  # grad mode: plain
    expected = torch.nn.functional.gelu(expected) if kind == "gelu" else expected
    expected = residual + expected if kind == "residual" else expected
    # Without oneDNN bfloat16 (AVX2-only CPUs) the plain path runs: its float32 residual
    # promotes the sum to float32, as in training.
    fused_bf16 = kind != "residual" or layers._ONEDNN_BF16_LINEAR
    assert fused.dtype == (torch.bfloat16 if autocast and fused_bf16 else torch.float32)
    tol = dict(atol=3e-2, rtol=3e-2) if autocast else dict(atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused.float(), expected.detach().float(), **tol)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("kind", ["plain", "gelu", "residual"])
@pytest.mark.parametrize("onednn", [True, False], ids=["onednn", "aten"])
def test_float32_inference_linear_either_product_matches_unfused(monkeypatch, onednn, kind, bias):
    """Float32 inference runs one oneDNN call (AVX-512 CPUs) or ATen's product with the
    bias, GELU or residual fused around it (AVX2 only, where MKL's sgemm is faster): both
    give the plain path's values, and each calls oneDNN or not as it says."""
    from ops_dcnv3.modules import layers

    if onednn and not layers._ONEDNN_LINEAR:
        pytest.skip("PyTorch built without oneDNN")
    onednn_calls = []
    real = torch.ops.mkldnn._linear_pointwise

    class Recording:  # the op and its .binary overload, counted
        def __call__(self, *args):
            onednn_calls.append("unary")
            return real(*args)

        def binary(self, *args):
            onednn_calls.append("binary")
            return real.binary(*args)

    monkeypatch.setattr(layers, "_ONEDNN_FLOAT32", onednn)
    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", Recording())
    torch.manual_seed(0)
    layer = torch.nn.Linear(24, 40, bias=bias)
    x, residual = torch.randn(3, 7, 24), torch.randn(3, 7, 40)
    residual_before = residual.clone()
    kwargs = {"gelu": kind == "gelu", "residual": residual if kind == "residual" else None}
    with torch.inference_mode():
        got = layers.linear(x, layer, **kwargs)
    assert torch.equal(residual, residual_before)  # the sum starts from a copy
    assert len(onednn_calls) == (1 if onednn else 0)
    expected = torch.nn.functional.linear(x, layer.weight, layer.bias)
    expected = torch.nn.functional.gelu(expected) if kind == "gelu" else expected
    expected = residual + expected if kind == "residual" else expected
    assert got.shape == expected.shape and got.is_contiguous()
    torch.testing.assert_close(got, expected.detach(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("residual", [True, False], ids=["residual", "no-residual"])
@pytest.mark.parametrize("fc2_bias", [True, False], ids=["bias", "no-bias"])
def test_mlp_in_row_blocks_matches_plain_mlp(monkeypatch, residual, fc2_bias):
    """The MLP's inference on ATen's products, in blocks of rows (7 here: 60 rows make eight
    whole blocks and a partial one), gives the plain fc2(gelu(fc1(x))) (+ residual), and
    MLPLayer takes it where it serves."""
    from classification.models.intern_image import MLPLayer
    from ops_dcnv3.modules import layers

    monkeypatch.setattr(layers, "_ONEDNN_FLOAT32", False)
    monkeypatch.setattr(layers, "MLP_ROW_BLOCK", 7)
    torch.manual_seed(0)
    mlp = MLPLayer(24, 40).eval()
    if not fc2_bias:
        mlp.fc2.bias = None
    x = torch.randn(3, 5, 4, 24)
    res = torch.randn(3, 5, 4, 24) if residual else None
    res_before = res.clone() if residual else None
    expected = F.linear(F.gelu(F.linear(x, mlp.fc1.weight, mlp.fc1.bias)), mlp.fc2.weight, mlp.fc2.bias)
    expected = expected + res if residual else expected
    with torch.inference_mode():
        assert layers.mlp_in_row_blocks_serves(x, mlp.fc1, mlp.fc2, res)
        blocked = layers.mlp_in_row_blocks(x, mlp.fc1, mlp.fc2, res)
        through_module = mlp(x, residual=res)
    for got in (blocked, through_module):
        assert got.shape == expected.shape and got.is_contiguous()
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(blocked, through_module, atol=0, rtol=0)
    if residual:
        assert torch.equal(res, res_before)
    # not in grad mode, nor for a residual that is not contiguous
    assert not layers.mlp_in_row_blocks_serves(x, mlp.fc1, mlp.fc2, res)
    strided = torch.randn(3, 5, 24, 4).transpose(-1, -2)
    with torch.inference_mode():
        assert not layers.mlp_in_row_blocks_serves(x, mlp.fc1, mlp.fc2, strided)


def test_mlp_keeps_live_dropout_out_of_row_blocks(monkeypatch):
    """Under no_grad in train mode a live dropout must still drop: no blocked MLP there."""
    import classification.models.intern_image as intern_image
    from ops_dcnv3.modules import layers

    monkeypatch.setattr(layers, "_ONEDNN_FLOAT32", False)
    calls = []
    blocked = layers.mlp_in_row_blocks
    monkeypatch.setattr(intern_image, "mlp_in_row_blocks", lambda *a: calls.append(1) or blocked(*a))
    mlp = intern_image.MLPLayer(8, 16, drop=0.5)
    x, res = torch.randn(2, 3, 8), torch.randn(2, 3, 8)
    with torch.no_grad():
        mlp.train()(x, residual=res)
        assert calls == []
        mlp.eval()(x, residual=res)
        assert calls == [1]


def test_bf16_autocast_takes_the_plain_linear_without_onednn_bf16(monkeypatch):
    """An AVX2-only CPU (AMD EPYC Zen 3) has no oneDNN bfloat16 inner product: the fused
    call would fail to create its primitive, so the plain path must run instead."""
    from ops_dcnv3.modules import layers

    def no_onednn_call(*args, **kwargs):
        raise AssertionError("oneDNN linear called without bfloat16 support")

    monkeypatch.setattr(layers, "_ONEDNN_BF16_LINEAR", False)
    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", no_onednn_call)
    torch.manual_seed(0)
    layer = torch.nn.Linear(24, 16)
    x = torch.randn(3, 5, 24)
    with torch.autocast("cpu", torch.bfloat16), torch.inference_mode():
        got = layers.linear(x, layer, gelu=True)
    assert got.dtype == torch.bfloat16
    expected = torch.nn.functional.gelu(torch.nn.functional.linear(x, layer.weight, layer.bias))
    torch.testing.assert_close(got.float(), expected, atol=3e-2, rtol=3e-2)


# bfloat16 keeps 8 bits of mantissa: logits of the tiny model under autocast stay within
# 3 % of the largest float32 logit (measured: about 1 %).
BF16_TOLERANCE = 0.03


def test_bfloat16_autocast_inference_matches_float32(monkeypatch):
    from ops_dcnv3.modules.dcnv3 import DCNv3

    model = _tiny_model(seed=1)
    x = torch.randn(2, 3, 64, 64)
    kernel_dtypes = []

    def recording_core(value, offset, mask, *args):
        kernel_dtypes.append((value.dtype, offset.dtype, mask.dtype))
        return dcnv3(value, offset, mask, *args)

    monkeypatch.setattr(DCNv3, "core", staticmethod(recording_core))
    with torch.inference_mode():
        expected = model(x)
        kernel_dtypes.clear()
        with torch.autocast("cpu", torch.bfloat16):
            got = model(x)
    assert got.dtype == torch.bfloat16
    # every DCNv3 call ran in float32: the mask kernel turns bfloat16 logits into a float32
    # mask, and the op computes bfloat16 in float32 copies anyway
    assert kernel_dtypes and set(kernel_dtypes) == {(torch.float32,) * 3}
    scale = expected.abs().max().item()
    torch.testing.assert_close(got.float(), expected, atol=BF16_TOLERANCE * scale, rtol=0)


@pytest.mark.parametrize("grad", [False, True], ids=["inference", "training"])
def test_stem_runs_channels_last_through_the_layer_norm_kernel(monkeypatch, grad):
    """The stem stores its input channels-last on CPU, so both its LayerNorms see contiguous
    channels-last activations and run ops_dcnv3's kernel (ATen's over a copy otherwise);
    the values are the stem's plain NCHW computation."""
    import torch.nn.functional as F

    stem = _tiny_model().patch_embed.train(grad)
    x = torch.randn(2, 3, 32, 32)
    calls = []
    kernel = torch.ops.ops_dcnv3.layer_norm_last
    monkeypatch.setattr(torch.ops.ops_dcnv3, "layer_norm_last",
                        lambda *a: calls.append(a[0].shape) or kernel(*a), raising=False)
    with torch.set_grad_enabled(grad):
        out = stem(x)
    assert out.is_contiguous() and len(calls) == 2

    def plain_norm(t, norm):  # (N, C, H, W) -> (N, H, W, C)
        return F.layer_norm(t.permute(0, 2, 3, 1), norm.normalized_shape, norm.weight, norm.bias, norm.eps)

    with torch.no_grad():
        h = F.gelu(plain_norm(stem.conv1(x), stem.norm1[1]).permute(0, 3, 1, 2))
        expected = plain_norm(stem.conv2(h), stem.norm2[1])
    torch.testing.assert_close(out.detach(), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("core", ["DCNv3", "DCNv3_pytorch"])
def test_dcnv3_residual_is_added_to_the_output(core):
    """DCNv3(x, residual=r) is r + DCNv3(x): in the output projection's epilogue on CPU
    inference, a plain add elsewhere (grad mode here)."""
    from ops_dcnv3 import modules

    torch.manual_seed(0)
    dcn = getattr(modules, core)(channels=16, group=2).eval()
    with torch.no_grad():
        dcn.offset.weight.normal_(0.0, 0.2)
        dcn.mask.weight.normal_(0.0, 0.2)
    x, residual = torch.randn(2, 7, 9, 16), torch.randn(2, 7, 9, 16)
    with torch.inference_mode():
        fused, branch = dcn(x, residual=residual), dcn(x)
    torch.testing.assert_close(fused, residual + branch, atol=1e-5, rtol=1e-5)
    plain = dcn(x, residual=residual)  # grad mode: F.linear, then the add
    torch.testing.assert_close(plain.detach(), residual + branch, atol=1e-5, rtol=1e-5)


def test_forward_hook_on_dcn_sees_the_branch_not_the_sum():
    """With a hook on a block's dcn, inference calls it without the fused residual, so the
    hook sees DCNv3's own output (what extract_feature-style hooks capture)."""
    model = _tiny_model()
    x = torch.randn(1, 3, 32, 32)
    dcn = model.levels[0].blocks[0].dcn
    seen = []
    handle = dcn.register_forward_hook(lambda module, args, out: seen.append((args[0], out)))
    with torch.inference_mode():
        hooked = model(x)
        handle.remove()
        unhooked = model(x)
        (branch_input, branch_out), = seen
        torch.testing.assert_close(branch_out, dcn(branch_input))
    torch.testing.assert_close(hooked, unhooked, atol=1e-5, rtol=1e-5)
