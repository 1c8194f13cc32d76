"""``BEVFormerOcc``: the published camera-only occupancy detector as an mmengine ``BaseModel``
(spec: driving_occupancy_params.md §1).

Training: the last frame of the queue is supervised; the earlier frames build the history
BEV under ``no_grad`` in eval mode (``obtain_history_bev``). Test (``video_test_mode``): the
BEV of the previous frame is kept in ``prev_frame_info`` and reset on a new scene; the CAN-bus
delta to the previous frame is taken here, as published.

Where the published code reads one flag for the whole batch (``metas[0]['prev_bev_exists']``)
we decide per sample: samples with and without history run the head separately (identical
to the published result at batch 1, the published training batch)."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
from mmdet.registry import MODELS
from mmengine.model import BaseModel
from mmengine.structures import BaseDataElement

from autonomous_driving.bev_common.grid_mask import GridMask

from .transformer import can_bus_array

Metas = Sequence[Mapping]


def _frame_metas(data_samples: Sequence[BaseDataElement], queue_length: int) -> list[list[dict]]:
    """Per sample, the Q per-frame metas (oldest first), checked against the image queue."""
    out = []
    for b, sample in enumerate(data_samples):
        metas = sample.metainfo.get("img_metas")
        if metas is None:
            raise KeyError(f"data_samples[{b}].metainfo has no 'img_metas' (the list of per-frame metas)")
        if len(metas) != queue_length:
            raise ValueError(f"data_samples[{b}] has {len(metas)} frame metas for an image queue of "
                             f"{queue_length} frames")
        out.append(list(metas))
    return out


def _check_fields(metas: Metas, fields: Sequence[str], where: str) -> None:
    for b, meta in enumerate(metas):
        missing = [f for f in fields if f not in meta]
        if missing:
            raise KeyError(f"{where}: img_metas of sample {b} lacks {missing} "
                           f"(fields present: {sorted(meta)})")


def _gt_field(data_samples: Sequence[BaseDataElement], name: str, device: torch.device) -> torch.Tensor:
    values = []
    for b, sample in enumerate(data_samples):
        value = getattr(sample, name, None)
        if value is None:
            raise KeyError(f"data_samples[{b}] has no '{name}' data field (needed for the loss)")
        values.append(torch.as_tensor(value))
    shapes = {tuple(v.shape) for v in values}
    if len(shapes) != 1:
        raise ValueError(f"'{name}' shapes differ across the batch: {sorted(shapes)}")
    return torch.stack(values).to(device)


_FRAME_FIELDS = ("can_bus", "lidar2img", "ego2lidar", "img_shape")


@MODELS.register_module()
class BEVFormerOcc(BaseModel):
    """``forward(inputs={'img': (B, Q, N, 3, H, W)}, data_samples, mode)``.

    - ``'loss'``: ``{'loss_occ'}`` of the last frame (Q-1 history frames first).
    - ``'predict'`` (Q = 1): the data samples with ``pred_occ`` (X, Y, Z) uint8 added.
    - ``'tensor'``: the head outputs ``{'bev_embed', 'occ'}`` of the training path.
    """

    def __init__(self, *, img_backbone: Mapping, img_neck: Mapping, pts_bbox_head: Mapping,
                 use_grid_mask: bool = True, video_test_mode: bool = True,
                 data_preprocessor: Mapping | None = None, train_cfg: Mapping | None = None,
                 test_cfg: Mapping | None = None, init_cfg: Mapping | None = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        # Build order = published state_dict order: head, backbone, neck. The detector-level
        # train_cfg/test_cfg are None in the published config (the head's train_cfg is dead).
        head_cfg = dict(pts_bbox_head)
        head_cfg.update(train_cfg=train_cfg.get("pts") if train_cfg else None,
                        test_cfg=test_cfg.get("pts") if test_cfg else None)
        self.pts_bbox_head = MODELS.build(head_cfg)
        self.img_backbone = MODELS.build(img_backbone)
        self.img_neck = MODELS.build(img_neck)
        # Hard-coded in the published detector, not read from the config.
        self.grid_mask = GridMask(True, True, rotate=1, offset=False, ratio=0.5, mode=1, prob=0.7)
        self.use_grid_mask = use_grid_mask
        self.video_test_mode = video_test_mode
        self.reset_test_state()

    def reset_test_state(self) -> None:
        """Forget the test-time temporal state (as at the start of a test run)."""
        self.prev_frame_info = {"prev_bev": None, "scene_token": None, "prev_pos": 0, "prev_angle": 0}

    # -- features -----------------------------------------------------------------------------

    def extract_img_feat(self, img: torch.Tensor, img_metas: Metas | None = None,
                         len_queue: int | None = None) -> list[torch.Tensor]:
        """FPN levels of (B, N, 3, H, W) images, each (B, N, C, h, w), or with ``len_queue``
        (B/len_queue, len_queue, N, C, h, w). ``img_metas`` is unused (published signature).
        The published ``squeeze_()`` for B == 1 (which also drops a single camera) is a plain
        reshape here."""
        if img.dim() != 5:
            raise ValueError(f"extract_img_feat expects images (B, N, 3, H, W), got shape {tuple(img.shape)}")
        batch, num_cams = img.shape[:2]
        img = img.reshape(batch * num_cams, *img.shape[2:])
        if self.use_grid_mask:
            img = self.grid_mask(img)  # identity outside training mode
        feats = self.img_neck(self.img_backbone(img))
        out = []
        for feat in feats:
            if len_queue is None:
                out.append(feat.view(batch, num_cams, *feat.shape[1:]))
            else:
                out.append(feat.view(batch // len_queue, len_queue, num_cams, *feat.shape[1:]))
        return out

    def _run_head(self, feats: Sequence[torch.Tensor], metas: Metas, prev_bev: torch.Tensor | None,
                  **kwargs):
        """Head on the batch, with history only for samples whose ``prev_bev_exists`` is set.

        Published: ``metas[0]['prev_bev_exists']`` decides for the whole batch. Here a mixed
        batch runs the head once per group and reassembles the outputs in batch order."""
        _check_fields(metas, ("prev_bev_exists",), "BEVFormerOcc")
        has_prev = [bool(m["prev_bev_exists"]) and prev_bev is not None for m in metas]
        if all(has_prev) or not any(has_prev):
            return self.pts_bbox_head(feats, metas, prev_bev if all(has_prev) else None, **kwargs)
        groups = [[b for b, flag in enumerate(has_prev) if flag],
                  [b for b, flag in enumerate(has_prev) if not flag]]
        outs = []
        for idx, with_prev in zip(groups, (True, False)):
            index = torch.tensor(idx, device=feats[0].device)
            outs.append(self.pts_bbox_head([f.index_select(0, index) for f in feats], [metas[b] for b in idx],
                                           prev_bev.index_select(0, index) if with_prev else None, **kwargs))
        order = torch.argsort(torch.tensor(groups[0] + groups[1], device=feats[0].device))
        if isinstance(outs[0], dict):
            return {k: torch.cat([o[k] for o in outs]).index_select(0, order) for k in outs[0]}
        return torch.cat(outs).index_select(0, order)

    def obtain_history_bev(self, imgs_queue: torch.Tensor,
                           img_metas_list: Sequence[Metas]) -> torch.Tensor | None:
        """BEV (bs, Hb·Wb, C) after the history frames (bs, len_queue, N, 3, H, W), built in
        eval mode (no grid mask, no dropout) without gradients; ``prev_bev`` restarts wherever
        a frame's ``prev_bev_exists`` is False."""
        bs, len_queue = imgs_queue.shape[:2]
        if len_queue == 0:
            return None
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                feats = self.extract_img_feat(imgs_queue.reshape(bs * len_queue, *imgs_queue.shape[2:]),
                                              len_queue=len_queue)
                prev_bev = None
                for i in range(len_queue):
                    metas = [sample_metas[i] for sample_metas in img_metas_list]
                    prev_bev = self._run_head([f[:, i] for f in feats], metas, prev_bev, only_bev=True)
        finally:
            self.train(was_training)  # published: always self.train()
        return prev_bev

    def _check_inputs(self, inputs, data_samples) -> tuple[torch.Tensor, list[list[dict]]]:
        img = inputs.get("img") if isinstance(inputs, Mapping) else inputs
        if not isinstance(img, torch.Tensor):
            raise TypeError("BEVFormerOcc expects inputs={'img': Tensor (B, Q, N, 3, H, W)}, "
                            f"got {type(img).__name__}")
        if img.dim() != 6 or img.size(3) != 3:
            raise ValueError(f"inputs['img'] must be (B, Q, N, 3, H, W), got shape {tuple(img.shape)}")
        if data_samples is None or len(data_samples) != img.size(0):
            raise ValueError(f"data_samples must hold one sample per image batch entry ({img.size(0)}), "
                             f"got {None if data_samples is None else len(data_samples)}")
        metas = _frame_metas(data_samples, img.size(1))
        for i in range(img.size(1)):
            _check_fields([m[i] for m in metas], _FRAME_FIELDS, f"frame {i}")
        return img, metas

    def _forward_queue(self, img: torch.Tensor, metas: list[list[dict]]) -> dict[str, torch.Tensor]:
        prev_bev = self.obtain_history_bev(img[:, :-1], metas)
        current = [m[-1] for m in metas]
        feats = self.extract_img_feat(img[:, -1])
        return self._run_head(feats, current, prev_bev)

    # -- modes --------------------------------------------------------------------------------

    def forward(self, inputs, data_samples: Sequence[BaseDataElement] | None = None, mode: str = "tensor"):
        if mode == "loss":
            return self.loss(inputs, data_samples)
        if mode == "predict":
            return self.predict(inputs, data_samples)
        if mode == "tensor":
            img, metas = self._check_inputs(inputs, data_samples)
            return self._forward_queue(img, metas)
        raise ValueError(f"mode must be 'loss', 'predict' or 'tensor', got {mode!r}")

    def loss(self, inputs, data_samples: Sequence[BaseDataElement]) -> dict[str, torch.Tensor]:
        img, metas = self._check_inputs(inputs, data_samples)
        outs = self._forward_queue(img, metas)
        voxel_semantics = _gt_field(data_samples, "voxel_semantics", img.device)
        mask_camera = (_gt_field(data_samples, "mask_camera", img.device)
                       if self.pts_bbox_head.use_mask else None)
        return self.pts_bbox_head.loss(voxel_semantics, mask_camera, outs)

    def predict(self, inputs, data_samples: Sequence[BaseDataElement]) -> list[BaseDataElement]:
        """One frame per sample (Q = 1), samples taken in order as consecutive frames: each
        uses, and then replaces, the previous frame's BEV (``video_test_mode``)."""
        img, metas = self._check_inputs(inputs, data_samples)
        if img.size(1) != 1:
            raise ValueError(f"predict takes one frame per sample (Q = 1), got Q = {img.size(1)}")
        for b, sample in enumerate(data_samples):
            meta = metas[b][0]
            _check_fields([meta], ("scene_token",), "predict")
            occ = self._predict_frame(img[b:b + 1, 0], meta)
            sample.pred_occ = occ[0].to(torch.uint8)
        return list(data_samples)

    def _predict_frame(self, img: torch.Tensor, meta: Mapping) -> torch.Tensor:
        info = self.prev_frame_info
        if meta["scene_token"] != info["scene_token"]:
            info["prev_bev"] = None  # a new scene: no history
        info["scene_token"] = meta["scene_token"]
        if not self.video_test_mode:
            info["prev_bev"] = None
        # The test dataset gives absolute poses; the delta to the previous frame is taken here
        # on a copy (the published code edits the caller's meta in place).
        meta = copy.copy(dict(meta))
        can_bus = can_bus_array([meta])[0].copy()
        tmp_pos = can_bus[:3].copy()
        tmp_angle = float(can_bus[-1])
        if info["prev_bev"] is not None:
            can_bus[:3] -= info["prev_pos"]
            can_bus[-1] -= info["prev_angle"]
        else:
            can_bus[:3] = 0
            can_bus[-1] = 0
        meta["can_bus"] = can_bus
        feats = self.extract_img_feat(img)
        outs = self.pts_bbox_head(feats, [meta], info["prev_bev"], test=True)
        info["prev_pos"] = tmp_pos
        info["prev_angle"] = tmp_angle
        info["prev_bev"] = outs["bev_embed"].detach()  # state across calls never holds a graph
        return self.pts_bbox_head.get_occ(outs)


__all__ = ["BEVFormerOcc"]
