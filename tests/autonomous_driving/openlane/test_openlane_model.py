"""ROAD_BEVFormer (driving_openlane_params.md §0, §2–§5): the published model's parameter
names and shapes (built on the meta device), a tiny model (sizes only changed) that trains
on one batch, predict output accepted by ``format_preds`` / ``check_frame``, the Hungarian
assignments against brute force, relationship targets, and clear errors."""

from __future__ import annotations

import copy
import inspect
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from mmdet.registry import MODELS
from mmengine.structures import BaseDataElement

import autonomous_driving.openlane_v2.road_bevformer  # noqa: F401  (registers the model)
from autonomous_driving.openlane_v2.geometry import pad4
from autonomous_driving.openlane_v2.lane_head import LaneHungarianAssigner
from autonomous_driving.openlane_v2.relationship_head import RelationshipHead
from autonomous_driving.openlane_v2.submission import check_frame, format_preds
from autonomous_driving.openlane_v2.te_head import hungarian_assigner

PC_RANGE = [-51.2, -25.6, -2.3, 51.2, 25.6, 1.7]


def model_cfg(
    *,
    dim=256,
    ffn=512,
    bev_h=100,
    bev_w=200,
    num_cams=7,
    enc_layers=3,
    dec_layers=6,
    te_enc_layers=6,
    num_query=100,
    te_query=100,
    backbone=None,
    neck_in=(80, 160, 320, 640),
    rotate_center=(50, 100),
    heads=8,
) -> dict:
    """The published ``internimage-s.py`` model section; tests shrink sizes only."""
    if backbone is None:
        backbone = dict(
            type="InternImage",
            core_op="DCNv3",
            channels=80,
            depths=[4, 4, 21, 4],
            groups=[5, 10, 20, 40],
            mlp_ratio=4.0,
            drop_path_rate=0.3,
            norm_layer="LN",
            layer_scale=1.0,
            offset_scale=1.0,
            post_norm=True,
            with_cp=False,
            out_indices=(0, 1, 2, 3),
            init_cfg=None,
        )
    bev_layer = dict(
        type="BEVFormerLayer",
        attn_cfgs=[
            dict(type="TemporalSelfAttention", embed_dims=dim, num_heads=heads, num_levels=1),
            dict(
                type="SpatialCrossAttention",
                pc_range=PC_RANGE,
                num_cams=num_cams,
                embed_dims=dim,
                deformable_attention=dict(
                    type="MSDeformableAttention3D",
                    embed_dims=dim,
                    num_heads=heads,
                    num_points=8,
                    num_levels=4,
                ),
            ),
        ],
        feedforward_channels=ffn,
        ffn_dropout=0.1,
        ffn_cfgs=dict(
            type="FFN",
            embed_dims=dim,
            feedforward_channels=ffn,
            num_fcs=2,
            ffn_drop=0.1,
            act_cfg=dict(type="ReLU", inplace=True),
        ),
        operation_order=("self_attn", "norm", "cross_attn", "norm", "ffn", "norm"),
    )
    lane_layer = dict(
        type="CustomDetrTransformerDecoderLayer",
        attn_cfgs=[
            dict(type="MultiheadAttention", embed_dims=dim, num_heads=heads, dropout=0.1),
            dict(type="CustomMSDeformableAttention", embed_dims=dim, num_heads=heads, num_levels=1),
        ],
        feedforward_channels=ffn,
        ffn_dropout=0.1,
        operation_order=("self_attn", "norm", "cross_attn", "norm", "ffn", "norm"),
    )
    te_enc_layer = dict(
        type="BaseTransformerLayer",
        attn_cfgs=dict(type="MultiScaleDeformableAttention", embed_dims=dim, num_heads=heads),
        feedforward_channels=ffn,
        ffn_dropout=0.1,
        operation_order=("self_attn", "norm", "ffn", "norm"),
    )
    te_dec_layer = dict(
        type="DetrTransformerDecoderLayer",
        attn_cfgs=[
            dict(type="MultiheadAttention", embed_dims=dim, num_heads=heads, dropout=0.1),
            dict(type="MultiScaleDeformableAttention", embed_dims=dim, num_heads=heads),
        ],
        feedforward_channels=ffn,
        ffn_dropout=0.1,
        operation_order=("self_attn", "norm", "cross_attn", "norm", "ffn", "norm"),
    )
    rel = dict(
        type="RelationshipHead",
        in_channels_o1=dim,
        in_channels_o2=dim,
        shared_param=False,
        loss_rel=dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=5),
    )
    return dict(
        type="ROAD_BEVFormer",
        img_backbone=backbone,
        img_neck=dict(
            type="FPN",
            in_channels=list(neck_in),
            out_channels=dim,
            start_level=0,
            add_extra_convs="on_output",
            num_outs=4,
            relu_before_extra_convs=True,
        ),
        bev_constructor=dict(
            type="BEVFormerConstructer",
            num_feature_levels=4,
            num_cams=num_cams,
            embed_dims=dim,
            rotate_prev_bev=True,
            use_shift=True,
            use_can_bus=True,
            pc_range=PC_RANGE,
            bev_h=bev_h,
            bev_w=bev_w,
            rotate_center=list(rotate_center),
            encoder=dict(
                type="BEVFormerEncoder",
                num_layers=enc_layers,
                pc_range=PC_RANGE,
                num_points_in_pillar=4,
                return_intermediate=False,
                transformerlayers=bev_layer,
            ),
            positional_encoding=dict(
                type="LearnedPositionalEncoding", num_feats=dim // 2, row_num_embed=bev_h, col_num_embed=bev_w
            ),
        ),
        pts_bbox_head=dict(
            type="LCDeformableDETRHead",
            num_classes=1,
            in_channels=dim,
            num_query=num_query,
            bev_h=bev_h,
            bev_w=bev_w,
            pc_range=PC_RANGE,
            with_box_refine=False,
            code_size=15,
            code_weights=[1.0] * 15,
            transformer=dict(
                type="PerceptionTransformer",
                embed_dims=dim,
                decoder=dict(
                    type="LaneDetectionTransformerDecoder",
                    num_layers=dec_layers,
                    return_intermediate=True,
                    transformerlayers=lane_layer,
                ),
            ),
            loss_cls=dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.5),
            loss_bbox=dict(type="L1Loss", loss_weight=0.0075),
            loss_iou=dict(type="GIoULoss", loss_weight=0.0),
        ),
        bbox_head=dict(
            type="TEDeformableDETRHead",
            num_query=te_query,
            num_classes=13,
            in_channels=dim,
            sync_cls_avg_factor=True,
            with_box_refine=True,
            as_two_stage=False,
            transformer=dict(
                type="DeformableDetrTransformer",
                encoder=dict(
                    type="DetrTransformerEncoder", num_layers=te_enc_layers, transformerlayers=te_enc_layer
                ),
                decoder=dict(
                    type="DeformableDetrTransformerDecoder",
                    num_layers=dec_layers,
                    return_intermediate=True,
                    transformerlayers=te_dec_layer,
                ),
            ),
            positional_encoding=dict(
                type="SinePositionalEncoding", num_feats=dim // 2, normalize=True, offset=-0.5
            ),
            loss_cls=dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
            loss_bbox=dict(type="L1Loss", loss_weight=2.5),
            loss_iou=dict(type="GIoULoss", loss_weight=1.0),
            train_cfg=dict(
                assigner=dict(
                    type="HungarianAssigner",
                    cls_cost=dict(type="FocalLossCost", weight=1.0),
                    reg_cost=dict(type="BBoxL1Cost", weight=2.5, box_format="xywh"),
                    iou_cost=dict(type="IoUCost", iou_mode="giou", weight=1.0),
                )
            ),
            test_cfg=dict(max_per_img=50),
        ),
        lclc_head=rel,
        lcte_head=dict(rel),
        train_cfg=dict(
            pts=dict(
                assigner=dict(
                    type="LaneHungarianAssigner",
                    cls_cost=dict(type="FocalLossCost", weight=1.5),
                    reg_cost=dict(type="LaneL1Cost", weight=0.0075),
                    iou_cost=dict(type="IoUCost", weight=0.0),
                )
            )
        ),
    )


