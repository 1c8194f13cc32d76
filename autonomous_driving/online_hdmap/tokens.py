"""Token arithmetic of ``PolylineGenerator`` / ``DGHead`` in plain torch
(driving_hdmap_params.md §3.3, §5.2, §5.5-5.8).

Vertex tokens: ``x + 1 in [1, 200]``, ``y + 1 in [1, 100]`` for canvas cells, 0 = stop;
sequences are ``[x1, y1, x2, y2, ..., 0]``. Sampling is top-p over masked logits; pass a
``torch.Generator`` for reproducible samples (``None`` uses the global RNG, as published).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

CANVAS_SIZE = (200, 100)
NEG = 1e9  # the published "minus infinity" for masked logits


def causal_mask(length: int, condition_len: int = 5, device: torch.device | None = None) -> torch.Tensor:
    """Training attention mask (float, ``(T, T)``): 0 where ``j <= i`` or both ``i`` and
    ``j`` are condition tokens (label + 4 box tokens, fully visible), else -inf."""
    if length < 1 or condition_len < 0:
        raise ValueError(f"length must be >= 1 and condition_len >= 0, got {length}, {condition_len}")
    i = torch.arange(length, device=device)[:, None]
    j = torch.arange(length, device=device)[None, :]
    visible = (j <= i) | ((i < condition_len) & (j < condition_len))
    mask = torch.zeros(length, length, device=device)
    return mask.masked_fill(~visible, float("-inf"))


def mask_y_logits(
    logits: torch.Tensor, canvas_size: Sequence[int] = CANVAS_SIZE, start: int = 0
) -> torch.Tensor:
    """At y positions (odd sequence index ``t``, counting from ``start``) only tokens
    ``1..canvas_y`` are allowed: ``logits * allowed - (1 - allowed) * 1e9``, so a
    disallowed entry is exactly -1e9 (no stop on a y coordinate, no y beyond the canvas).
    ``logits`` is ``(..., L, vocab)`` with ``vocab = max(canvas) + 1``."""
    vocab = max(canvas_size) + 1
    if logits.shape[-1] != vocab:
        raise ValueError(f"logits: last dim must be {vocab} (max(canvas_size) + 1), got {logits.shape[-1]}")
    idx = torch.arange(vocab, device=logits.device)
    allowed = ((idx >= 1) & (idx <= canvas_size[1])).to(logits.dtype)
    pos = torch.arange(start, start + logits.shape[-2], device=logits.device)
    is_y = (pos % 2 == 1)[:, None]
    masked = logits * allowed - (1 - allowed) * NEG
    return torch.where(is_y, masked, logits)


def top_k_logits(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest logits of the last dim (others lowered by 1e9); ``k = 0``
    (the published setting) is a no-op."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if k == 0:
        return logits
    kth = torch.topk(logits, min(k, logits.shape[-1]), dim=-1).values[..., -1:]
    return logits - (logits < kth).to(logits.dtype) * NEG


def top_p_logits(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter over the last dim: sorted descending, an entry is dropped (lowered
    by 1e9) when the probability mass *before* it exceeds ``p``; the top-1 always stays.
    ``p >= 1`` is a no-op (the published training setting)."""
    if not 0 < p:
        raise ValueError(f"p must be > 0, got {p}")
    if p >= 1:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    mass_before = torch.cumsum(probs, dim=-1) - probs
    drop_sorted = (mass_before > p).to(logits.dtype)
    drop = torch.zeros_like(logits).scatter(-1, order, drop_sorted)
    return logits - drop * NEG


