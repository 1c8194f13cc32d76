"""PolylineGenerator token arithmetic (driving_hdmap_params.md §5): masks, top-k/top-p,
seeded sampling, post-processing and the sequence loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from autonomous_driving.online_hdmap.tokens import (
    causal_mask,
    finish_samples,
    mask_y_logits,
    sample_logits,
    sequence_nll,
    tokens_to_vertices,
    top_k_logits,
    top_p_logits,
    vertices_to_tokens,
)
from autonomous_driving.online_hdmap.vectorize import line_to_tokens


def test_causal_mask_with_visible_condition_block() -> None:
    m = causal_mask(7, condition_len=5)
    visible = (m == 0).int()
    expected = torch.tensor(
        [
            [1, 1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 1, 1, 0],
            [1, 1, 1, 1, 1, 1, 1],
        ]
    )
    assert torch.equal(visible, expected)
    assert torch.isneginf(m[visible == 0]).all()


def test_y_positions_allow_only_1_to_100() -> None:
    logits = torch.randn(2, 4, 201)
    out = mask_y_logits(logits)
    for t in (0, 2):  # x positions: untouched (stop and 101..200 allowed)
        assert torch.equal(out[:, t], logits[:, t])
    for t in (1, 3):
        assert (out[:, t, 0] == -1e9).all() and (out[:, t, 101:] == -1e9).all()
        assert torch.equal(out[:, t, 1:101], logits[:, t, 1:101])
    # The parity follows the absolute position.
    assert torch.equal(mask_y_logits(logits[:, 1:2], start=1), out[:, 1:2])
    with pytest.raises(ValueError, match="last dim must be 201"):
        mask_y_logits(torch.zeros(1, 2, 200))


def test_top_p_keeps_the_nucleus() -> None:
    probs = torch.tensor([0.05, 0.5, 0.15, 0.3])  # sorted: .5, .3, .15, .05
    logits = probs.log()
    # p = 0.9: mass before each sorted entry 0, .5, .8, .95 -> only the .05 one goes.
    out = top_p_logits(logits, 0.9)
    assert torch.equal(out[[1, 2, 3]], logits[[1, 2, 3]]) and out[0] == pytest.approx(logits[0] - 1e9)
    # p = 0.5: mass before .3 is exactly .5, not > .5 -> kept; .15 and .05 go.
    out = top_p_logits(logits, 0.5)
    assert torch.equal(out[[1, 3]], logits[[1, 3]]) and (out[[0, 2]] < -1e8).all()
    # Tiny p: the top-1 always survives.
    assert (top_p_logits(logits, 1e-6) > -1e8).nonzero().flatten().tolist() == [1]
    assert top_p_logits(logits, 1.0) is logits
    with pytest.raises(ValueError, match="p must be > 0"):
        top_p_logits(logits, 0.0)


def test_top_k() -> None:
    logits = torch.tensor([[0.1, 3.0, -1.0, 2.0]])
    assert top_k_logits(logits, 0) is logits
    out = top_k_logits(logits, 2)
    assert torch.equal(out[0, [1, 3]], logits[0, [1, 3]]) and (out[0, [0, 2]] < -1e8).all()


def test_sampling_matches_categorical_and_is_seedable() -> None:
    logits = top_p_logits(mask_y_logits(torch.randn(8, 3, 201)), 0.9)
    torch.manual_seed(123)
    reference = torch.distributions.Categorical(logits=logits).sample()
    torch.manual_seed(123)
    assert torch.equal(sample_logits(logits), reference)  # global RNG: the published draw
    a = sample_logits(logits, torch.Generator().manual_seed(7))
    torch.rand(100)  # other random calls in between do not matter with a generator
    b = sample_logits(logits, torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and a.shape == (8, 3)
    # Masked entries are never drawn: y positions in 1..100.
    many = sample_logits(
        mask_y_logits(torch.zeros(1, 2, 201)).expand(500, 2, 201), torch.Generator().manual_seed(0)
    )
    assert ((many[:, 1] >= 1) & (many[:, 1] <= 100)).all() and (many[:, 0] > 100).any()


def test_finish_samples() -> None:
    decoded = torch.tensor([[5, 6, 0, 7], [5, 6, 7, 8]], dtype=torch.int32)
    out = finish_samples(decoded, max_len=6)
    assert out["completed"].tolist() == [True, False]
    assert out["polylines"].tolist() == [[5, 6, 0, 0, 0, 0], [5, 6, 7, 8, 0, 0]]
    assert out["polyline_masks"].tolist() == [[True, True, True, False], [True, True, True, True]]
    with pytest.raises(ValueError, match="S <= 3"):
        finish_samples(decoded, max_len=3)


def test_tokens_to_vertices() -> None:
    # Complete: the stop is dropped; (200 - 1) / 199 = 1, (100 - 1) / 99 = 1, (1 - 1) = 0.
    v = tokens_to_vertices(torch.tensor([200, 100, 1, 1, 0, 0]), torch.tensor([1, 1, 1, 1, 1, 0]).bool())
    assert v.tolist() == [[1.0, 1.0], [0.0, 0.0]]
    # Incomplete: the last real token is dropped instead (published).
    v = tokens_to_vertices(torch.tensor([5, 6, 7, 8, 9]), torch.ones(5, dtype=torch.bool))
    torch.testing.assert_close(v, torch.tensor([[4 / 199, 5 / 99], [6 / 199, 7 / 99]]))
    with pytest.raises(ValueError, match="even number"):
        tokens_to_vertices(torch.tensor([5, 6, 7, 8]), torch.ones(4, dtype=torch.bool))


def test_vertices_to_tokens_matches_the_pipeline() -> None:
    rng = np.random.default_rng(0)
    verts = rng.uniform(0, 1, (6, 2))
    assert vertices_to_tokens(torch.from_numpy(verts)).tolist() == line_to_tokens(verts).tolist()
    # Round trip within one cell.
    back = tokens_to_vertices(vertices_to_tokens(torch.from_numpy(verts)), torch.ones(13, dtype=torch.bool))
    assert (np.abs(back.numpy() - verts) <= np.array([1 / 199, 1 / 99])).all()


def test_sequence_nll() -> None:
    # Uniform logits: -log p = log 201 at every token.
    logits = torch.zeros(2, 3, 201)
    targets = torch.tensor([[4, 5, 0], [7, 0, 0]])
    masks = torch.tensor([[1, 1, 1], [1, 1, 0]]).bool()
    weights = torch.tensor([[1 / 3, 1 / 3, 1 / 3], [0.25, 0.25, 0.5]])
    # sum(w * m) = 1 + 0.5, sum(w) = 2 -> loss = log(201) * 1.5 / 2.
    assert sequence_nll(logits, targets, masks, weights).item() == pytest.approx(math.log(201) * 0.75)
    with pytest.raises(ValueError, match="must agree"):
        sequence_nll(logits, targets[:, :2], masks, weights)