# -- tiny model: 7 cameras of 64x96 (front view 64 rows after the resize), BEV 8 x 16, 32 channels.
DIM, BEV_H, BEV_W, IMG_H, IMG_W = 32, 8, 16, 64, 96


def tiny_cfg() -> dict:
    backbone = dict(
        type="InternImage",
        core_op="DCNv3",
        channels=8,
        depths=[1, 1, 1, 1],
        groups=[1, 2, 4, 8],
        mlp_ratio=2.0,
        drop_path_rate=0.0,
        norm_layer="LN",
        layer_scale=1.0,
        offset_scale=1.0,
        post_norm=True,
        with_cp=False,
        out_indices=(0, 1, 2, 3),
        init_cfg=None,
    )
    return model_cfg(
        dim=DIM,
        ffn=64,
        bev_h=BEV_H,
        bev_w=BEV_W,
        enc_layers=1,
        dec_layers=2,
        te_enc_layers=1,
        num_query=12,
        te_query=10,
        backbone=backbone,
        neck_in=(8, 16, 32, 64),
        rotate_center=(BEV_H / 2, BEV_W / 2),
        heads=4,
    )


def _camera(yaw_deg: float) -> np.ndarray:
    """lidar2img of a level camera 1.6 m up, looking along ``yaw`` (ego x forward, y left)."""
    yaw = math.radians(yaw_deg)
    fwd = np.array([math.cos(yaw), math.sin(yaw), 0.0])
    right = np.array([math.sin(yaw), -math.cos(yaw), 0.0])
    rot = np.stack([right, [0.0, 0.0, -1.0], fwd], 1)  # camera -> ego
    t = np.array([0.0, 0.0, 1.6])
    lidar2cam = np.eye(4)
    lidar2cam[:3, :3] = rot.T
    lidar2cam[:3, 3] = -rot.T @ t
    k = np.array([[0.6 * IMG_W, 0, IMG_W / 2], [0, 0.6 * IMG_W, IMG_H / 2], [0, 0, 1]])
    return pad4(k) @ lidar2cam


