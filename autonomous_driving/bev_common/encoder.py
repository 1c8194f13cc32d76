"""The BEVFormer encoder (driving_occupancy_params.md §5–§6): ``BEVFormerEncoder`` (an mmcv
``TransformerLayerSequence``: reference points, camera projection, the temporal hybrid
reference) over ``BEVFormerLayer`` (an mmcv ``BaseTransformerLayer`` with the published
``MyCustomBaseTransformerLayer`` behaviour: batch-first, TSA over ``prev_bev`` with the BEV
positional encoding, SCA over the camera features, post-norm FFN).

Building from config dicts. The published config nests ``encoder -> transformerlayers ->
attn_cfgs -> deformable_attention``, built by mmcv's ``build_transformer_layer`` /
``build_attention`` / ``build_feedforward_network``, which look in mmengine's *root*
``MODELS``; this package registers in mmdet's ``MODELS`` (a child of the root). What makes
the lookups succeed: (1) importing this package (``custom_imports``, or the occupancy
package's ``__init__``) registers the classes; (2) every child config handed to an mmcv
builder here carries ``_scope_='mmdet'`` (``attention.in_mmdet_scope``), so mmengine's
``build_from_cfg`` switches to mmdet's registry for that build — under
``default_scope='mmdet'`` this is what the runner's scope does anyway, and without any
default scope (a bare ``MODELS.build`` in a script or test) it still resolves. mmcv's own
``FFN`` and ``LN`` are found through mmdet's registry's parent, the root.

Published quirks kept: ``shift_ref_2d = ref_2d`` without a clone (the shift moves ``ref_2d``
in place, so both halves of the hybrid reference are shifted); ``prev_bev`` (the stacked
[history, first-layer query]) is not updated between layers; the projection is computed in
float32; the BEVFormerLayer FFN default hard-codes ``embed_dims=256`` (other widths pass
``ffn_cfgs``). Published defects fixed (identical at batch 1): each sample's own
``ego2lidar`` and image size are used (published: sample 0's for the whole batch); the
published mutable FFN default dict is not shared between layers.

Options for the OpenLane-V2 copy (driving_openlane_params.md §2.4): ``projection='lidar2img'``
(no ``ego2lidar`` factor) and ``image_size='front_img_shape'`` (normalise by the unpadded
front camera); the defaults are the occupancy encoder's."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from mmcv.cnn.bricks.transformer import BaseTransformerLayer, TransformerLayerSequence
from mmdet.registry import MODELS

from .attention import in_mmdet_scope

# The published MyCustomBaseTransformerLayer default (a mutable default there; copied per layer here).
PUBLISHED_FFN_CFG = dict(
    type="FFN",
    embed_dims=256,
    feedforward_channels=1024,
    num_fcs=2,
    ffn_drop=0.0,
    act_cfg=dict(type="ReLU", inplace=True),
)
OPERATIONS = {"self_attn", "norm", "cross_attn", "ffn"}


@MODELS.register_module()
class BEVFormerLayer(BaseTransformerLayer):
    """One encoder layer. ``attn_cfgs`` = [TSA cfg, SCA cfg]; ``feedforward_channels``,
    ``ffn_dropout`` and ``ffn_num_fcs`` are written into ``ffn_cfgs`` (the published FFN
    default when not given); ``act_cfg`` is accepted and, as published, not used (the FFN's
    activation is ``ffn_cfgs['act_cfg']``)."""

    def __init__(
        self,
        attn_cfgs: Sequence[Mapping] | Mapping,
        feedforward_channels: int,
        ffn_dropout: float = 0.0,
        operation_order: Sequence[str] | None = None,
        act_cfg: Mapping = dict(type="ReLU", inplace=True),
        norm_cfg: Mapping = dict(type="LN"),
        ffn_num_fcs: int = 2,
        ffn_cfgs: Mapping | Sequence[Mapping] | None = None,
        batch_first: bool = True,
        init_cfg: Mapping | None = None,
        **kwargs,
    ):
        name = type(self).__name__
        if operation_order is None or len(operation_order) != 6 or set(operation_order) != OPERATIONS:
            raise ValueError(
                f"{name}: operation_order must be 6 operations using each of {sorted(OPERATIONS)}, "
                f"e.g. ('self_attn', 'norm', 'cross_attn', 'norm', 'ffn', 'norm'); got {operation_order}"
            )
        # published: the deprecated arguments always overwrite the FFN config's fields
        ffn_list = copy.deepcopy(
            list(ffn_cfgs)
            if isinstance(ffn_cfgs, Sequence)
            else [ffn_cfgs if ffn_cfgs is not None else PUBLISHED_FFN_CFG]
        )
        ffn_list = [in_mmdet_scope(cfg) for cfg in ffn_list]
        for cfg in ffn_list:
            cfg.update(feedforward_channels=feedforward_channels, ffn_drop=ffn_dropout, num_fcs=ffn_num_fcs)
        attn_list = [
            in_mmdet_scope(cfg)
            for cfg in ([attn_cfgs] * 2 if isinstance(attn_cfgs, Mapping) else list(attn_cfgs))
        ]
        attn_dims = attn_list[0].get("embed_dims") if attn_list else None
        for cfg in ffn_list:
            if attn_dims is not None and "embed_dims" in cfg and cfg["embed_dims"] != attn_dims:
                raise ValueError(
                    f"{name}: the FFN has embed_dims={cfg['embed_dims']} but the attentions {attn_dims}. The "
                    "published FFN default hard-codes 256: for other widths pass ffn_cfgs=dict(type='FFN', "
                    f"embed_dims={attn_dims}, ...)"
                )
        ffn_act = ffn_list[0].get("act_cfg") if len(ffn_list) == 1 else None
        if ffn_act is not None and dict(act_cfg) != dict(ffn_act):
            warnings.warn(
                f"{name}: act_cfg={dict(act_cfg)} is not used (published behaviour); the FFN uses "
                f"ffn_cfgs['act_cfg']={dict(ffn_act)}",
                stacklevel=2,
            )
        super().__init__(
            attn_cfgs=attn_list,
            ffn_cfgs=ffn_list if len(ffn_list) > 1 else ffn_list[0],
            operation_order=tuple(operation_order),
            norm_cfg=dict(norm_cfg),
            init_cfg=init_cfg,
            batch_first=batch_first,
            **kwargs,
        )
        self.fp16_enabled = False

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        bev_pos: torch.Tensor | None = None,
        query_pos: torch.Tensor | None = None,
        key_pos: torch.Tensor | None = None,
        attn_masks: list | torch.Tensor | None = None,
        query_key_padding_mask: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        ref_2d: torch.Tensor | None = None,
        ref_3d: torch.Tensor | None = None,
        bev_h: int | None = None,
        bev_w: int | None = None,
        reference_points_cam: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
        level_start_index: torch.Tensor | None = None,
        prev_bev: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        """``query`` (bs, nq, C) -> (bs, nq, C). ``bev_mask``, ``img_metas`` and the like
        arrive in ``kwargs`` and go to both attentions, as published."""
        norm_index = attn_index = ffn_index = 0
        identity = query
        if attn_masks is None:
            attn_masks = [None] * self.num_attn
        elif isinstance(attn_masks, torch.Tensor):
            attn_masks = [copy.deepcopy(attn_masks) for _ in range(self.num_attn)]
        elif len(attn_masks) != self.num_attn:
            raise ValueError(
                f"{type(self).__name__}: {len(attn_masks)} attn_masks for {self.num_attn} attentions"
            )
        for layer in self.operation_order:
            if layer == "self_attn":
                query = self.attentions[attn_index](
                    query,
                    prev_bev,
                    prev_bev,
                    identity if self.pre_norm else None,
                    query_pos=bev_pos,
                    key_pos=bev_pos,
                    attn_mask=attn_masks[attn_index],
                    key_padding_mask=query_key_padding_mask,
                    reference_points=ref_2d,
                    spatial_shapes=torch.tensor([[bev_h, bev_w]], device=query.device),
                    level_start_index=torch.tensor([0], device=query.device),
                    **kwargs,
                )
                attn_index += 1
                identity = query
            elif layer == "norm":
                query = self.norms[norm_index](query)
                norm_index += 1
            elif layer == "cross_attn":  # no bev_pos here: only TSA adds the positional encoding
                query = self.attentions[attn_index](
                    query,
                    key,
                    value,
                    identity if self.pre_norm else None,
                    query_pos=query_pos,
                    key_pos=key_pos,
                    reference_points=ref_3d,
                    reference_points_cam=reference_points_cam,
                    mask=mask,
                    attn_mask=attn_masks[attn_index],
                    key_padding_mask=key_padding_mask,
                    spatial_shapes=spatial_shapes,
                    level_start_index=level_start_index,
                    **kwargs,
                )
                attn_index += 1
                identity = query
            elif layer == "ffn":
                query = self.ffns[ffn_index](query, identity if self.pre_norm else None)
                ffn_index += 1
        return query


def _transform_stack(metas: Sequence[Mapping], key: str, num_cams: int | None) -> np.ndarray:
    """(bs, N, 4, 4) float64 from ``meta[key]`` of every sample, with clear errors."""
    out = []
    for b, meta in enumerate(metas):
        if key not in meta:
            raise KeyError(
                f"img_metas[{b}] has no '{key}' (per camera 4x4 ego/lidar -> image matrices needed "
                f"by BEVFormerEncoder.point_sampling); keys: {sorted(meta)}"
            )
        try:
            value = np.asarray(meta[key], dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"img_metas[{b}]['{key}'] must be {num_cams or 'N'} 4x4 matrices: {err}"
            ) from err
        if (
            value.ndim != 3
            or value.shape[1:] != (4, 4)
            or (num_cams is not None and value.shape[0] != num_cams)
        ):
            raise ValueError(
                f"img_metas[{b}]['{key}'] must be {num_cams or 'N'} 4x4 matrices, got shape {value.shape}"
            )
        num_cams = value.shape[0]
        out.append(value)
    return np.stack(out)


PROJECTIONS = ("lidar2img@ego2lidar", "lidar2img")
IMAGE_SIZES = ("pad_shape", "front_img_shape")


def _image_size(meta: Mapping, b: int, mode: str = "pad_shape") -> tuple[float, float]:
    """(h, w) the projected points are normalised by, camera 0's.

    ``'pad_shape'`` (occupancy): the padded size (``pad_shape``, which the published pipeline
    stores in ``img_shape``), else ``img_shape``. ``'front_img_shape'`` (OpenLane-V2 ROAD):
    ``img_shape[0]``, the front camera before padding, required as the per-camera list."""
    if mode == "front_img_shape":
        shapes = meta.get("img_shape")
        if shapes is None:
            raise KeyError(f"img_metas[{b}] has no 'img_shape' (image_size='front_img_shape' needs it)")
        if not isinstance(shapes, (list, tuple)) or not isinstance(shapes[0], (list, tuple, np.ndarray)):
            raise ValueError(
                f"img_metas[{b}]['img_shape'] must be the per-camera (h, w, 3) list, front camera "
                f"first (image_size='front_img_shape'); got {shapes!r}"
            )
        first = shapes[0]
    else:
        shape = meta.get("pad_shape", meta.get("img_shape"))
        if shape is None:
            raise KeyError(f"img_metas[{b}] has neither 'pad_shape' nor 'img_shape' (the camera image size)")
        first = shape[0] if isinstance(shape[0], (list, tuple, np.ndarray)) else shape
    return float(first[0]), float(first[1])


def _ego2lidar_stack(metas: Sequence[Mapping]) -> np.ndarray:
    """(bs, 4, 4) float64 ``meta['ego2lidar']`` of every sample, with clear errors."""
    out = []
    for b, meta in enumerate(metas):
        if "ego2lidar" not in meta:
            raise KeyError(
                f"img_metas[{b}] has no 'ego2lidar' (4x4 ego -> lidar, needed by "
                f"projection='lidar2img@ego2lidar'); keys: {sorted(meta)}"
            )
        matrix = np.asarray(meta["ego2lidar"], dtype=np.float64)
        if matrix.shape != (4, 4):
            raise ValueError(f"img_metas[{b}]['ego2lidar'] must be 4x4, got shape {matrix.shape}")
        out.append(matrix)
    return np.stack(out)


@MODELS.register_module()
class BEVFormerEncoder(TransformerLayerSequence):
    """``BEVFormerEncoder(transformerlayers, num_layers, pc_range, num_points_in_pillar=4,
    return_intermediate=False, dataset_type='nuscenes', projection='lidar2img@ego2lidar',
    image_size='pad_shape')``; ``forward(bev_query (nq, bs, C), key, value (N, keys, bs, C),
    bev_h=, bev_w=, bev_pos= (nq, bs, C), spatial_shapes=, level_start_index=, prev_bev=
    (nq, bs, C) or None, shift= (bs, 2), img_metas=)`` returns (bs, nq, C), or
    (num_layers, bs, nq, C) with ``return_intermediate``.

    How ``point_sampling`` maps ego points into the images (the two published copies differ,
    driving_openlane_params.md §2.4; the defaults are the occupancy BEVFormer's):

    - ``projection``: ``'lidar2img@ego2lidar'`` multiplies each camera's ``lidar2img`` by the
      sample's ``ego2lidar``; ``'lidar2img'`` uses ``lidar2img`` alone (OpenLane-V2, whose
      "lidar" frame is the ego frame; ``ego2lidar`` is then not read).
    - ``image_size``: ``'pad_shape'`` normalises by the padded size (else ``img_shape``);
      ``'front_img_shape'`` by ``img_shape[0]``, the front camera's unpadded size, for every
      camera (OpenLane-V2)."""

    def __init__(
        self,
        *args,
        pc_range: Sequence[float] | None = None,
        num_points_in_pillar: int = 4,
        return_intermediate: bool = False,
        dataset_type: str = "nuscenes",
        projection: str = "lidar2img@ego2lidar",
        image_size: str = "pad_shape",
        **kwargs,
    ):
        if projection not in PROJECTIONS:
            raise ValueError(f"BEVFormerEncoder: projection must be one of {PROJECTIONS}, got {projection!r}")
        if image_size not in IMAGE_SIZES:
            raise ValueError(f"BEVFormerEncoder: image_size must be one of {IMAGE_SIZES}, got {image_size!r}")
        layers = kwargs.get("transformerlayers", args[0] if args else None)
        if isinstance(layers, Mapping):
            layers = in_mmdet_scope(layers)
        elif isinstance(layers, Sequence):
            layers = [in_mmdet_scope(cfg) for cfg in layers]
        else:
            raise ValueError(
                f"BEVFormerEncoder: transformerlayers must be a layer config or a list of them, "
                f"got {layers!r}"
            )
        if args:
            args = (layers, *args[1:])
        else:
            kwargs["transformerlayers"] = layers
        super().__init__(*args, **kwargs)
        if pc_range is None or len(pc_range) != 6:
            raise ValueError(
                f"BEVFormerEncoder: pc_range must be [x_min, y_min, z_min, x_max, y_max, z_max], "
                f"got {pc_range}"
            )
        self.return_intermediate = return_intermediate
        self.num_points_in_pillar = num_points_in_pillar
        self.pc_range = list(pc_range)
        self.dataset_type = dataset_type
        self.projection = projection
        self.image_size = image_size
        self.fp16_enabled = False

    @staticmethod
    def get_reference_points(
        H: int,
        W: int,
        Z: float = 8,
        num_points_in_pillar: int = 4,
        dim: str = "3d",
        bs: int = 1,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float,
    ) -> torch.Tensor:
        """Normalised cell centres: '3d' -> (bs, D, H·W, 3) (x, y, z) with D heights
        ``linspace(0.5, Z - 0.5, D) / Z`` (Z metric: the 0.5 is metres); '2d' -> (bs, H·W, 1, 2)
        (x, y). Query q = row·W + col."""
        if dim == "3d":
            zs = torch.linspace(0.5, Z - 0.5, num_points_in_pillar, dtype=dtype, device=device)
            zs = zs.view(-1, 1, 1).expand(num_points_in_pillar, H, W) / Z
            xs = torch.linspace(0.5, W - 0.5, W, dtype=dtype, device=device)
            xs = xs.view(1, 1, W).expand(num_points_in_pillar, H, W) / W
            ys = torch.linspace(0.5, H - 0.5, H, dtype=dtype, device=device)
            ys = ys.view(1, H, 1).expand(num_points_in_pillar, H, W) / H
            ref_3d = torch.stack((xs, ys, zs), -1)
            ref_3d = ref_3d.permute(0, 3, 1, 2).flatten(2).permute(0, 2, 1)
            return ref_3d[None].repeat(bs, 1, 1, 1)
        if dim == "2d":
            ref_y, ref_x = torch.meshgrid(
                torch.linspace(0.5, H - 0.5, H, dtype=dtype, device=device),
                torch.linspace(0.5, W - 0.5, W, dtype=dtype, device=device),
                indexing="ij",
            )
            ref_y = ref_y.reshape(-1)[None] / H
            ref_x = ref_x.reshape(-1)[None] / W
            ref_2d = torch.stack((ref_x, ref_y), -1)
            return ref_2d.repeat(bs, 1, 1).unsqueeze(2)
        raise ValueError(f"get_reference_points: dim must be '3d' or '2d', got {dim!r}")

    def point_sampling(
        self, reference_points: torch.Tensor, pc_range: Sequence[float], img_metas: Sequence[Mapping]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``reference_points`` (bs, D, nq, 3) normalised ego coordinates -> normalised image
        coordinates (N, bs, nq, D, 2) float32 and ``bev_mask`` (N, bs, nq, D) bool: in front of
        the camera (depth > 1e-5) and strictly inside the image. Projection and image size as
        ``projection`` / ``image_size`` select (class docstring), in float32, as published."""
        bs = reference_points.shape[0]
        if not isinstance(img_metas, Sequence) or len(img_metas) != bs:
            raise ValueError(
                f"point_sampling: img_metas must be a list of {bs} per-sample dicts, got "
                f"{type(img_metas).__name__}: {img_metas!r:.200}"
            )
        device = reference_points.device
        lidar2img = torch.as_tensor(_transform_stack(img_metas, "lidar2img", None), device=device)

        points = reference_points.clone()
        points[..., 0:1] = points[..., 0:1] * (pc_range[3] - pc_range[0]) + pc_range[0]
        points[..., 1:2] = points[..., 1:2] * (pc_range[4] - pc_range[1]) + pc_range[1]
        points[..., 2:3] = points[..., 2:3] * (pc_range[5] - pc_range[2]) + pc_range[2]
        points = torch.cat((points, torch.ones_like(points[..., :1])), -1).permute(
            1, 0, 2, 3
        )  # (D, bs, nq, 4)
        # float32 whatever the input dtype (published); per-sample ego2lidar (published: sample 0's)
        ego2img = lidar2img.to(torch.float32)  # (bs, N, 4, 4)
        if self.projection == "lidar2img@ego2lidar":
            ego2lidar = torch.as_tensor(_ego2lidar_stack(img_metas), device=device)
            ego2img = torch.matmul(ego2img, ego2lidar.to(torch.float32)[:, None])
        cam = torch.matmul(ego2img[None, :, :, None], points.to(torch.float32)[:, :, None, :, :, None])
        cam = cam.squeeze(-1)  # (D, bs, N, nq, 4)

        eps = 1e-5
        bev_mask = cam[..., 2:3] > eps
        uv = cam[..., 0:2] / torch.maximum(cam[..., 2:3], torch.ones_like(cam[..., 2:3]) * eps)
        sizes = torch.tensor(
            [_image_size(meta, b, self.image_size) for b, meta in enumerate(img_metas)],
            dtype=torch.float32,
            device=device,
        )  # (bs, 2) as (h, w)
        uv[..., 0] /= sizes[None, :, None, None, 1]
        uv[..., 1] /= sizes[None, :, None, None, 0]
        bev_mask = (
            bev_mask
            & (uv[..., 1:2] > 0.0)
            & (uv[..., 1:2] < 1.0)
            & (uv[..., 0:1] < 1.0)
            & (uv[..., 0:1] > 0.0)
        )
        return uv.permute(2, 1, 3, 0, 4), bev_mask.permute(2, 1, 3, 0, 4).squeeze(-1)

    def forward(
        self,
        bev_query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        *args,
        bev_h: int | None = None,
        bev_w: int | None = None,
        bev_pos: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
        level_start_index: torch.Tensor | None = None,
        valid_ratios: torch.Tensor | None = None,
        prev_bev: torch.Tensor | None = None,
        shift: torch.Tensor | float = 0.0,
        **kwargs,
    ) -> torch.Tensor:
        if bev_h is None or bev_w is None:
            raise ValueError("BEVFormerEncoder: bev_h and bev_w are required")
        if "img_metas" not in kwargs:
            raise ValueError("BEVFormerEncoder: img_metas (per-sample camera metas) is required")
        num_query, bs, channels = bev_query.shape
        if num_query != bev_h * bev_w:
            raise ValueError(
                f"BEVFormerEncoder: bev_query has {num_query} queries, bev_h*bev_w = {bev_h * bev_w}"
            )
        if channels != self.embed_dims:
            raise ValueError(
                f"BEVFormerEncoder: bev_query has {channels} channels, the layers {self.embed_dims}"
            )
        if bev_pos is None or bev_pos.shape != bev_query.shape:
            raise ValueError(
                f"BEVFormerEncoder: bev_pos must be (nq, bs, C) = {tuple(bev_query.shape)}, "
                f"got {None if bev_pos is None else tuple(bev_pos.shape)}"
            )
        output = bev_query
        intermediate = []
        pc = self.pc_range
        ref_3d = self.get_reference_points(
            bev_h,
            bev_w,
            pc[5] - pc[2],
            self.num_points_in_pillar,
            dim="3d",
            bs=bs,
            device=bev_query.device,
            dtype=bev_query.dtype,
        )
        ref_2d = self.get_reference_points(
            bev_h, bev_w, dim="2d", bs=bs, device=bev_query.device, dtype=bev_query.dtype
        )
        reference_points_cam, bev_mask = self.point_sampling(ref_3d, self.pc_range, kwargs["img_metas"])

        shift = torch.as_tensor(shift, dtype=ref_2d.dtype, device=ref_2d.device)
        if shift.dim() == 0:
            shift = shift.expand(bs, 2)
        if shift.shape != (bs, 2):
            raise ValueError(
                f"BEVFormerEncoder: shift must be (bs, 2) as (x, y) in BEV fractions, "
                f"got {tuple(shift.shape)}"
            )
        # Published quirk kept ("for reproducing the paper"): no clone, so ref_2d itself is shifted.
        shift_ref_2d = ref_2d
        shift_ref_2d += shift[:, None, None, :]

        bev_query = bev_query.permute(1, 0, 2)
        bev_pos = bev_pos.permute(1, 0, 2)
        bs, len_bev, num_bev_level, _ = ref_2d.shape
        if prev_bev is not None:
            if prev_bev.shape != (len_bev, bs, channels):
                raise ValueError(
                    f"BEVFormerEncoder: prev_bev must be (nq, bs, C) = {(len_bev, bs, channels)}, "
                    f"got {tuple(prev_bev.shape)}"
                )
            prev_bev = prev_bev.permute(1, 0, 2)
            prev_bev = torch.stack([prev_bev, bev_query], 1).reshape(bs * 2, len_bev, -1)
            hybird_ref_2d = torch.stack([shift_ref_2d, ref_2d], 1).reshape(bs * 2, len_bev, num_bev_level, 2)
        else:
            hybird_ref_2d = torch.stack([ref_2d, ref_2d], 1).reshape(bs * 2, len_bev, num_bev_level, 2)

        for layer in self.layers:
            output = layer(
                bev_query,
                key,
                value,
                *args,
                bev_pos=bev_pos,
                ref_2d=hybird_ref_2d,
                ref_3d=ref_3d,
                bev_h=bev_h,
                bev_w=bev_w,
                spatial_shapes=spatial_shapes,
                level_start_index=level_start_index,
                reference_points_cam=reference_points_cam,
                bev_mask=bev_mask,
                prev_bev=prev_bev,
                **kwargs,
            )
            bev_query = output
            if self.return_intermediate:
                intermediate.append(output)
        if self.return_intermediate:
            return torch.stack(intermediate)
        return output
