"""The generator's causal re-zero decoder (driving_hdmap_params.md §5.1, §5.5, §5.8):
published keys, identity at init, the pre-norm composition, causality with the visible
condition block, and cached incremental decoding equal to the masked full pass."""

from __future__ import annotations

import pytest
import torch

from autonomous_driving.online_hdmap.causal_decoder import (
    CausalTransformerDecoder,
    CausalTransformerDecoderLayer,
)
from autonomous_driving.online_hdmap.tokens import causal_mask

D, H, FF = 32, 4, 64


def make(num_layers: int = 3, gains: bool = True) -> CausalTransformerDecoder:
    layer = CausalTransformerDecoderLayer(
        D, H, dim_feedforward=FF, dropout=0.2, norm_first=True, re_zero=True
    )
    dec = CausalTransformerDecoder(layer, num_layers)
    if gains:  # non-zero re-zero gains so every branch matters
        with torch.no_grad():
            for name, p in dec.named_parameters():
                if "res_weight" in name:
                    p.uniform_(0.5, 1.5)
    return dec.eval()


def test_published_keys_and_shapes() -> None:
    layer = CausalTransformerDecoderLayer(
        256, 8, dim_feedforward=512, dropout=0.2, norm_first=True, re_zero=True
    )
    dec = CausalTransformerDecoder(layer, 6)
    shapes = {k: tuple(v.shape) for k, v in dec.state_dict().items()}
    assert len(shapes) == 6 * 21 and not any(k.startswith("norm") for k in shapes)
    assert shapes["layers.5.res_weight1"] == (1,)
    assert shapes["layers.0.self_attn.in_proj_weight"] == (768, 256)
    assert shapes["layers.0.multihead_attn.out_proj.weight"] == (256, 256)
    assert shapes["layers.0.linear1.weight"] == (512, 256) and shapes["layers.0.linear2.weight"] == (256, 512)
    assert {f"layers.0.norm{i}.weight" for i in (1, 2, 3)} <= set(shapes)
    assert dec.layers[0].self_attn.dropout == 0.2 and dec.layers[0].dropout1.p == 0.2
    assert all((p == 0).all() for n, p in dec.named_parameters() if "res_weight" in n)


def test_identity_at_init() -> None:
    dec = make(gains=False)
    tgt, mem = torch.randn(7, 2, D), torch.randn(11, 2, D)
    out, cache = dec(tgt, mem, tgt_mask=causal_mask(7))
    assert torch.equal(out, tgt) and cache.shape == (3, 7, 2, D)


def test_layer_composition() -> None:
    layer = make(1).layers[0]
    tgt, mem = torch.randn(6, 2, D), torch.randn(9, 2, D)
    mask = causal_mask(6, 5)
    n1 = layer.norm1(tgt)
    x = tgt + layer.res_weight1 * layer.self_attn(n1, n1, n1, attn_mask=mask)[0]
    x = x + layer.res_weight2 * layer.multihead_attn(layer.norm2(x), mem, mem)[0]
    x = x + layer.res_weight3 * layer.linear2(torch.relu(layer.linear1(layer.norm3(x))))
    torch.testing.assert_close(layer(tgt, mem, tgt_mask=mask), x)


def test_causality_with_condition_block() -> None:
    dec = make()
    tgt, mem = torch.randn(9, 1, D), torch.randn(5, 1, D)
    mask = causal_mask(9, 5)
    base, _ = dec(tgt, mem, tgt_mask=mask)
    later = tgt.clone()
    later[7] += torch.randn(1, D)  # not a constant shift: LayerNorm would remove it
    out, _ = dec(later, mem, tgt_mask=mask)
    torch.testing.assert_close(out[:7], base[:7])  # the past does not see the future
    assert not torch.allclose(out[7], base[7])
    cond = tgt.clone()
    cond[4] += torch.randn(1, D)
    out, _ = dec(cond, mem, tgt_mask=mask)
    assert not torch.allclose(out[0], base[0])  # condition tokens see each other


def test_cached_decoding_equals_the_masked_pass() -> None:
    dec = make()
    tgt, mem = torch.randn(10, 3, D), torch.randn(8, 3, D)
    full, _ = dec(tgt, mem, tgt_mask=causal_mask(10, 5))
    out, cache = dec(tgt[:5], mem)  # step 0: the condition block, no mask
    assert cache.shape == (3, 5, 3, D)
    for t in range(6, 11):
        out, cache = dec(tgt[:t], mem, cache=cache)
        assert out.shape == (t, 3, D) and cache.shape == (3, t, 3, D)
    torch.testing.assert_close(out, full, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="cache: expected"):
        dec(tgt[:4], mem, cache=cache)


def test_training_mode_returns_no_cache_and_uses_dropout() -> None:
    dec = make().train()
    tgt, mem = torch.randn(6, 2, D), torch.randn(4, 2, D)
    a, cache = dec(tgt, mem, tgt_mask=causal_mask(6))
    b, _ = dec(tgt, mem, tgt_mask=causal_mask(6))
    assert cache is None and not torch.allclose(a, b)
    with pytest.raises(ValueError, match="sequence-first"):
        CausalTransformerDecoderLayer(D, H, batch_first=True)