def frame_meta() -> dict:
    yaws = (0, 45, -45, 153, -153, 99, -99)
    can_bus = np.zeros(18)
    can_bus[:3] = (1200.0, -340.0, 10.0)  # absolute global pose, as published
    can_bus[3] = 1.0
    can_bus[16], can_bus[17] = 0.3, math.degrees(0.3)
    return dict(
        lidar2img=[_camera(y) for y in yaws],
        img_shape=[(IMG_H - 4, IMG_W, 3)] + [(IMG_H, IMG_W, 3)] * 6,
        can_bus=can_bus,
        scale_factor=np.array([1.3, 0.75, 1.3, 0.75], dtype=np.float32),
    )


def data_sample(seed: int = 0, num_te: int = 2) -> BaseDataElement:
    rng = np.random.default_rng(seed)
    lanes = []
    for i in range(3):
        x = np.linspace(4.0 + 3 * i, 30.0 + 3 * i, 5)
        lanes.append(np.stack([x, np.full(5, -3.5 + 3.5 * i), np.full(5, -1.5)], 1).reshape(-1))
    te = np.array([[10, 5, 20, 15], [40, 8, 52, 20], [70, 2, 80, 10]], dtype=np.float32)[:num_te]
    ds = BaseDataElement(metainfo=dict(img_metas=[frame_meta()]))
    ds.gt_lc = torch.tensor(np.stack(lanes), dtype=torch.float32)
    ds.gt_lc_labels = torch.zeros(3, dtype=torch.long)
    ds.gt_te = torch.tensor(te)
    ds.gt_te_labels = torch.tensor(rng.integers(0, 13, num_te))
    ds.gt_topology_lclc = torch.tensor([[0, 1, 0], [0, 0, 0], [0, 0, 0]], dtype=torch.int8)
    ds.gt_topology_lcte = torch.tensor(rng.integers(0, 2, (3, num_te)), dtype=torch.int8)
    return ds


def images(bs: int = 1) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"img": torch.randn(bs, 1, 7, 3, IMG_H, IMG_W, generator=g)}


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    model = MODELS.build(tiny_cfg())
    model.init_weights()
    return model


# -- published sizes ------------------------------------------------------------------------------


