"""The generator's sampler projects the BEV memory's cross-attention keys/values once per
inference (per decoder layer) instead of at every step, and the self-attention keys/values
of layers > 0 once per position: the same numbers as ``nn.MultiheadAttention``, the same
draws as the uncached sampler, and the same lines for a seed as recorded before the change."""

from __future__ import annotations

import pytest
import torch

from autonomous_driving.online_hdmap.causal_decoder import (
    CausalTransformerDecoder,
    CausalTransformerDecoderLayer,
)
from autonomous_driving.online_hdmap.polyline_generator import PolylineGenerator
from autonomous_driving.online_hdmap.tokens import sample_logits, top_k_logits, top_p_logits

D, H, FF = 32, 4, 64
TOL = {torch.float64: dict(atol=1e-12, rtol=1e-12), torch.float32: dict(atol=1e-5, rtol=1e-5)}

# Recorded with the sampler before the keys/values cache (commit 74739fe), seeds 0 and 2,
# max_sample_length=8; float32 and float64 drew the same lines.
BEFORE = {
    (0, True): [
        [74, 22, 32, 8, 140, 54, 121, 15, 39, 35, 0, 0, 0, 0, 0, 0, 0],
        [0] * 17,
        [0] * 17,
        [158, 83, 152, 83, 125, 79, 108, 8, 159, 7, 0, 0, 0, 0, 0, 0, 0],
        [103, 54] + [0] * 15,
    ],
    (0, False): [
        [74, 22, 32, 8, 140, 54, 121, 15, 39, 35, 7, 87, 83, 99, 145, 83, 180],
        [0] * 17,
        [0] * 17,
        [158, 83, 152, 83, 125, 79, 108, 8, 159, 7, 0, 0, 0, 0, 0, 0, 0],
        [103, 54] + [0] * 15,
    ],
    (2, True): [
        [107, 63, 108, 38, 8, 44, 72, 41, 130, 15, 0, 0, 0, 0, 0, 0, 0],
        [13, 54, 72, 45, 79, 17] + [0] * 11,
        [141, 58, 172, 8, 49, 99, 58, 68] + [0] * 9,
        [77, 89] + [0] * 15,
        [19, 21, 27, 2, 110, 9, 194, 34, 140, 33, 169, 34, 0, 0, 0, 0, 0],
    ],
    (2, False): [
        [107, 63, 108, 38, 8, 44, 34, 41, 130, 15, 0, 0, 0, 0, 0, 0, 0],
        [13, 54, 72, 45, 79, 17] + [0] * 11,
        [141, 58, 172, 8, 49, 99, 58, 13] + [0] * 9,
        [77, 89] + [0] * 15,
        [19, 21, 27, 2, 110, 9, 194, 34, 140, 33, 169, 34, 0, 0, 0, 0, 0],
    ],
}


def make_gen(dtype: torch.dtype) -> PolylineGenerator:
    torch.manual_seed(0)
    gen = PolylineGenerator(
        in_channels=16,
        decoder_config=dict(
            layer_config=dict(d_model=D, nhead=H, dim_feedforward=FF, dropout=0.2), num_layers=3
        ),
    )
    with torch.no_grad():
        for name, p in gen.named_parameters():
            if "res_weight" in name:  # non-zero gains: every branch matters
                p.fill_(0.7)
        gen._project_to_logits.bias[0] += 4.0  # stops are likely: finished rows get dropped
    return gen.to(dtype).eval()


def make_inputs(dtype: torch.dtype) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(5)
    bev = torch.randn(2, 16, 4, 6, generator=g)
    batch = {
        "lines_bs_idx": torch.tensor([0, 1, 0, 1, 1]),
        "lines_cls": torch.tensor([0, 1, 2, 0, 1]),
        "bbox_flat": torch.tensor(
            [[10, 5, 60, 40], [100, 20, 190, 90], [0, 0, 199, 99], [30, 30, 80, 70], [5, 50, 150, 60]]
        ),
    }
    return batch, {"bev_embeddings": bev.to(dtype)}