def sample_logits(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row of the last dim, distributed as ``Categorical(logits=...)``.

    The same draw as ``Categorical(logits).sample()`` (``multinomial`` with replacement on
    the softmax), so with ``generator=None`` it consumes the global RNG exactly as the
    published sampler, and with a seeded generator the result does not depend on any
    other random call in the process."""
    # Categorical normalises the logits first, then softmaxes: same floats, same draw.
    probs = torch.softmax(logits - logits.logsumexp(dim=-1, keepdim=True), dim=-1)
    flat = probs.reshape(-1, probs.shape[-1])
    out = torch.multinomial(flat, 1, True, generator=generator)
    return out.reshape(probs.shape[:-1])


def finish_samples(decoded: torch.Tensor, max_len: int) -> dict[str, torch.Tensor]:
    """The generator's ``post_process`` of sampled rows ``(N, S)``: a row is complete when
    it holds a 0; its valid length is the first 0's index + 1 (all of ``S`` if none);
    tokens beyond are zeroed; rows are right-padded with 0 to ``max_len``. Returns
    ``completed (N,) bool``, ``polylines (N, max_len)``, ``polyline_masks (N, S) bool``."""
    if decoded.ndim != 2 or decoded.shape[1] > max_len:
        raise ValueError(f"decoded: expected (N, S <= {max_len}), got {tuple(decoded.shape)}")
    n, s = decoded.shape
    is_stop = decoded == 0
    completed = is_stop.any(dim=1)
    first_stop = torch.where(
        completed, is_stop.int().argmax(dim=1), torch.full((n,), s, device=decoded.device)
    )
    valid_len = torch.where(completed, first_stop + 1, first_stop)
    masks = torch.arange(s, device=decoded.device)[None] < valid_len[:, None]
    polylines = decoded.new_zeros(n, max_len)
    polylines[:, :s] = decoded * masks
    return {"completed": completed, "polylines": polylines, "polyline_masks": masks}


def tokens_to_vertices(
    tokens: torch.Tensor, mask: torch.Tensor, canvas_size: Sequence[int] = CANVAS_SIZE
) -> torch.Tensor:
    """``DGHead.post_process`` for one line: the masked tokens without the last one (the
    stop; for an incomplete sample its last real token), as ``(n, 2)`` vertices in (0, 1):
    ``((tx - 1) / 199, (ty - 1) / 99)``."""
    valid = torch.nonzero(mask.reshape(-1)).reshape(-1)[:-1]
    values = tokens.reshape(-1)[valid]
    if values.numel() % 2:
        raise ValueError(f"a line needs an even number of coordinate tokens, got {values.numel()}")
    scale = torch.tensor(canvas_size, dtype=torch.float32, device=tokens.device) - 1
    return (values.reshape(-1, 2).float() - 1) / scale


def vertices_to_tokens(vertices: torch.Tensor, canvas_size: Sequence[int] = CANVAS_SIZE) -> torch.Tensor:
    """Normalised ``(n, 2)`` vertices to the target sequence ``[int(x*199)+1,
    int(y*99)+1, ..., 0]`` (truncation, as the data pipeline's numpy version)."""
    if vertices.ndim != 2 or vertices.shape[1] != 2:
        raise ValueError(f"vertices: expected (n, 2), got {tuple(vertices.shape)}")
    scale = torch.tensor(canvas_size, dtype=torch.float64, device=vertices.device) - 1
    q = (vertices.double() * scale).to(torch.int32).reshape(-1) + 1
    return torch.cat([q, q.new_zeros(1)])


def sequence_nll(
    logits: torch.Tensor, targets: torch.Tensor, masks: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Generator loss ``-sum(log p(target) * mask * weight) / sum(weight)`` over a padded
    batch ``(N, L)``; the denominator is the plain sum of all weights (padding included,
    as published; padded weights are 0 in practice)."""
    if not (logits.shape[:2] == targets.shape == masks.shape == weights.shape):
        raise ValueError(
            f"logits (N, L, V) and targets/masks/weights (N, L) must agree, got {tuple(logits.shape)}, "
            f"{tuple(targets.shape)}, {tuple(masks.shape)}, {tuple(weights.shape)}"
        )
    logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.long()[..., None])[..., 0]
    return -(logp * masks.to(logp.dtype) * weights.to(logp.dtype)).sum() / weights.to(logp.dtype).sum()