def test_published_model_names_and_shapes():
    with torch.device("meta"):
        model = MODELS.build(model_cfg())
    sd = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    children = [n for n, _ in model.named_children()]
    assert children == [
        "data_preprocessor",
        "img_backbone",
        "img_neck",
        "pts_bbox_head",
        "bev_constructor",
        "bbox_head",
        "lclc_head",
        "lcte_head",
    ]
    expect = {
        # BEV constructor (§2.1)
        "bev_constructor.bev_embedding.weight": (20000, 256),
        "bev_constructor.level_embeds": (4, 256),
        "bev_constructor.cams_embeds": (7, 256),
        "bev_constructor.can_bus_mlp.0.weight": (128, 18),
        "bev_constructor.can_bus_mlp.2.weight": (256, 128),
        "bev_constructor.can_bus_mlp.norm.weight": (256,),
        "bev_constructor.positional_encoding.row_embed.weight": (100, 128),
        "bev_constructor.positional_encoding.col_embed.weight": (200, 128),
        "bev_constructor.encoder.layers.2.attentions.0.sampling_offsets.weight": (128, 512),
        "bev_constructor.encoder.layers.2.attentions.0.attention_weights.weight": (64, 512),
        "bev_constructor.encoder.layers.2.attentions.0.value_proj.weight": (256, 256),
        "bev_constructor.encoder.layers.0.attentions.1.deformable_attention.sampling_offsets.weight": (
            512,
            256,
        ),
        "bev_constructor.encoder.layers.0.attentions.1.deformable_attention.attention_weights.weight": (
            256,
            256,
        ),
        "bev_constructor.encoder.layers.0.attentions.1.output_proj.weight": (256, 256),
        "bev_constructor.encoder.layers.1.ffns.0.layers.0.0.weight": (512, 256),
        "bev_constructor.encoder.layers.1.ffns.0.layers.1.weight": (256, 512),
        "bev_constructor.encoder.layers.1.norms.2.weight": (256,),
        # lane head (§3.1)
        "pts_bbox_head.code_weights": (15,),
        "pts_bbox_head.query_embedding.weight": (100, 512),
        "pts_bbox_head.cls_branches.5.1.weight": (256,),
        "pts_bbox_head.cls_branches.5.4.bias": (256,),
        "pts_bbox_head.cls_branches.5.6.weight": (1, 256),
        "pts_bbox_head.reg_branches.5.2.weight": (256, 256),
        "pts_bbox_head.reg_branches.5.4.weight": (15, 256),
        "pts_bbox_head.transformer.reference_points.weight": (3, 256),
        "pts_bbox_head.transformer.decoder.layers.5.attentions.0.attn.in_proj_weight": (768, 256),
        "pts_bbox_head.transformer.decoder.layers.5.attentions.0.attn.out_proj.weight": (256, 256),
        "pts_bbox_head.transformer.decoder.layers.5.attentions.1.sampling_offsets.weight": (64, 256),
        "pts_bbox_head.transformer.decoder.layers.5.attentions.1.attention_weights.weight": (32, 256),
        "pts_bbox_head.transformer.decoder.layers.5.attentions.1.value_proj.weight": (256, 256),
        "pts_bbox_head.transformer.decoder.layers.5.ffns.0.layers.0.0.weight": (512, 256),
        "pts_bbox_head.transformer.decoder.layers.5.norms.2.bias": (256,),
        # traffic-element head (§4.1, mmdet 2.x names)
        "bbox_head.query_embedding.weight": (100, 512),
        "bbox_head.cls_branches.5.weight": (13, 256),
        "bbox_head.reg_branches.5.4.weight": (4, 256),
        "bbox_head.transformer.level_embeds": (4, 256),
        "bbox_head.transformer.reference_points.weight": (2, 256),
        "bbox_head.transformer.encoder.layers.5.attentions.0.sampling_offsets.weight": (256, 256),
        "bbox_head.transformer.encoder.layers.5.attentions.0.attention_weights.weight": (128, 256),
        "bbox_head.transformer.encoder.layers.5.ffns.0.layers.0.0.weight": (512, 256),
        "bbox_head.transformer.encoder.layers.5.norms.1.weight": (256,),
        "bbox_head.transformer.decoder.layers.5.attentions.0.attn.in_proj_weight": (768, 256),
        "bbox_head.transformer.decoder.layers.5.attentions.1.sampling_offsets.weight": (256, 256),
        "bbox_head.transformer.decoder.layers.5.attentions.1.output_proj.weight": (256, 256),
        "bbox_head.transformer.decoder.layers.5.norms.2.weight": (256,),
        # relationship heads (§5)
        "lclc_head.MLP_o1.layers.2.weight": (128, 256),
        "lclc_head.MLP_o2.layers.0.weight": (256, 256),
        "lclc_head.classifier.layers.0.weight": (256, 256),
        "lcte_head.classifier.layers.2.weight": (1, 256),
        # FPN (§0): no extra conv
        "img_neck.lateral_convs.0.conv.weight": (256, 80, 1, 1),
        "img_neck.fpn_convs.3.conv.weight": (256, 256, 3, 3),
    }
    for key, shape in expect.items():
        assert sd.get(key) == shape, key
    assert "img_neck.fpn_convs.4.conv.weight" not in sd
    assert not any("MLP_o2" in k and "layers.3" in k for k in sd)
    assert not any(".bbox_head.transformer.encoder.layers.0.norms.2" in k for k in sd)

    # tensors per layer / head
    def count(prefix):
        return sum(1 for k in sd if k.startswith(prefix))

    assert count("bev_constructor.encoder.layers.0.") == 26
    assert count("pts_bbox_head.transformer.decoder.layers.0.") == 22
    assert count("bbox_head.transformer.encoder.layers.0.") == 16
    assert count("bbox_head.transformer.decoder.layers.0.") == 22
    assert count("lclc_head.") == count("lcte_head.") == 18
    assert count("pts_bbox_head.cls_branches.") == 6 * 10 and count("pts_bbox_head.reg_branches.") == 6 * 6
    assert count("bbox_head.cls_branches.") == 6 * 2 and count("bbox_head.reg_branches.") == 6 * 6
    params = {
        n: sum(p.numel() for k, p in model.named_parameters() if k.startswith(n + ".")) for n in children[1:]
    }
    # from the §2.1 / §3.1 / §4.1 / §5 tables
    bev_layer = (
        (128 * 512 + 128)
        + (64 * 512 + 64)
        + 2 * (256 * 256 + 256)
        + (512 * 256 + 512)
        + 2 * (256 * 256 + 256)
        + (256 * 256 + 256)
        + (512 * 256 + 512)
        + (256 * 512 + 256)
        + 6 * 256
    )
    assert params["bev_constructor"] == (
        20000 * 256
        + 4 * 256
        + 7 * 256
        + 128 * 18
        + 128
        + 256 * 128
        + 256
        + 2 * 256
        + 100 * 128
        + 200 * 128
        + 3 * bev_layer
    )
    rel = 2 * (2 * (256 * 256 + 256) + 128 * 256 + 128) + 2 * (256 * 256 + 256) + 257
    assert params["lclc_head"] == params["lcte_head"] == rel
    assert params["img_backbone"] == 48_500_000 or abs(params["img_backbone"] - 48.50e6) < 0.01e6


