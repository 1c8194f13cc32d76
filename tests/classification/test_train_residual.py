"""The training-mode residual of an InternImage block (one addcmul with the stochastic-depth
keep mask) against timm's ``x + DropPath(branch)``: same draws, same values up to rounding,
same gradients."""

from __future__ import annotations

import pytest
import torch
from timm.layers import DropPath

from classification.models.intern_image import InternImageLayer
from ops_dcnv3.modules import DCNv3_pytorch


@pytest.mark.parametrize("scale_by_keep", [True, False])
def test_residual_matches_timm_drop_path(scale_by_keep):
    layer = InternImageLayer(DCNv3_pytorch, channels=16, groups=1, drop_path=0.5).train()
    layer.drop_path.scale_by_keep = scale_by_keep
    x = torch.randn(16, 3, 3, 4, requires_grad=True)
    branch = torch.randn(16, 3, 3, 4, requires_grad=True)
    torch.manual_seed(0)
    ours = layer._residual(x, branch)
    ours.backward(torch.ones_like(ours))
    grads = x.grad.clone(), branch.grad.clone()
    x.grad = branch.grad = None
    torch.manual_seed(0)
    theirs = x + DropPath(0.5, scale_by_keep=scale_by_keep).train()(branch)
    theirs.backward(torch.ones_like(theirs))
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(grads[0], x.grad)
    torch.testing.assert_close(grads[1], branch.grad)
    kept = (theirs - x).flatten(1).abs().sum(1) > 0
    assert 0 < kept.sum() < 16  # both kept and dropped samples were exercised


def test_residual_is_plain_add_without_stochastic_depth():
    layer = InternImageLayer(DCNv3_pytorch, channels=16, groups=1, drop_path=0.5).eval()
    x, branch = torch.randn(2, 3, 3, 16), torch.randn(2, 3, 3, 16)
    assert torch.equal(layer._residual(x, branch), x + branch)
