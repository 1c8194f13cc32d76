"""The CPU inference fast path of the backbone (oneDNN linears with fused GELU/residual,
the DCNv3 kernel reading the transposed mask) against the plain path, and bfloat16
autocast inference against float32."""

from __future__ import annotations

import pytest
import torch

from classification.models import InternImage
from ops_dcnv3 import kernel_available

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


def test_fused_residual_add_matches_unfused():
    from classification.models.intern_image import linear_add

    layer = torch.nn.Linear(24, 16)
    x, residual = torch.randn(3, 5, 24), torch.randn(3, 5, 16)
    with torch.inference_mode():
        fused = linear_add(x, layer, residual)
    expected = residual + torch.nn.functional.linear(x, layer.weight, layer.bias)
    torch.testing.assert_close(fused, expected.detach(), atol=1e-5, rtol=1e-5)