# -- tiny model -----------------------------------------------------------------------------------


def test_tiny_model_trains_and_loss_falls(tiny_model):
    model = tiny_model
    model.train()
    samples = [data_sample(0), data_sample(1, num_te=3)]
    inputs = {"img": torch.cat([images()["img"], images()["img"].flip(-1)])}
    losses = model(inputs, samples, mode="loss")
    names = {
        "lane_head.loss_lane_cls",
        "lane_head.loss_lane_reg",
        "lane_head.d0.loss_lane_cls",
        "lane_head.d0.loss_lane_reg",
        "lclc_head.loss_rel",
        "bbox_head.loss_cls",
        "bbox_head.loss_bbox",
        "bbox_head.loss_iou",
        "bbox_head.d0.loss_cls",
        "bbox_head.d0.loss_bbox",
        "bbox_head.d0.loss_iou",
        "lcte_head.loss_rel",
    }
    assert set(losses) == names
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    optim = torch.optim.AdamW(model.parameters(), lr=2e-3)
    totals = []
    for _ in range(6):
        losses = model(inputs, samples, mode="loss")
        total = sum(losses.values())
        optim.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 35)
        optim.step()
        totals.append(total.item())
    assert totals[-1] < 0.8 * totals[0], totals
    grads = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    # parameters without a gradient: the unused MSDA3D reference of nothing is expected; report if any
    assert not any(
        n.startswith(("bev_constructor.", "pts_bbox_head.", "lclc_head.", "lcte_head."))
        and "code_weights" not in n
        for n in grads
    ), grads[:10]


def test_no_traffic_element_zeroes_te_losses(tiny_model):
    model = tiny_model
    model.train()
    losses = model(images(), [data_sample(0, num_te=0)], mode="loss")
    assert all(float(v) == 0.0 for k, v in losses.items() if k.startswith(("bbox_head.", "lcte_head.")))
    assert float(losses["lane_head.loss_lane_cls"]) > 0


def test_predict_feeds_format_preds(tiny_model):
    model = tiny_model
    model.eval()
    out = model(images(), [data_sample(0)], mode="predict")
    s = out[0]
    lanes, scores = s.pred_lc
    assert lanes.shape == (12, 15) and scores.shape == (12, 1) and 0 <= scores.min() <= scores.max() <= 1
    det, te_scores = s.pred_te
    assert det.shape == (10, 5) and te_scores.shape == (10,)
    assert s.pred_topology_lclc.shape == (12, 12) and s.pred_topology_lcte.shape == (12, 10)
    # lanes inside pc_range; boxes in the original front image (per-axis inverse of the resize)
    pts = lanes.reshape(-1, 5, 3)
    assert (pts >= np.array(PC_RANGE[:3]) - 1e-4).all() and (pts <= np.array(PC_RANGE[3:]) + 1e-4).all()
    assert det[:, [0, 2]].max() <= IMG_W / 1.3 + 1e-3 and det[:, [1, 3]].max() <= (IMG_H - 4) / 0.75 + 1e-3
    frame = format_preds(s.pred_lc, s.pred_te, s.pred_topology_lclc, s.pred_topology_lcte)
    check_frame(("val", "seg", "0"), frame)
    assert len(frame["predictions"]["lane_centerline"]) == 12
    assert frame["predictions"]["lane_centerline"][0]["points"].shape == (11, 3)
    # deterministic in eval mode
    again = model(images(), [data_sample(0)], mode="predict")[0]
    np.testing.assert_array_equal(again.pred_lc[0], lanes)


# -- assignment, targets ---------------------------------------------------------------------------


