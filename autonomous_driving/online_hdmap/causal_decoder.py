"""The PolylineGenerator's decoder (driving_hdmap_params.md §5.1, §5.5, §5.8): pre-norm,
re-zero residuals, cross-attention into the BEV memory, and the incremental (cached)
inference path, whose cross-attention keys/values of the (fixed) memory are projected
once per inference. Published module and parameter names (``decoder.layers.{l}.self_attn``,
``multihead_attn``, ``linear1/2``, ``norm1-3``, ``res_weight1/2/3``), sequence-first."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class CausalTransformerDecoderLayer(nn.TransformerDecoderLayer):
    """``nn.TransformerDecoderLayer`` (ReLU, sequence-first) with its own forward:

    1. ``x = tgt_q + g1 * drop1(self_attn(LN1(tgt_q), LN1(tgt), LN1(tgt), mask))``
    2. ``x = x + g2 * drop2(multihead_attn(LN2(x), memory, memory))`` (memory not normalised)
    3. ``x = x + g3 * drop3(linear2(drop(relu(linear1(LN3(x))))))``

    ``tgt_q`` is ``tgt`` or, with ``only_last``, its last position (the cached inference
    step). ``g1..g3`` are the re-zero gains ``res_weight1..3`` (learnable, initialised 0, so
    a fresh layer is the identity). ``norm_first`` and ``re_zero`` are taken by this class
    and not passed on: as published the forward is always pre-norm whatever
    ``norm_first`` says; ``re_zero=False`` (not published) uses gains fixed at 1.

    ``project_memory(memory)`` gives the cross-attention keys/values ``(2, S, N, D)``;
    passed back as ``memory_kv``, step 2 uses them instead of projecting ``memory`` again
    (the same operations as ``nn.MultiheadAttention``'s sequence-first path, so the same
    numbers).
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        norm_first: bool = True,
        re_zero: bool = True,
        **kwargs,
    ) -> None:
        if kwargs.get("batch_first", False):
            raise ValueError("batch_first: the published decoder is sequence-first (batch_first=False)")
        super().__init__(d_model, nhead, dim_feedforward, dropout, **kwargs)
        self.norm_first_requested = norm_first
        self.re_zero = re_zero
        if re_zero:
            self.res_weight1 = nn.Parameter(torch.zeros(1))
            self.res_weight2 = nn.Parameter(torch.zeros(1))
            self.res_weight3 = nn.Parameter(torch.zeros(1))

    def _gain(self, k: int) -> torch.Tensor | float:
        return getattr(self, f"res_weight{k}") if self.re_zero else 1.0

    @staticmethod
    def _project_kv(mha: nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
        """``mha``'s keys and values of ``x (S, N, E)``, ``(2, N, heads, S, E / heads)``
        (contiguous, the layout the attention kernel reads)."""
        e, h = mha.embed_dim, mha.num_heads
        if x.ndim != 3 or x.shape[-1] != e:
            raise ValueError(f"memory: expected (S, N, {e}), got {tuple(x.shape)}")
        s, n, _ = x.shape
        bias = None if mha.in_proj_bias is None else mha.in_proj_bias[e:]
        kv = F.linear(x, mha.in_proj_weight[e:], bias)  # (S, N, 2E): [k | v], as torch packs them
        return kv.view(s, n, 2, h, e // h).permute(2, 1, 3, 0, 4).contiguous()

    def _attend(self, mha: nn.MultiheadAttention, query: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        """``mha(query, x, x)`` (sequence-first, no mask, no weights) from ``kv =
        _project_kv(mha, x)``: torch's own steps after the k/v in-projection."""
        e, h = mha.embed_dim, mha.num_heads
        t, n, _ = query.shape
        bias = None if mha.in_proj_bias is None else mha.in_proj_bias[:e]
        q = F.linear(query, mha.in_proj_weight[:e], bias)
        q = q.view(t, n * h, e // h).transpose(0, 1).view(n, h, t, e // h)
        drop = mha.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, kv[0], kv[1], None, drop, False)
        out = out.permute(2, 0, 1, 3).reshape(n * t, e)
        return F.linear(out, mha.out_proj.weight, mha.out_proj.bias).view(t, n, e)

    def project_memory(self, memory: torch.Tensor) -> torch.Tensor:
        """Cross-attention keys and values of ``memory (S, N, D)``, ``(2, N, heads, S, D / heads)``."""
        return self._project_kv(self.multihead_attn, memory)

    def project_self(self, tgt: torch.Tensor) -> torch.Tensor:
        """Self-attention keys and values of ``norm1(tgt)``, ``(2, N, heads, T, D / heads)``."""
        return self._project_kv(self.self_attn, self.norm1(tgt))

    def step(
        self, new: torch.Tensor, self_kv: torch.Tensor, memory_kv: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward(cat(prev, new), memory, only_last=True)`` for one new position ``new
        (1, N, D)`` from ``self_kv = project_self(prev)`` (unmasked, as in sampling): returns
        the output ``(1, N, D)`` and ``project_self(cat(prev, new))``."""
        if new.ndim != 3 or new.shape[0] != 1 or self_kv.ndim != 5 or self_kv.shape[1] != new.shape[1]:
            raise ValueError(
                f"new (1, N, D) and self_kv (2, N, heads, T, D / heads) expected, got "
                f"{tuple(new.shape)}, {tuple(self_kv.shape)}"
            )
        q = self.norm1(new)
        self_kv = torch.cat([self_kv, self._project_kv(self.self_attn, q)], 3)
        x = new + self._gain(1) * self.dropout1(self._attend(self.self_attn, q, self_kv))
        x = x + self._gain(2) * self.dropout2(self._attend(self.multihead_attn, self.norm2(x), memory_kv))
        ff = self.linear2(self.dropout(self.activation(self.linear1(self.norm3(x)))))
        return x + self._gain(3) * self.dropout3(ff), self_kv

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor | None,
        tgt_mask: torch.Tensor | None = None,
        only_last: bool = False,
        memory_kv: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``memory`` may be ``None`` when ``memory_kv`` (``project_memory``'s) is given."""
        if memory_kv is not None:
            if memory_kv.ndim != 5 or memory_kv.shape[0] != 2 or memory_kv.shape[1] != tgt.shape[1]:
                raise ValueError(
                    f"memory_kv: expected (2, N = {tgt.shape[1]}, heads, S, D / heads), "
                    f"got {tuple(memory_kv.shape)}"
                )
        elif memory is None:
            raise ValueError("memory: a (S, N, D) tensor is required when memory_kv is None")
        elif tgt.ndim != 3 or memory.ndim != 3 or tgt.shape[1] != memory.shape[1]:
            raise ValueError(
                "tgt (T, N, D) and memory (S, N, D) expected with one N, got "
                f"{tuple(tgt.shape)}, {tuple(memory.shape)}"
            )
        query = tgt[-1:] if only_last else tgt
        if tgt_mask is not None and only_last:
            tgt_mask = tgt_mask[-1:]
        kv = self.norm1(tgt)
        sa = self.self_attn(self.norm1(query), kv, kv, attn_mask=tgt_mask, need_weights=False)[0]
        x = query + self._gain(1) * self.dropout1(sa)
        if memory_kv is None:
            ca = self.multihead_attn(self.norm2(x), memory, memory, need_weights=False)[0]
        else:
            ca = self._attend(self.multihead_attn, self.norm2(x), memory_kv)
        x = x + self._gain(2) * self.dropout2(ca)
        ff = self.linear2(self.dropout(self.activation(self.linear1(self.norm3(x)))))
        return x + self._gain(3) * self.dropout3(ff)


class CausalTransformerDecoder(nn.TransformerDecoder):
    """A stack of ``CausalTransformerDecoderLayer`` (no final norm), with a layer cache.

    ``forward(tgt, memory, cache=None, tgt_mask=None) -> (output, cache)``:

    - training, or no cache yet (the first sampling step, the 5 condition tokens): every
      layer runs on all positions; in eval the per-layer outputs are returned as the cache
      ``(num_layers, T, N, D)`` (``None`` in training).
    - with a cache (later sampling steps): each layer computes only the last position,
      attending over its full input; layer 0's input is ``tgt`` as given (the published
      sampler re-embeds all tokens each step), layer ``k > 0``'s is ``cat(cache[k-1], new)``.
      The output covers all positions: ``cat(cache[-1], new)``.

    ``memory_kv`` (``project_memory(memory)``: one layer's keys/values per layer) replaces
    ``memory``: the sampler projects the memory once instead of at every step.

    ``self_kv`` (a list the caller keeps across steps, with ``memory_kv``, unmasked): the
    self-attention keys/values of layers ``k > 0``, whose earlier inputs (``cache[k-1]``)
    never change; the first pass fills it, later ones extend it by the new position, so
    each step projects one position there instead of all. Entry 0 stays ``None``: layer
    0's input is re-given whole each step (the re-drawn history of the published sampler).
    """

    def __init__(self, decoder_layer: CausalTransformerDecoderLayer, num_layers: int) -> None:
        if not isinstance(decoder_layer, CausalTransformerDecoderLayer):
            raise TypeError(
                f"decoder_layer must be a CausalTransformerDecoderLayer, got {type(decoder_layer)}"
            )
        super().__init__(decoder_layer, num_layers, norm=None)

    def project_memory(self, memory: torch.Tensor) -> list[torch.Tensor]:
        """Every layer's cross-attention keys/values (``layer.project_memory``); a list, not
        a stacked tensor, so that dropping finished lines copies each only once."""
        return [layer.project_memory(memory) for layer in self.layers]

    def forward(  # type: ignore[override]
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor | None,
        cache: torch.Tensor | None = None,
        tgt_mask: torch.Tensor | None = None,
        memory_kv: Sequence[torch.Tensor] | None = None,
        self_kv: list[torch.Tensor | None] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self_kv is not None and (memory_kv is None or tgt_mask is not None or self.training):
            raise ValueError("self_kv: only for unmasked eval steps with memory_kv")
        if memory_kv is not None and len(memory_kv) != self.num_layers:
            raise ValueError(
                f"memory_kv: expected {self.num_layers} layers' keys/values, got {len(memory_kv)}"
            )
        kvs = [None] * self.num_layers if memory_kv is None else list(memory_kv)
        if self.training or cache is None:
            x, outs = tgt, []
            for layer, kv in zip(self.layers, kvs):
                x = layer(x, memory, tgt_mask=tgt_mask, memory_kv=kv)
                outs.append(x)
            if self_kv is not None:
                self_kv[:] = [None] + [layer.project_self(o) for layer, o in zip(self.layers[1:], outs)]
            return x, (None if self.training else torch.stack(outs))
        if cache.shape[0] != self.num_layers or cache.shape[1] + 1 != tgt.shape[0]:
            raise ValueError(
                f"cache: expected ({self.num_layers}, T - 1 = {tgt.shape[0] - 1}, N, D), "
                f"got {tuple(cache.shape)}"
            )
        if self_kv is not None and len(self_kv) != self.num_layers:
            raise ValueError(f"self_kv: expected {self.num_layers} entries, got {len(self_kv)}")
        x, new_cache = tgt, []
        for k, (layer, kv) in enumerate(zip(self.layers, kvs)):
            if self_kv is None or k == 0:
                new = layer(x, memory, tgt_mask=tgt_mask, only_last=True, memory_kv=kv)
            else:
                new, self_kv[k] = layer.step(new, self_kv[k], kv)
            x = torch.cat([cache[k], new], 0)
            new_cache.append(x)
        return x, torch.stack(new_cache)
