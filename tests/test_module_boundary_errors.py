"""Clear errors at the module boundary: DCNv3 / DCNv3_pytorch take channels-last
(N, H, W, C) input and InternImage takes (N, in_chans, H, W) images; anything else raises
one ValueError naming the expected layout and channel count (not a matmul shape error from
deep inside), and the check does not get in the way of torch.compile / torch.export."""

from __future__ import annotations

import pytest
import torch

from classification.models import InternImage
from ops_dcnv3.modules import DCNv3, DCNv3_pytorch

TINY = dict(channels=16, depths=(1, 1, 1, 1), groups=(1, 2, 4, 8), core_op="DCNv3_pytorch", num_classes=3)


@pytest.mark.parametrize("module_class", [DCNv3, DCNv3_pytorch])
@pytest.mark.parametrize("shape, hint", [
    ((2, 8, 8, 24), ""),                                     # wrong C
    ((2, 16, 8, 12), "looks like (N, C, H, W)"),             # NCHW
    ((8, 8, 16), "no batch axis"),                           # one image without N
    ((2, 1, 8, 8, 16), ""),                                  # rank 5
])
def test_dcnv3_names_layout_and_channels(module_class, shape, hint):
    module = module_class(channels=16, group=2)
    with pytest.raises(ValueError) as error:
        module(torch.randn(shape))
    message = str(error.value)
    assert f"{module_class.__name__} expects input of layout (N, H, W, C) with C = 16 channels" in message
    assert f"got shape {shape}" in message and hint in message


@pytest.mark.parametrize("module_class", [DCNv3, DCNv3_pytorch])
def test_dcnv3_accepts_channels_last(module_class):
    module = module_class(channels=16, group=2)
    assert module(torch.randn(2, 8, 8, 16)).shape == (2, 8, 8, 16)


@pytest.mark.parametrize("shape, hint", [
    ((2, 32, 32, 3), "looks like (N, H, W, C)"),
    ((3, 32, 32), "no batch axis"),
    ((2, 1, 32, 32), ""),
    ((2, 3, 32), ""),
])
def test_internimage_names_layout_and_channels(shape, hint):
    model = InternImage(**TINY).eval()
    for forward in (model, model.forward_features, model.forward_multiscale):
        with pytest.raises(ValueError) as error:
            forward(torch.randn(shape))
        message = str(error.value)
        assert "InternImage expects images of layout (N, C, H, W) with C = 3 channels" in message
        assert f"got shape {shape}" in message and hint in message


def test_internimage_in_chans_is_respected():
    model = InternImage(**TINY, in_chans=1).eval()
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 3)
    with pytest.raises(ValueError, match="C = 1 channels, got shape \\(2, 3, 32, 32\\)"):
        model(torch.randn(2, 3, 32, 32))


def test_dcnv3_check_traces_through_compile_and_export():
    # the compiled-op DCNv3 under fullgraph compile / export: tests/ops_dcnv3/test_torch_integration.py
    module = DCNv3_pytorch(channels=16, group=2).eval()
    x = torch.randn(2, 8, 8, 16)
    with torch.no_grad():
        expected = module(x)
        compiled = torch.compile(module, backend="eager")  # the reference core itself graph-breaks
        torch.testing.assert_close(compiled(x), expected)
        with pytest.raises(ValueError, match="layout \\(N, H, W, C\\)"):
            compiled(torch.randn(2, 16, 8, 8))
    batch = torch.export.Dim("batch", min=1, max=8)
    exported = torch.export.export(module, (x,), dynamic_shapes={"input": {0: batch}})
    torch.testing.assert_close(exported.module()(x), expected)


def test_internimage_check_traces_through_export():
    model = InternImage(**TINY).eval()
    x = torch.randn(2, 3, 32, 32)
    batch = torch.export.Dim("batch", min=1, max=8)
    exported = torch.export.export(model, (x,), dynamic_shapes={"x": {0: batch}})
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x))
    assert exported.module()(torch.randn(3, 3, 32, 32)).shape == (3, 3)