def _brute_force(cost: np.ndarray) -> float:
    n_pred, n_gt = cost.shape
    return min(
        sum(cost[p, g] for g, p in enumerate(perm)) for perm in itertools.permutations(range(n_pred), n_gt)
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lane_assigner_matches_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    logits, lanes = torch.randn(5, 1, generator=g), torch.randn(5, 15, generator=g) * 10
    gt = torch.randn(3, 15, generator=g) * 10
    assigner = LaneHungarianAssigner(
        cls_cost=dict(type="FocalLossCost", weight=1.5), reg_cost=dict(type="LaneL1Cost", weight=0.0075)
    )
    result = assigner.assign_lanes(logits, lanes, gt, torch.zeros(3, dtype=torch.long))
    p = logits.sigmoid()[:, 0].double().numpy()
    a, gam, eps = 0.25, 2.0, 1e-12
    focal = 1.5 * (-a * (1 - p) ** gam * np.log(p + eps) + (1 - a) * p**gam * np.log(1 - p + eps))
    cost = focal[:, None] + 0.0075 * np.abs(lanes.double().numpy()[:, None] - gt.double().numpy()[None]).sum(
        -1
    )
    matched = result.gt_inds.numpy()
    assert sorted(matched[matched > 0]) == [1, 2, 3]
    ours = sum(cost[q, matched[q] - 1] for q in range(5) if matched[q] > 0)
    assert ours == pytest.approx(_brute_force(cost), abs=1e-6)


def test_te_assigner_matches_brute_force():
    from mmengine.structures import InstanceData

    g = torch.Generator().manual_seed(3)
    h, w = 60, 100
    cxcywh = torch.rand(5, 4, generator=g) * 0.5 + 0.2
    boxes = torch.cat([cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, :2] + cxcywh[:, 2:] / 2], 1)
    pred = InstanceData(scores=torch.randn(5, 13, generator=g), bboxes=boxes * torch.tensor([w, h, w, h]))
    gt_boxes = torch.tensor([[10.0, 5, 30, 25], [50, 20, 90, 50], [5, 30, 40, 58]])
    gt = InstanceData(bboxes=gt_boxes, labels=torch.tensor([3, 0, 12]))
    assigner = hungarian_assigner(
        dict(
            type="HungarianAssigner",
            cls_cost=dict(type="FocalLossCost", weight=1.0),
            reg_cost=dict(type="BBoxL1Cost", weight=2.5, box_format="xywh"),
            iou_cost=dict(type="IoUCost", iou_mode="giou", weight=1.0),
        )
    )
    cost = sum(c(pred, gt, {"img_shape": (h, w)}) for c in assigner.match_costs).double().numpy()
    result = assigner.assign(pred_instances=pred, gt_instances=gt, img_meta={"img_shape": (h, w)})
    matched = result.gt_inds.numpy()
    ours = sum(cost[q, matched[q] - 1] for q in range(5) if matched[q] > 0)
    assert ours == pytest.approx(_brute_force(cost), abs=1e-5)


def test_relationship_targets_only_between_matched_pairs():
    adj = torch.tensor([[0, 1, 1], [0, 0, 1], [1, 0, 0]])
    assign_o1 = (torch.tensor([4, 0]), torch.tensor([1, 2]))  # query 4 <- gt 1, query 0 <- gt 2
    assign_o2 = (torch.tensor([3, 1, 2]), torch.tensor([0, 1, 2]))
    t = RelationshipHead.targets(5, 4, assign_o1, assign_o2, adj)
    expect = torch.zeros(5, 4, dtype=torch.long)
    expect[4, 3], expect[4, 1], expect[4, 2] = 0, 0, 1  # gt row 1: [0, 0, 1]
    expect[0, 3], expect[0, 1], expect[0, 2] = 1, 0, 0  # gt row 2: [1, 0, 0]
    assert torch.equal(t, expect)
    head = RelationshipHead(16, 16, shared_param=False)
    logits = torch.zeros(1, 5, 4, 1)
    loss = head.loss(logits, [assign_o1], [assign_o2], [adj])["loss_rel"]
    # focal at p = 0.5: pos (label 0) alpha·0.25·ln2, neg (label 1) (1-alpha)·0.25·ln2; mean × 5
    pos = int(expect.sum())
    per = [0.25 * 0.25 * math.log(2)] * pos + [0.75 * 0.25 * math.log(2)] * (20 - pos)
    assert float(loss) == pytest.approx(5 * sum(per) / 20, rel=1e-5)


# -- errors ---------------------------------------------------------------------------------------


