"""``VectorMapNet`` (driving_hdmap_params.md §0): ``backbone`` (IPMEncoder) -> ``neck`` (the
fixed BEV Sequential when ``neck_cfg=None``) -> ``head`` (DGHead), as an mmengine
``BaseModel`` registered in mmdet's ``MODELS``.

Data contract (what the dataset / pipeline and ``MultiViewDataPreprocessor`` hand in):

- ``inputs['img']``: ``(B, 1, N, 3, H, W)`` (the preprocessor's queue axis, length 1) or
  ``(B, N, 3, H, W)``, normalised and padded.
- ``data_samples[i]``: a ``BaseDataElement`` whose frame meta is
  ``metainfo['img_metas'][-1]`` when present (the bev_common layout), else the metainfo
  itself, with ``token`` (str), ``ego2img`` (N x (4, 4), for the resized, *unpadded*
  image) and ``img_shape`` (per camera (h, w[, 3]), unpadded). Training also needs the
  field ``polys`` (``vectorize.polygonize_local_map_bbox``'s dict, or ``[]`` for a frame
  without lines).
- [quirk] the published ``PadMultiViewImages(change_intrinsics=True)`` scales ``ego2img``
  rows by padded / unpadded size as if padding were a resize; the model applies this
  itself from ``img_shape`` and the image tensor's size (``pad_scales_ego2img=True``). A
  pipeline that already did it sets the meta flag ``ego2img_pad_scaled=True``.

``mode='predict'`` sets on each data sample ``pred_vectors`` (list of K arrays (n_i, 2),
normalised (0, 1)), ``pred_scores`` (K,), ``pred_labels`` (K,) and metainfo ``token``;
``prediction_of(sample)`` gives the ``{'token', 'vectors', 'scores', 'labels'}`` dict that
``submission.format_results`` takes. ``mode='tensor'`` returns the BEV features and the
detector's per-layer outputs.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from mmdet.registry import MODELS
from mmengine.model import BaseModel
from mmengine.structures import BaseDataElement

from . import dg_head as _dg_head  # noqa: F401  (registers DGHead)
from . import ipm_encoder as _ipm_encoder  # noqa: F401  (registers IPMEncoder, InternImage)
from . import map_element_detector as _det  # noqa: F401  (registers the detector pieces)
from . import polyline_generator as _gen  # noqa: F401  (registers PolylineGenerator)
from .dg_head import build_targets
from .heads_common import build_bev_neck


def frame_meta(sample: BaseDataElement) -> dict[str, Any]:
    """The frame meta of a data sample: ``metainfo['img_metas'][-1]`` or the metainfo."""
    metas = sample.metainfo.get("img_metas")
    meta = dict(metas[-1]) if metas else dict(sample.metainfo)
    if "token" not in meta and "token" in sample.metainfo:
        meta["token"] = sample.metainfo["token"]
    return meta


def _camera_sizes(meta: Mapping[str, Any], n: int) -> list[tuple[int, int]]:
    shape = meta.get("img_shape")
    if shape is None:
        raise KeyError("frame meta: no 'img_shape' (the per-camera unpadded (h, w) the pad quirk needs)")
    if len(shape) and isinstance(shape[0], (int, np.integer)):
        shape = [shape] * n
    if len(shape) != n:
        raise ValueError(f"frame meta: img_shape lists {len(shape)} cameras, the images have {n}")
    return [(int(s[0]), int(s[1])) for s in shape]


def padded_ego2img(meta: Mapping[str, Any], tensor_hw: Sequence[int]) -> np.ndarray:
    """``ego2img`` with the published pad quirk: row 0 times ``W_tensor / w`` and row 1 times
    ``H_tensor / h`` per camera (unchanged when the meta says it was done already)."""
    mats = np.asarray(meta["ego2img"], dtype=np.float64)
    if meta.get("ego2img_pad_scaled", False):
        return mats
    mats = mats.copy()
    for k, (h, w) in enumerate(_camera_sizes(meta, len(mats))):
        if h > tensor_hw[0] or w > tensor_hw[1]:
            raise ValueError(f"camera {k}: img_shape {(h, w)} exceeds the image tensor {tuple(tensor_hw)}")
        mats[k, 0] *= tensor_hw[1] / w
        mats[k, 1] *= tensor_hw[0] / h
    return mats


def prediction_of(sample: BaseDataElement) -> dict[str, Any]:
    """``{'token', 'vectors', 'scores', 'labels'}`` of a predicted data sample, the input
    ``submission.format_results`` (and ``format_sample``) takes."""
    for key in ("pred_vectors", "pred_scores", "pred_labels"):
        if key not in sample:
            raise KeyError(f"data sample has no {key!r}: run the model with mode='predict' first")
    return {
        "token": str(sample.metainfo["token"]),
        "vectors": sample.pred_vectors,
        "scores": sample.pred_scores,
        "labels": sample.pred_labels,
    }


@MODELS.register_module()
class VectorMapNet(BaseModel):
    """Children ``backbone`` / ``neck`` / ``head`` (published names, so published keys load).

    Training drops frames without lines; a batch with none reuses the last batch that had
    some (``last_epoch``, as published). The loss is the plain sum of the head's loss dict.
    ``sampling_seed`` (or ``set_sampling_seed``; not published) makes test-time sampling
    reproducible. ``parse_losses`` sums every entry (the published total; mmengine's default would sum only
    keys containing 'loss'). ``init_weights`` keeps every module's constructor init (the published model's
    ``init_weights`` only logs) and loads the image backbone's pretrained ``init_cfg``.
    ``with_auxiliary_head`` and ``only_det`` are not published for this baseline and raise."""

    def __init__(
        self,
        backbone_cfg: Mapping,
        head_cfg: Mapping,
        neck_input_channels: int = 128,
        neck_cfg: Mapping | None = None,
        with_auxiliary_head: bool = False,
        only_det: bool = False,
        model_name: str | None = None,
        pad_scales_ego2img: bool = True,
        sampling_seed: int | None = None,
        data_preprocessor: Mapping | None = None,
        init_cfg: Mapping | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if with_auxiliary_head or only_det:
            raise ValueError(
                "VectorMapNet: with_auxiliary_head / only_det are not published here (both False)"
            )
        unknown = set(kwargs) - {"train_cfg", "test_cfg", "pretrained"}
        if unknown:
            raise TypeError(f"VectorMapNet: unexpected arguments {sorted(unknown)}")
        self.backbone = MODELS.build(dict(backbone_cfg))
        self.neck = build_bev_neck(neck_input_channels) if neck_cfg is None else MODELS.build(dict(neck_cfg))
        self.head = MODELS.build(dict(head_cfg))
        self.model_name = model_name
        self.pad_scales_ego2img = pad_scales_ego2img
        self.last_epoch: dict[str, Any] | None = None
        # Test-time sampling seed (``None``: the global RNG, as published).
        self.sample_generator: torch.Generator | None = None
        self.set_sampling_seed(sampling_seed)

    def init_weights(self) -> None:
        img_backbone = getattr(self.backbone, "img_backbone", None)
        if img_backbone is not None and hasattr(img_backbone, "init_weights"):
            img_backbone.init_weights()

    def set_sampling_seed(self, seed: int | None) -> None:
        """Make test-time sampling reproducible: a private generator seeded with ``seed``,
        created on the images' device at the next ``predict`` and then continued batch after
        batch (so a test run in a fixed order is reproducible, whatever else draws from the
        global RNG); ``None`` draws from the global RNG, as published."""
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise TypeError(f"sampling seed must be an int or None, got {seed!r}")
        self.sampling_seed = None if seed is None else int(seed)
        self.sample_generator = None

    def _generator(self, device: torch.device) -> torch.Generator | None:
        if self.sampling_seed is None:
            return None
        if self.sample_generator is None or self.sample_generator.device != device:
            self.sample_generator = torch.Generator(device=device).manual_seed(self.sampling_seed)
        return self.sample_generator

    def parse_losses(self, losses: Mapping[str, Any]) -> tuple[torch.Tensor, OrderedDict]:
        """The published total: the plain sum of *every* entry (``det_cls``, ``gen_seq``, ...;
        mmengine's default would sum only keys containing 'loss', i.e. none of these).
        Returns ``(loss, log_vars)`` with ``log_vars['loss']`` first, as mmengine does."""
        log_vars = []
        for name, value in losses.items():
            if isinstance(value, torch.Tensor):
                log_vars.append([name, value.mean()])
            elif isinstance(value, Sequence) and all(isinstance(v, torch.Tensor) for v in value):
                log_vars.append([name, sum(v.mean() for v in value)])
            else:
                raise TypeError(f"loss {name!r} must be a tensor or a list of tensors, got {type(value)}")
        if not log_vars:
            raise ValueError("parse_losses: the head returned no losses")
        loss = sum(v for _, v in log_vars)
        # Logged values detached (the optimiser steps on ``loss``): no autograd warnings in logs.
        return loss, OrderedDict([(k, v.detach()) for k, v in [("loss", loss), *log_vars]])

    # ----------------------------------------------------------------- features
    @staticmethod
    def _images(inputs: Mapping[str, Any] | torch.Tensor) -> torch.Tensor:
        img = inputs["img"] if isinstance(inputs, Mapping) else inputs
        if img.ndim == 6:
            if img.shape[1] != 1:
                raise ValueError(
                    f"img: expected one frame per sample (B, 1, N, 3, H, W), got {tuple(img.shape)}"
                )
            img = img[:, 0]
        if img.ndim != 5 or img.shape[2] != 3:
            raise ValueError(f"img: expected (B, [1,] N, 3, H, W), got {tuple(img.shape)}")
        return img

    def _metas(self, samples: Sequence[BaseDataElement], img: torch.Tensor) -> list[dict[str, Any]]:
        if samples is None or len(samples) != img.shape[0]:
            raise ValueError(
                f"data_samples: one per image sample needed, got {None if samples is None else len(samples)}"
            )
        metas = []
        for s in samples:
            meta = frame_meta(s)
            if "ego2img" not in meta:
                raise KeyError("frame meta: no 'ego2img' (per-camera ego -> image 4x4, after resize)")
            if self.pad_scales_ego2img:
                meta["ego2img"] = padded_ego2img(meta, img.shape[-2:])
            metas.append(meta)
        return metas

    def extract_feat(self, img: torch.Tensor, metas: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        raw = self.backbone(img, metas)
        bev = self.neck(raw)
        b = img.shape[0]
        hw = tuple(raw.shape[-2:])
        return {
            "bev_embeddings": bev,
            "batch_input_shape": hw,
            "img_shape": [hw] * b,
            "raw_bev_embeddings": raw,
        }

    # ----------------------------------------------------------------- modes
    def forward(
        self,
        inputs: Mapping[str, Any] | torch.Tensor,
        data_samples: Sequence[BaseDataElement] | None = None,
        mode: str = "tensor",
    ) -> Any:
        if mode == "loss":
            return self.loss(inputs, data_samples)
        if mode == "predict":
            return self.predict(inputs, data_samples)
        if mode == "tensor":
            img = self._images(inputs)
            context = self.extract_feat(img, self._metas(data_samples, img))
            context["det_outputs"] = self.head.det_net(context)
            return context
        raise ValueError(f"mode must be 'loss', 'predict' or 'tensor', got {mode!r}")

    def _valid_batch(
        self, img: torch.Tensor, samples: Sequence[BaseDataElement]
    ) -> tuple[torch.Tensor, list[dict[str, Any]], list[Mapping[str, Any]]]:
        metas = self._metas(samples, img)
        polys = []
        for i, s in enumerate(samples):
            if "polys" not in s:
                raise KeyError(
                    f"data_samples[{i}]: no 'polys' (PolygonizeLocalMapBbox's output) for training"
                )
            polys.append(s.polys)
        keep = [i for i, p in enumerate(polys) if isinstance(p, Mapping) and len(p.get("det_label", ())) > 0]
        if keep:
            batch = {"img": img[keep], "metas": [metas[i] for i in keep], "polys": [polys[i] for i in keep]}
            self.last_epoch = {
                "img": batch["img"].detach(),
                "metas": copy.deepcopy(batch["metas"]),
                "polys": batch["polys"],
            }
        elif self.last_epoch is not None:
            batch = self.last_epoch  # published: reuse the last batch that had lines
        else:
            return img, metas, []
        return batch["img"], batch["metas"], batch["polys"]

    def loss(self, inputs: Mapping[str, Any] | torch.Tensor, data_samples: Sequence[BaseDataElement]) -> dict:
        img = self._images(inputs)
        img, metas, polys = self._valid_batch(img, data_samples)
        context = self.extract_feat(img, metas)
        if not polys:
            # Nothing to learn from yet (the very first batch has no lines): zero losses that
            # still touch every head parameter, so distributed training stays in step.
            det_out = self.head.det_net(context)
            zero = sum(o["lines"].sum() + o["scores"].sum() for o in det_out) * 0.0
            zero = zero + sum(p.sum() for p in self.head.gen_net.parameters()) * 0.0
            return {"det_cls": zero, "det_reg": zero.clone(), "gen_seq": zero.clone()}
        targets = build_targets(polys, device=img.device)
        return self.head.forward_train(targets, context)

    @torch.no_grad()
    def predict(
        self, inputs: Mapping[str, Any] | torch.Tensor, data_samples: Sequence[BaseDataElement]
    ) -> list:
        img = self._images(inputs)
        metas = self._metas(data_samples, img)
        tokens = []
        for i, meta in enumerate(metas):
            if "token" not in meta:
                raise KeyError(f"data_samples[{i}]: no 'token' in the frame meta (the submission key)")
            tokens.append(str(meta["token"]))
        context = self.extract_feat(img, metas)
        outs = self.head.inference(context, generator=self._generator(img.device))
        results = self.head.post_process(outs, tokens)
        for sample, res in zip(data_samples, results, strict=True):
            sample.set_metainfo({"token": res["token"]})
            sample.pred_vectors = res["vectors"]
            sample.pred_scores = res["scores"]
            sample.pred_labels = res["labels"]
        return list(data_samples)