def uncached_sampler(
    gen: PolylineGenerator, batch: dict, ctx: dict, steps: int, seed: int, resample_history: bool
) -> torch.Tensor:
    """The sampler as it was: ``nn.MultiheadAttention`` re-projects the memory every step."""
    g = torch.Generator().manual_seed(seed)
    cond, memory = gen._prepare_context(batch, ctx)
    n = cond.shape[0]
    decoded = torch.zeros(n, 2 * steps + 1, dtype=torch.long)
    samples, remain, cache = torch.zeros(n, 0, dtype=torch.long), torch.arange(n), None
    for i in range(2 * steps + 1):
        x = torch.cat([cond, gen._embed_inputs(samples)], 1).transpose(0, 1)
        out, cache = gen.decoder(x, memory, cache=cache)
        drawn = sample_logits(top_p_logits(top_k_logits(gen._logits(out), 0), 0.9), g)
        samples = drawn if resample_history else torch.cat([samples, drawn[:, -1:]], 1)
        decoded[remain, i] = drawn[:, -1]
        if not (decoded[:, : i + 1] != 0).all(1).any():
            break
        keep = drawn[:, -1] != 0
        remain, samples, cond, memory, cache = (
            remain[keep],
            samples[keep],
            cond[keep],
            memory[:, keep],
            cache[:, :, keep],
        )
    return decoded[:, : i + 1]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_projected_memory_equals_multihead_attention(dtype: torch.dtype) -> None:
    torch.manual_seed(1)
    layer = CausalTransformerDecoderLayer(D, H, dim_feedforward=FF, dropout=0.2).to(dtype).eval()
    with torch.no_grad():
        for k in (1, 2, 3):
            getattr(layer, f"res_weight{k}").fill_(0.8)
    q, mem = torch.randn(3, 2, D, dtype=dtype), torch.randn(11, 2, D, dtype=dtype)
    kv = layer.project_memory(mem)
    assert kv.shape == (2, 2, H, 11, D // H) and kv.is_contiguous()
    ref = layer.multihead_attn(q, mem, mem, need_weights=False)[0]
    torch.testing.assert_close(layer._attend(layer.multihead_attn, q, kv), ref, **TOL[dtype])
    tgt = torch.randn(7, 2, D, dtype=dtype)
    for only_last in (False, True):
        torch.testing.assert_close(
            layer(tgt, None, only_last=only_last, memory_kv=kv),
            layer(tgt, mem, only_last=only_last),
            **TOL[dtype],
        )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cached_decoder_with_projected_memory(dtype: torch.dtype) -> None:
    torch.manual_seed(2)
    dec = (
        CausalTransformerDecoder(CausalTransformerDecoderLayer(D, H, dim_feedforward=FF), 3).to(dtype).eval()
    )
    with torch.no_grad():
        for name, p in dec.named_parameters():
            if "res_weight" in name:
                p.uniform_(0.5, 1.5)
    tgt, mem = torch.randn(9, 3, D, dtype=dtype), torch.randn(8, 3, D, dtype=dtype)
    kv = dec.project_memory(mem)
    assert len(kv) == 3
    a, cache_a = dec(tgt[:5], mem)
    b, cache_b = dec(tgt[:5], None, memory_kv=kv)
    torch.testing.assert_close(b, a, **TOL[dtype])
    for t in range(6, 10):
        a, cache_a = dec(tgt[:t], mem, cache=cache_a)
        b, cache_b = dec(tgt[:t], None, cache=cache_b, memory_kv=kv)
        torch.testing.assert_close(b, a, **TOL[dtype])
        torch.testing.assert_close(cache_b, cache_a, **TOL[dtype])
    with pytest.raises(ValueError, match="memory_kv: expected 3 layers"):
        dec(tgt[:5], None, memory_kv=kv[:2])
    with pytest.raises(ValueError, match="memory_kv: expected \\(2, N = 2"):
        dec(tgt[:5, :2], None, memory_kv=kv)
    with pytest.raises(ValueError, match="memory: a \\(S, N, D\\) tensor is required"):
        dec(tgt[:5], None)
    with pytest.raises(ValueError, match="memory: expected \\(S, N, 32\\)"):
        dec.project_memory(mem[..., :16])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_layer_step_with_self_kv_equals_only_last(dtype: torch.dtype) -> None:
    torch.manual_seed(3)
    layer = CausalTransformerDecoderLayer(D, H, dim_feedforward=FF).to(dtype).eval()
    with torch.no_grad():
        for k in (1, 2, 3):
            getattr(layer, f"res_weight{k}").fill_(0.9)
    tgt, mem = torch.randn(8, 2, D, dtype=dtype), torch.randn(6, 2, D, dtype=dtype)
    self_kv = layer.project_self(tgt[:5])
    for t in range(6, 9):
        out, self_kv = layer.step(tgt[t - 1 : t], self_kv, layer.project_memory(mem))
        torch.testing.assert_close(out, layer(tgt[:t], mem, only_last=True), **TOL[dtype])
        torch.testing.assert_close(self_kv, layer.project_self(tgt[:t]), **TOL[dtype])
    with pytest.raises(ValueError, match="new \\(1, N, D\\) and self_kv"):
        layer.step(tgt[:2], self_kv, layer.project_memory(mem))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_decoder_self_kv_equals_full_recomputation(dtype: torch.dtype) -> None:
    torch.manual_seed(4)
    dec = CausalTransformerDecoder(CausalTransformerDecoderLayer(D, H, dim_feedforward=FF), 3)
    dec = dec.to(dtype).eval()
    with torch.no_grad():
        for name, p in dec.named_parameters():
            if "res_weight" in name:
                p.uniform_(0.5, 1.5)
    tgt, mem = torch.randn(10, 3, D, dtype=dtype), torch.randn(8, 3, D, dtype=dtype)
    kv, self_kv = dec.project_memory(mem), []
    a, cache_a = dec(tgt[:5], mem)
    b, cache_b = dec(tgt[:5], None, memory_kv=kv, self_kv=self_kv)
    assert self_kv[0] is None and [e.shape for e in self_kv[1:]] == [(2, 3, H, 5, D // H)] * 2
    for t in range(6, 10):
        new_tgt = tgt[:t] + 0.1 * t  # layer 0's whole input may change each step (re-drawn history)
        a, cache_a = dec(new_tgt, mem, cache=cache_a)
        b, cache_b = dec(new_tgt, None, cache=cache_b, memory_kv=kv, self_kv=self_kv)
        torch.testing.assert_close(b, a, **TOL[dtype])
    with pytest.raises(ValueError, match="self_kv: only for unmasked eval steps with memory_kv"):
        dec(tgt[:5], mem, self_kv=[])
    with pytest.raises(ValueError, match="self_kv: expected 3 entries"):
        dec(tgt[: t + 1], None, cache=cache_b, memory_kv=kv, self_kv=self_kv[:2])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("resample_history", [True, False])
def test_sampler_equals_uncached_draw_for_draw(dtype: torch.dtype, resample_history: bool) -> None:
    gen = make_gen(dtype)
    batch, ctx = make_inputs(dtype)
    for seed in (0, 1, 2):
        ref = uncached_sampler(gen, batch, ctx, 8, seed, resample_history)
        out = gen.inference(
            batch,
            ctx,
            max_sample_length=8,
            generator=torch.Generator().manual_seed(seed),
            resample_history=resample_history,
        )
        assert out["polyline_masks"].shape[1] == ref.shape[1]
        masks = out["polyline_masks"]
        assert torch.equal(out["polylines"][:, : ref.shape[1]] * masks, ref * masks)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_same_seed_same_lines_as_before(dtype: torch.dtype) -> None:
    gen = make_gen(dtype)
    batch, ctx = make_inputs(dtype)
    for (seed, resample_history), lines in BEFORE.items():
        out = gen.inference(
            batch,
            ctx,
            max_sample_length=8,
            generator=torch.Generator().manual_seed(seed),
            resample_history=resample_history,
        )
        assert out["polylines"].tolist() == lines, (seed, resample_history)


def test_memory_projected_once_per_inference(monkeypatch: pytest.MonkeyPatch) -> None:
    gen = make_gen(torch.float32)
    batch, ctx = make_inputs(torch.float32)
    calls = []
    original = CausalTransformerDecoderLayer.project_memory

    def counting(self: CausalTransformerDecoderLayer, memory: torch.Tensor) -> torch.Tensor:
        calls.append(memory.shape)
        return original(self, memory)

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the sampler must not re-project the memory through multihead_attn")

    monkeypatch.setattr(CausalTransformerDecoderLayer, "project_memory", counting)
    self_attn_calls = [0] * 3
    for k, layer in enumerate(gen.decoder.layers):
        monkeypatch.setattr(layer.multihead_attn, "forward", forbidden)
        original_sa = layer.self_attn.forward

        def counting_sa(*args: object, k: int = k, f: object = original_sa, **kwargs: object) -> object:
            self_attn_calls[k] += 1
            return f(*args, **kwargs)

        monkeypatch.setattr(layer.self_attn, "forward", counting_sa)
    out = gen.inference(batch, ctx, max_sample_length=8, generator=torch.Generator().manual_seed(2))
    steps = out["polyline_masks"].shape[1]
    assert steps > 2  # several steps ran
    assert calls == [torch.Size([24, 5, D])] * 3  # once per layer, all 5 lines
    # Layer 0 attends over its re-embedded input every step; layers > 0 through nn's
    # self-attention only in the first pass (then one new key/value per step).
    assert self_attn_calls == [steps, 1, 1]