def test_clear_errors(tiny_model):
    model = tiny_model
    with pytest.raises(ValueError, match=r"\(B, N, 3, H, W\)"):
        model({"img": torch.zeros(1, 7, 3, IMG_H)}, [data_sample()], mode="tensor")
    bad = data_sample()
    bad.set_metainfo(dict(img_metas=[{k: v for k, v in frame_meta().items() if k != "can_bus"}]))
    with pytest.raises(KeyError, match="can_bus"):
        model(images(), [bad], mode="tensor")
    missing = data_sample()
    del missing.gt_te
    with pytest.raises(KeyError, match="gt_te"):
        model(images(), [missing], mode="loss")
    wrong = data_sample()
    wrong.gt_lc = torch.zeros(3, 12)
    with pytest.raises(ValueError, match="gt_lc must be"):
        model(images(), [wrong], mode="loss")
    with pytest.raises(ValueError, match="mode must be"):
        model(images(), [data_sample()], mode="train")
    with pytest.raises(ValueError, match="prev_bev must be None"):
        model.bev_constructor([torch.zeros(1, 7, DIM, 4, 4)] * 4, [frame_meta()], torch.zeros(1))


# -- arithmetic of the published quirks and init ----------------------------------------------------


def test_openlane_options_set_by_the_constructor_and_the_configs(tiny_model):
    """§2.4 as explicit options of the shared stack: the constructor fills them in for a
    config that leaves them out (``tiny_cfg`` here, as published), a config may set them
    otherwise, and the shipped configs spell them out."""
    from mmengine.config import Config

    from autonomous_driving.bev_common.attention import TemporalSelfAttention
    from autonomous_driving.bev_common.bev_features import BEVFeaturesMixin
    from autonomous_driving.occupancy_prediction.bevformer_occ.transformer import TransformerOcc
    from autonomous_driving.openlane_v2.bev_constructor import BEVFormerConstructer, openlane_encoder_cfg

    constructor = tiny_model.bev_constructor
    encoder = constructor.encoder
    assert (encoder.projection, encoder.image_size) == ("lidar2img", "front_img_shape")
    tsa = [m for m in constructor.modules() if isinstance(m, TemporalSelfAttention)]
    assert tsa and all(m.double_value_proj for m in tsa)
    assert not any(m.value_proj._forward_hooks for m in tsa)  # no hook: the TSA option does it
    # one BEV construction for both baselines
    assert BEVFormerConstructer.get_bev_features is TransformerOcc.get_bev_features
    assert BEVFormerConstructer.get_bev_features is BEVFeaturesMixin.get_bev_features

    enc = tiny_cfg()["bev_constructor"]["encoder"]
    explicit = dict(enc, projection="lidar2img@ego2lidar", image_size="pad_shape")
    explicit["transformerlayers"] = copy.deepcopy(enc["transformerlayers"])
    explicit["transformerlayers"]["attn_cfgs"][0]["double_value_proj"] = False
    kept = openlane_encoder_cfg(explicit)
    assert (kept["projection"], kept["image_size"]) == ("lidar2img@ego2lidar", "pad_shape")
    assert kept["transformerlayers"]["attn_cfgs"][0]["double_value_proj"] is False
    filled = openlane_encoder_cfg(enc)
    assert filled["transformerlayers"]["attn_cfgs"][0]["double_value_proj"] is True
    assert "double_value_proj" not in enc["transformerlayers"]["attn_cfgs"][0]  # the caller's dict untouched

    configs = Path(__file__).resolve().parents[3] / "autonomous_driving" / "openlane-v2" / "plugin"
    for name in ("internimage-s.py", "internimage-s_tiny.py"):
        cfg = Config.fromfile(str(configs / "mmdet3d" / "configs" / name)).model.bev_constructor.encoder
        assert (cfg.projection, cfg.image_size) == ("lidar2img", "front_img_shape"), name
        assert cfg.transformerlayers.attn_cfgs[0].double_value_proj is True, name


def test_bev_normalised_by_front_view_shape_only(tiny_model):
    """Point sampling divides by img_shape[0] (the unpadded resized front view) for every
    camera; pad_shape and the other cameras' shapes do not matter (§2.3)."""
    model = tiny_model
    model.eval()
    g = torch.Generator().manual_seed(1)
    feats = [torch.randn(1, 7, DIM, s, 2 * s, generator=g) for s in (16, 8, 4, 2)]
    meta = frame_meta()
    with torch.no_grad():
        ref = model.bev_constructor(feats, [meta])
        other = dict(
            meta, pad_shape=[(IMG_H, IMG_W, 3)] * 7, img_shape=[meta["img_shape"][0]] + [(5, 5, 3)] * 6
        )
        torch.testing.assert_close(model.bev_constructor(feats, [other]), ref)
        front = dict(meta, img_shape=[(IMG_H, IMG_W, 3)] * 7)
        assert not torch.allclose(model.bev_constructor(feats, [front]), ref)
    assert ref.shape == (1, BEV_H * BEV_W, DIM)


