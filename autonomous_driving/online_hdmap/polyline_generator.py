"""``PolylineGenerator`` (``head.gen_net.*``, driving_hdmap_params.md §5): an autoregressive
vertex-token decoder conditioned on a class token and 4 box tokens, cross-attending into
the 25 x 50 BEV memory. Training is teacher forcing over the causal mask; inference is
the published top-p sampler with its re-sampling quirk, reproducible with a
``torch.Generator``.

Token arithmetic (masks, top-p, sampling, the loss) is ``tokens``; the decoder is
``causal_decoder``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from mmdet.registry import MODELS
from torch import nn

from .causal_decoder import CausalTransformerDecoder, CausalTransformerDecoderLayer
from .map_element_detector import coord_grid
from .tokens import (
    causal_mask,
    finish_samples,
    mask_y_logits,
    sample_logits,
    sequence_nll,
    top_k_logits,
    top_p_logits,
)

PUBLISHED_DECODER = dict(
    layer_config=dict(d_model=256, nhead=8, dim_feedforward=512, dropout=0.2, norm_first=True, re_zero=True),
    num_layers=6,
)
BOX_CONTEXT_IDS = (0, 0, 1, 1)  # bbox_context_embed row per box token: corner 0, corner 1
BOX_COORD_IDS = (0, 1, 0, 1)  # coord_embed row per box token: x, y


@MODELS.register_module()
class PolylineGenerator(nn.Module):
    """Vertex tokens ``x + 1 in [1, 200]``, ``y + 1 in [1, 100]``, 0 = stop; vocabulary
    ``max(canvas) + 1``.

    - ``forward(batch, context)`` (teacher forcing): ``batch`` holds ``lines_bs_idx (N,)``,
      ``lines_cls (N,)``, ``bbox_flat (N, 4)`` (quantised box, no +1) and ``polylines (N, L)``
      (possibly noised); returns y-masked ``logits (N, L, vocab)`` (position ``t`` predicts
      token ``t``).
    - ``loss(gt, logits)``: ``{'seq': -sum(log p * mask * weight) / sum(weight)}`` against the
      clean ``gt['polylines']``.
    - ``inference(batch, context, ...)``: sampling (eval mode), see its docstring.

    ``decoder_cross_attention`` is stored but, as published, never read: cross-attention into
    the BEV is always on. Unpublished options (an encoder, no class condition, continuous
    vertex embeddings, 3-D) raise.
    """

    def __init__(
        self,
        in_channels: int = 128,
        encoder_config: Mapping | None = None,
        decoder_config: Mapping | None = None,
        class_conditional: bool = True,
        num_classes: int = 3,
        canvas_size: Sequence[int] = (200, 100),
        max_seq_length: int = 500,
        decoder_cross_attention: bool = False,
        use_discrete_vertex_embeddings: bool = True,
        coord_dim: int = 2,
        condition_points_num: int = 3,
        kp_coord_dim: int = 2,
    ) -> None:
        super().__init__()
        if encoder_config is not None:
            raise ValueError("encoder_config: the published generator has no encoder (None)")
        for name, value, published in (
            ("class_conditional", class_conditional, True),
            ("use_discrete_vertex_embeddings", use_discrete_vertex_embeddings, True),
            ("coord_dim", coord_dim, 2),
            ("kp_coord_dim", kp_coord_dim, 2),
        ):
            if value != published:
                raise ValueError(
                    f"PolylineGenerator: {name}={value!r} is not supported (published: {published!r})"
                )
        if len(canvas_size) != 2 or min(canvas_size) < 1:
            raise ValueError(f"canvas_size: expected (X, Y) cells, got {canvas_size}")
        dec = dict(PUBLISHED_DECODER if decoder_config is None else decoder_config)
        layer_cfg = dict(dec.get("layer_config", {}))
        num_layers = int(dec.get("num_layers", 6))
        d = int(layer_cfg.get("d_model", 256))
        self.in_channels = in_channels
        self.class_conditional = class_conditional
        self.num_classes = num_classes
        self.max_seq_length = max_seq_length
        self.decoder_cross_attention = decoder_cross_attention  # never read, as published
        self.coord_dim = coord_dim
        self.condition_points_num = condition_points_num
        self.embed_dims = d
        self.vocab_size = max(canvas_size) + 1
        self.condition_len = 1 + 4  # label token + 4 box tokens

        # Registration order = the published state_dict order.
        self.register_buffer("canvas_size", torch.tensor(list(canvas_size), dtype=torch.long))
        self._project_to_logits = nn.Linear(d, self.vocab_size)
        self.input_proj = nn.Conv2d(in_channels, d, kernel_size=1)
        self.decoder = CausalTransformerDecoder(CausalTransformerDecoderLayer(**layer_cfg), num_layers)
        self.label_embed = nn.Embedding(num_classes, d)
        self.coord_embed = nn.Embedding(coord_dim, d)
        self.pos_embeddings = nn.Embedding(max_seq_length, d)
        self.bbox_context_embed = nn.Embedding(condition_points_num, d)
        self.img_coord_embed = nn.Linear(2, d)
        self.vertex_embed = nn.Embedding(self.vocab_size, d)
        self.init_weights()

    def init_weights(self) -> None:
        """Xavier-uniform on every parameter with dim > 1 (embedding tables, attention
        in_proj, linears, convs, the logit projection); biases, LN and the re-zero gains
        (0) keep their defaults, so every decoder layer starts as the identity."""
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    # ----------------------------------------------------------------- embeddings
    def _prepare_context(
        self, batch: Mapping[str, torch.Tensor], context: Mapping[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Condition tokens ``(N, 5, D)`` and the BEV memory ``(H*W, N, D)``."""
        bbox = batch["bbox_flat"]
        cls = batch["lines_cls"]
        bs_idx = batch["lines_bs_idx"]
        n = bbox.shape[0]
        if bbox.ndim != 2 or bbox.shape[1] != 4 or cls.shape != (n,) or bs_idx.shape != (n,):
            raise ValueError(
                "bbox_flat (N, 4), lines_cls (N,) and lines_bs_idx (N,) expected, got "
                f"{tuple(bbox.shape)}, {tuple(cls.shape)}, {tuple(bs_idx.shape)}"
            )
        if n and (int(bbox.min()) < 0 or int(bbox.max()) >= self.vocab_size):
            raise ValueError(
                f"bbox_flat: quantised corners must lie in [0, {self.vocab_size - 1}], "
                f"got [{int(bbox.min())}, {int(bbox.max())}]"
            )
        if n and (int(cls.min()) < 0 or int(cls.max()) >= self.num_classes):
            raise ValueError(f"lines_cls: labels must lie in [0, {self.num_classes}), got {cls.tolist()}")
        dev = bbox.device
        label = self.label_embed(cls.long())[:, None]
        box = (
            self.vertex_embed(bbox.long())
            + self.bbox_context_embed(torch.tensor(BOX_CONTEXT_IDS, device=dev))[None]
            + self.coord_embed(torch.tensor(BOX_COORD_IDS, device=dev))[None]
        )
        condition = torch.cat([label, box], 1)

        bev = context["bev_embeddings"]
        if bev.ndim != 4 or bev.shape[1] != self.in_channels:
            raise ValueError(
                f"bev_embeddings: expected (B, {self.in_channels}, H, W), got {tuple(bev.shape)}"
            )
        if n and int(bs_idx.max()) >= bev.shape[0]:
            raise ValueError(f"lines_bs_idx: index {int(bs_idx.max())} beyond the batch of {bev.shape[0]}")
        h, w = bev.shape[-2:]
        mem = self.input_proj(bev[bs_idx.long()])
        mem = mem + self.img_coord_embed(coord_grid(h, w, mem.device, mem.dtype)).permute(2, 0, 1)[None]
        memory = mem.flatten(2).permute(2, 0, 1)  # (H*W, N, D), row-major
        return condition, memory

    def _embed_inputs(self, seq: torch.Tensor) -> torch.Tensor:
        """``vertex_embed(s_t) + coord_embed(t mod 2) + pos_embeddings(t // 2)``."""
        s = seq.shape[1]
        if (s + 1) // 2 > self.max_seq_length:
            raise ValueError(f"sequence of {s} tokens exceeds max_seq_length={self.max_seq_length} vertices")
        t = torch.arange(s, device=seq.device)
        return (
            self.vertex_embed(seq.long()) + self.coord_embed(t % 2)[None] + self.pos_embeddings(t // 2)[None]
        )

    def _logits(self, out: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """Decoder output ``(T, N, D)`` -> y-masked logits of the positions from the last
        condition token on, ``(N, T - 4, vocab)``; ``last_only``: of the last one only,
        ``(N, 1, vocab)``."""
        first = out.shape[0] - 1 if last_only else self.condition_len - 1
        logits = self._project_to_logits(out[first:].transpose(0, 1))
        return mask_y_logits(logits, tuple(self.canvas_size.tolist()), start=first - self.condition_len + 1)

    # ----------------------------------------------------------------- training
    def forward(self, batch: Mapping[str, torch.Tensor], context: Mapping[str, Any]) -> torch.Tensor:
        seq = batch["polylines"]
        if seq.ndim != 2 or seq.shape[0] != batch["bbox_flat"].shape[0] or seq.shape[1] < 1:
            raise ValueError(
                f"polylines: expected (N, L >= 1) for N = {batch['bbox_flat'].shape[0]}, "
                f"got {tuple(seq.shape)}"
            )
        condition, memory = self._prepare_context(batch, context)
        x = torch.cat([condition, self._embed_inputs(seq[:, :-1])], 1).transpose(0, 1)
        # The published padded pass over all lines at once (its length-sorted two-chunk split
        # is an efficiency trick with the same result: the tail is masked in the loss).
        mask = causal_mask(x.shape[0], self.condition_len, device=x.device).to(x.dtype)
        out, _ = self.decoder(x, memory, tgt_mask=mask)
        return self._logits(out)

    def loss(self, gt: Mapping[str, torch.Tensor], logits: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"seq": sequence_nll(logits, gt["polylines"], gt["polyline_masks"], gt["polyline_weights"])}

    # ----------------------------------------------------------------- sampling
    @torch.no_grad()
    def inference(
        self,
        batch: Mapping[str, torch.Tensor],
        context: Mapping[str, Any],
        max_sample_length: int = 64,
        top_k: int = 0,
        top_p: float = 0.9,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        resample_history: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Sample up to ``2 * max_sample_length + 1`` tokens per line (eval mode only).

        Each step runs the cached decoder (no attention mask in eval: the 5 condition tokens
        see each other, later ones are computed one position at a time), masks y positions,
        applies temperature / top-k / top-p (0.9 published) and draws from the categorical.
        [quirk] with ``resample_history=True`` (published) *every* position is re-drawn each
        step and the re-drawn history is the next step's input (it feeds layer 0's
        self-attention); only the last draw is recorded. ``False`` keeps the recorded history
        (not published). Rows stop at their first 0 token; the loop ends when every row has.
        Work that does not change between steps is done once, with the same numbers and
        draws: the memory's cross-attention keys/values, the self-attention keys/values of
        layers > 0, and the filtered logits of the earlier positions (re-drawn each step).

        ``generator`` makes the draws reproducible and independent of the global RNG
        (``None``: the global RNG, as published). Returns ``finish_samples``' dict:
        ``completed (N,)``, ``polylines (N, 2 * max_sample_length + 1)``,
        ``polyline_masks (N, steps)``."""
        if self.training:
            raise RuntimeError("PolylineGenerator.inference samples with the layer cache: call .eval() first")
        if max_sample_length < 1 or max_sample_length > self.max_seq_length:
            raise ValueError(
                f"max_sample_length must be in [1, {self.max_seq_length}], got {max_sample_length}"
            )
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        seq_len = 2 * max_sample_length + 1
        condition, memory = self._prepare_context(batch, context)
        n = condition.shape[0]
        dev = condition.device
        decoded = torch.zeros(n, seq_len, dtype=torch.long, device=dev)
        if n == 0:
            return finish_samples(decoded[:, :1], seq_len)
        samples = torch.zeros(n, 0, dtype=torch.long, device=dev)
        remain = torch.arange(n, device=dev)
        # The memory is fixed during sampling: its cross-attention keys/values once, not per step.
        memory_kv = self.decoder.project_memory(memory)
        self_kv: list[torch.Tensor | None] = []  # layers > 0: keys/values of their fixed inputs
        filtered = condition.new_zeros(n, 0, self.vocab_size)  # top-p'd logits of the drawn positions
        cache = None
        step = 0
        for step in range(seq_len):
            x = torch.cat([condition, self._embed_inputs(samples)], 1).transpose(0, 1)
            out, cache = self.decoder(x, None, cache=cache, memory_kv=memory_kv, self_kv=self_kv)
            # Earlier positions' outputs are the cache's, unchanged: their filtered logits
            # too, so only the new position's are computed; all positions are still drawn.
            new = self._logits(out, last_only=step > 0) / temperature
            new = top_p_logits(top_k_logits(new, top_k), top_p)
            filtered = torch.cat([filtered, new], 1)
            drawn = sample_logits(filtered, generator)  # (n, step + 1)
            samples = drawn if resample_history else torch.cat([samples, drawn[:, -1:]], 1)
            decoded[remain, step] = drawn[:, -1]
            if not (decoded[:, : step + 1] != 0).all(1).any():
                break
            keep = drawn[:, -1] != 0
            if not keep.all():  # drop the stopped rows (copying the caches only then)
                remain, samples, filtered = remain[keep], samples[keep], filtered[keep]
                condition, cache = condition[keep], cache[:, :, keep]
                memory_kv = [kv[:, keep] for kv in memory_kv]
                self_kv = [None if kv is None else kv[:, keep] for kv in self_kv]
        return finish_samples(decoded[:, : step + 1], seq_len)
