"""``DGHead`` (``head.*``, driving_hdmap_params.md §3): detector, then generator.

Training (teacher forcing): the detector is trained on its own targets; the generator
gets the *ground-truth* classes, boxes and sequences (boxes and input tokens noised by
``NoiseSythesis``), and its loss targets are the clean sequences. Inference: the
detector's top-35 boxes condition the sampler; ``post_process`` turns tokens into
normalised vertices. ``build_targets`` is the model's published ``batch_data`` conversion
of the pipeline's ``polys`` into the two heads' inputs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from mmdet.registry import MODELS
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from .noise import NoiseSythesis
from .tokens import tokens_to_vertices

POLYS_KEYS = (
    "keypoint",
    "qkeypoint",
    "det_label",
    "gen_label",
    "polylines",
    "polyline_masks",
    "polyline_weights",
)


def _tensor(x: Any, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, device=device).to(dtype)


def build_targets(polys: Sequence[Mapping[str, Any]], device: torch.device | str = "cpu") -> dict[str, Any]:
    """Per-sample ``polys`` (``vectorize.polygonize_local_map_bbox``'s dict: numpy arrays or
    tensors) -> ``{'det': [{'bbox' (n, 4) float32 canvas units, 'class_label' (n,)}],
    'gen': {'lines_bs_idx', 'lines_cls', 'bbox_flat' (N, 4) int, 'polylines' (N, L),
    'polyline_masks' (N, L) bool, 'polyline_weights' (N, L) float32}}`` with the lines of
    all samples concatenated in order and the sequences 0-padded to the longest."""
    det, bs_idx, cls, bbox_flat, seqs, masks, weights = [], [], [], [], [], [], []
    for i, p in enumerate(polys):
        missing = [k for k in POLYS_KEYS if k not in p]
        if missing:
            raise KeyError(f"polys[{i}]: missing {missing} (expected PolygonizeLocalMapBbox's output)")
        n = len(p["det_label"])
        if not (len(p["keypoint"]) == len(p["qkeypoint"]) == len(p["polylines"]) == n):
            raise ValueError(f"polys[{i}]: keypoint, qkeypoint, polylines and det_label lengths differ")
        det.append(
            {
                "bbox": _tensor(p["keypoint"], torch.float32, device).reshape(n, 4),
                "class_label": _tensor(p["det_label"], torch.long, device).reshape(n),
            }
        )
        bs_idx.append(torch.full((n,), i, dtype=torch.long, device=device))
        cls.append(_tensor(p["gen_label"], torch.long, device).reshape(n))
        bbox_flat.append(_tensor(p["qkeypoint"], torch.long, device).reshape(n, 4))
        for k in range(n):
            s = _tensor(p["polylines"][k], torch.long, device).reshape(-1)
            m = _tensor(p["polyline_masks"][k], torch.bool, device).reshape(-1)
            w = _tensor(p["polyline_weights"][k], torch.float32, device).reshape(-1)
            if not (len(s) == len(m) == len(w)) or len(s) % 2 != 1:
                raise ValueError(
                    f"polys[{i}] line {k}: polylines, masks and weights must share one odd length (2n + 1), "
                    f"got {len(s)}, {len(m)}, {len(w)}"
                )
            seqs.append(s)
            masks.append(m)
            weights.append(w)
    if not seqs:
        raise ValueError("build_targets: no lines in the batch (samples without lines are dropped before)")
    gen = {
        "lines_bs_idx": torch.cat(bs_idx),
        "lines_cls": torch.cat(cls),
        "bbox_flat": torch.cat(bbox_flat),
        "polylines": pad_sequence(seqs, batch_first=True),
        "polyline_masks": pad_sequence(masks, batch_first=True),
        "polyline_weights": pad_sequence(weights, batch_first=True),
    }
    return {"det": det, "gen": gen}


@MODELS.register_module()
class DGHead(nn.Module):
    """Children ``det_net`` (MapElementDetector), ``gen_net`` (PolylineGenerator),
    ``augmentation`` (NoiseSythesis, when ``augmentation=True``).

    ``max_num_vertices`` is stored and, as published, unused: sampling runs
    ``max_sample_length`` (64 published, hard-coded there) vertices at most.
    ``joint_training=True`` (feeding detector outputs to the generator) is not published
    and raises."""

    def __init__(
        self,
        det_net_cfg: Mapping,
        gen_net_cfg: Mapping,
        max_num_vertices: int = 80,
        top_p_gen_model: float = 0.9,
        sync_cls_avg_factor: bool = True,
        augmentation: bool = False,
        augmentation_kwargs: Mapping | None = None,
        joint_training: bool = False,
        max_sample_length: int = 64,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if joint_training:
            raise ValueError("DGHead: joint_training=True is not published (the generator trains on GT)")
        unknown = set(kwargs) - {"loss_vert", "loss_face", "init_cfg", "train_cfg", "test_cfg"}
        if unknown:
            raise TypeError(f"DGHead: unexpected arguments {sorted(unknown)}")
        self.det_net = MODELS.build(dict(det_net_cfg))
        self.gen_net = MODELS.build(dict(gen_net_cfg))
        self.max_num_vertices = max_num_vertices
        self.top_p_gen_model = top_p_gen_model
        self.sync_cls_avg_factor = sync_cls_avg_factor
        self.joint_training = joint_training
        self.max_sample_length = max_sample_length
        self.augmentation = None
        if augmentation:
            aug = dict(augmentation_kwargs or {})
            aug.setdefault("canvas_size", tuple(gen_net_cfg.get("canvas_size", (200, 100))))
            self.augmentation = NoiseSythesis(**aug)

    def forward_train(
        self,
        targets: Mapping[str, Any],
        context: Mapping[str, Any],
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Loss keys ``det_cls``, ``det_reg``, ``det_d{k}.cls``, ``det_d{k}.reg``, ``gen_seq``.
        ``generator`` seeds the noise (global RNG when ``None``, as published)."""
        det_out = self.det_net(context)
        det_losses, _ = self.det_net.loss(targets["det"], det_out)  # matches unused (joint_training=False)
        gen_target = targets["gen"]
        gen_input = (
            self.augmentation.simple_aug(gen_target, generator=generator)
            if self.augmentation is not None
            else gen_target
        )
        logits = self.gen_net(gen_input, context)
        gen_losses = self.gen_net.loss(gen_target, logits)
        losses = {f"det_{k}": v for k, v in det_losses.items()}
        losses.update({f"gen_{k}": v for k, v in gen_losses.items()})
        return losses

    @torch.no_grad()
    def inference(
        self,
        context: Mapping[str, Any],
        generator: torch.Generator | None = None,
        **sample_kwargs: Any,
    ) -> dict[str, Any]:
        """Detector top-k, then sampling conditioned on the detected boxes and labels."""
        det_out = self.det_net(context)
        det = self.det_net.post_process(det_out)
        sample_kwargs.setdefault("max_sample_length", self.max_sample_length)
        sample_kwargs.setdefault("top_p", self.top_p_gen_model)
        gen = self.gen_net.inference(det, context, generator=generator, **sample_kwargs)
        return {"det": det, "gen": gen}

    def post_process(self, outs: Mapping[str, Any], tokens: Sequence[str]) -> list[dict[str, Any]]:
        """Per sample: ``{'token', 'scores' (K,), 'labels' (K,), 'nline', 'vectors' [K arrays
        (n_i, 2) in (0, 1)]}``: each line's masked tokens without the stop token (without
        its last real token for an unfinished line), ``((tx - 1) / 199, (ty - 1) / 99)``."""
        det, gen = outs["det"], outs["gen"]
        canvas = tuple(self.gen_net.canvas_size.tolist())
        bs_idx = det["lines_bs_idx"]
        results = []
        for b, token in enumerate(tokens):
            rows = torch.nonzero(bs_idx == b).reshape(-1)
            vectors = []
            for r in rows.tolist():
                verts = tokens_to_vertices(gen["polylines"][r], gen["polyline_masks"][r], canvas)
                vectors.append(verts.cpu().numpy())
            results.append(
                {
                    "token": token,
                    "scores": det["scores"][rows].cpu().numpy(),
                    "labels": det["labels"][rows].cpu().numpy(),
                    "nline": len(rows),
                    "vectors": vectors,
                }
            )
        return results