def test_bev_positional_encoding_columns_first(tiny_model):
    pe = tiny_model.bev_constructor.positional_encoding
    pos = pe(torch.zeros(1, BEV_H, BEV_W))
    assert pos.shape == (1, DIM, BEV_H, BEV_W)
    torch.testing.assert_close(pos[0, : DIM // 2, 0, :], pe.col_embed.weight.t())
    torch.testing.assert_close(pos[0, DIM // 2 :, :, 0], pe.row_embed.weight.t())


def test_lane_points_are_the_reference_when_the_regression_is_zero(tiny_model):
    head = copy.deepcopy(tiny_model.pts_bbox_head).eval()
    for branch in head.reg_branches:
        torch.nn.init.zeros_(branch[-1].weight)
        torch.nn.init.zeros_(branch[-1].bias)
    bev = torch.randn(1, BEV_H * BEV_W, DIM)
    with torch.no_grad():
        out = head(None, bev, None)
        query_pos = head.query_embedding.weight[:, :DIM]
        ref = head.transformer.reference_points(query_pos).sigmoid()
    lo, hi = torch.tensor(PC_RANGE[:3]), torch.tensor(PC_RANGE[3:])
    expect = (ref * (hi - lo) + lo)[:, None].expand(-1, 5, -1).reshape(-1, 15)
    torch.testing.assert_close(out["all_lanes_preds"][-1, 0], expect, atol=1e-4, rtol=1e-4)
    assert out["all_cls_scores"].shape == (2, 1, 12, 1) and out["history_states"].shape == (2, 1, 12, DIM)


def test_published_init_values():
    model = MODELS.build(tiny_cfg())  # fresh: the module fixture has been trained
    model.init_weights()
    lane, te = model.pts_bbox_head, model.bbox_head
    for branch in lane.cls_branches:
        assert torch.allclose(branch[-1].bias, torch.tensor(-4.59512), atol=1e-4)
    for branch in te.cls_branches:
        assert torch.allclose(branch.bias, torch.tensor(-4.59512), atol=1e-4)
    for i, branch in enumerate(te.reg_branches):
        assert not branch[-1].weight.any()
        assert torch.equal(branch[-1].bias[2:], torch.full((2,), -2.0 if i == 0 else 0.0))
    assert not lane.transformer.reference_points.bias.any()
    assert not lane.code_weights.requires_grad and torch.equal(lane.code_weights, torch.ones(15))
    mha = lane.transformer.decoder.layers[0].attentions[0]
    assert mha.attn.dropout == 0.1 and mha.dropout_layer.p == 0.1 and mha.proj_drop.p == 0.0
    from mmcv.cnn.bricks.transformer import MultiheadAttention

    default = inspect.signature(MultiheadAttention.__init__).parameters["dropout_layer"].default
    assert default["drop_prob"] == 0.0  # mmcv's shared default left untouched


@pytest.mark.parametrize("published", [False, True])
def test_te_rescale_inverse_of_resize(tiny_model, published):
    head = copy.deepcopy(tiny_model.bbox_head)
    head.published_rescale = published
    cls = torch.zeros(2, 1, 3, 13)
    boxes = torch.tensor([0.5, 0.5, 0.2, 0.2]).expand(2, 1, 3, 4)
    meta = dict(img_shape=(60, 100), scale_factor=np.array([2.0, 0.5, 2.0, 0.5], dtype=np.float32))
    det, scores = head.get_bboxes({"all_cls_scores": cls, "all_bbox_preds": boxes}, [meta], rescale=True)[0]
    pixel = torch.tensor([40.0, 24.0, 60.0, 36.0])
    factor = torch.tensor([2.0, 2.0, 2.0, 2.0]) if published else torch.tensor([2.0, 0.5, 2.0, 0.5])
    torch.testing.assert_close(det[0, :4], pixel / factor)
    assert det.shape == (3, 5) and torch.allclose(scores, torch.tensor(0.5))


def test_frame_without_lanes(tiny_model):
    """The published empty ``gt_lc`` (shape (0,)) and 0-sized topology: no positives, finite
    losses, zero regression."""
    s = data_sample(0)
    s.gt_lc = torch.zeros(0)
    s.gt_lc_labels = torch.zeros(0, dtype=torch.long)
    s.gt_topology_lclc = torch.zeros(0, 0, dtype=torch.int8)
    s.gt_topology_lcte = torch.zeros(0, 2, dtype=torch.int8)
    tiny_model.train()
    losses = tiny_model(images(), [s], mode="loss")
    assert all(torch.isfinite(v) for v in losses.values())
    assert float(losses["lane_head.loss_lane_reg"]) == 0.0 and float(losses["lane_head.loss_lane_cls"]) > 0
    assert float(losses["bbox_head.loss_cls"]) > 0
