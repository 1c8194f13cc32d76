"""The VectorMapNet model (driving_hdmap_params.md §0-§5): published-size modules on the
meta device (names, shapes, counts worked out from the spec tables), published inits, the
Hungarian assignment against brute force, detector losses against torchvision's focal
loss, the generator's causality and sampler (reproducible, and the cached sampler equal
to a full re-computation), and a tiny model (sizes only) trained and run on generated
Argoverse 2 frames."""

from __future__ import annotations

import copy
import itertools
import math

import cv2
import numpy as np
import pytest
import torch
from mmdet.registry import DATASETS, MODELS
from mmengine.registry import init_default_scope
from mmengine.structures import BaseDataElement
from synthetic_av2 import make_av2_dataset
from torchvision.ops import sigmoid_focal_loss

import autonomous_driving.bev_common.data_preprocessor  # noqa: F401  (registers the preprocessor)
from autonomous_driving.online_hdmap import vectormapnet as vm
from autonomous_driving.online_hdmap.annotations import frame_to_sample, iter_frames, load_annotations
from autonomous_driving.online_hdmap.dg_head import DGHead, build_targets
from autonomous_driving.online_hdmap.map_element_detector import (
    BBoxCostC,
    HungarianLinesAssigner,
    IoUCostC,
    MapElementDetector,
)
from autonomous_driving.online_hdmap.polyline_generator import PolylineGenerator
from autonomous_driving.online_hdmap.submission import format_sample, validate_submission
from autonomous_driving.online_hdmap.tokens import (
    causal_mask,
    sample_logits,
    top_k_logits,
    top_p_logits,
)
from autonomous_driving.online_hdmap.vectorize import polygonize_local_map_bbox, vectorize_map

# ----------------------------------------------------------------------------- configs


def det_cfg(
    d: int = 256, c: int = 128, heads: int = 8, layers: int = 6, num_query: int = 120, max_lines: int = 35
) -> dict:
    """``det_net_cfg`` of ``vectormapnet_intern.py`` (sizes as arguments)."""
    return dict(
        type="MapElementDetector",
        num_query=num_query,
        max_lines=max_lines,
        bbox_size=2,
        canvas_size=(200, 100),
        separate_detect=False,
        discrete_output=False,
        num_classes=3,
        in_channels=c,
        score_thre=0.1,
        num_reg_fcs=2,
        num_points=4,
        iterative=False,
        pc_range=[-15, -30, -5.0, 15, 30, 3.0],
        sync_cls_avg_factor=True,
        transformer=dict(
            type="DeformableDetrTransformer_",
            encoder=dict(type="PlaceHolderEncoder", embed_dims=d),
            decoder=dict(
                type="DeformableDetrTransformerDecoder_",
                num_layers=layers,
                return_intermediate=True,
                transformerlayers=dict(
                    type="DetrTransformerDecoderLayer",
                    attn_cfgs=[
                        dict(
                            type="MultiheadAttention",
                            embed_dims=d,
                            num_heads=heads,
                            attn_drop=0.1,
                            proj_drop=0.1,
                            dropout_layer=dict(type="Dropout", drop_prob=0.1),
                        ),
                        dict(
                            type="MultiScaleDeformableAttention", embed_dims=d, num_heads=heads, num_levels=1
                        ),
                    ],
                    ffn_cfgs=dict(
                        type="FFN",
                        embed_dims=d,
                        feedforward_channels=d * 2,
                        num_fcs=2,
                        ffn_drop=0.1,
                        act_cfg=dict(type="ReLU", inplace=True),
                    ),
                    feedforward_channels=d * 2,
                    ffn_dropout=0.1,
                    operation_order=("norm", "self_attn", "norm", "cross_attn", "norm", "ffn"),
                ),
            ),
        ),
        positional_encoding=dict(
            type="SinePositionalEncoding", num_feats=d // 2, normalize=True, offset=-0.5
        ),
        loss_cls=dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=2.0),
        loss_reg=dict(type="LinesLoss", loss_weight=0.1),
        train_cfg=dict(
            assigner=dict(
                type="HungarianLinesAssigner",
                cost=dict(
                    type="MapQueriesCost",
                    cls_cost=dict(type="FocalLossCost", weight=2.0),
                    reg_cost=dict(type="BBoxCostC", weight=0.1),
                    iou_cost=dict(type="IoUCostC", weight=1, box_format="xyxy"),
                ),
            )
        ),
    )


def gen_cfg(d: int = 256, c: int = 128, heads: int = 8, layers: int = 6) -> dict:
    return dict(
        type="PolylineGenerator",
        in_channels=c,
        encoder_config=None,
        decoder_config=dict(
            layer_config=dict(
                d_model=d, nhead=heads, dim_feedforward=2 * d, dropout=0.2, norm_first=True, re_zero=True
            ),
            num_layers=layers,
        ),
        class_conditional=True,
        num_classes=3,
        canvas_size=(200, 100),
        max_seq_length=500,
        decoder_cross_attention=False,
        use_discrete_vertex_embeddings=True,
    )


def model_cfg(tiny: bool = False) -> dict:
    """The published ``vectormapnet_intern.py`` model; ``tiny`` changes sizes only."""
    if tiny:
        d, c, heads, layers, nq, ml = 32, 32, 4, 2, 8, 5
        trunk = dict(channels=16, depths=[1, 1, 1, 1], groups=[1, 2, 4, 8], mlp_ratio=2.0, drop_path_rate=0.0)
        step = 1.2
    else:
        d, c, heads, layers, nq, ml = 256, 128, 8, 6, 120, 35
        trunk = dict(
            channels=80, depths=[4, 4, 21, 4], groups=[5, 10, 20, 40], mlp_ratio=4.0, drop_path_rate=0.3
        )
        step = 0.3
    ch = trunk["channels"]
    head = dict(
        type="DGHead",
        augmentation=True,
        augmentation_kwargs=dict(p=0.3, scale=0.01, bbox_type="xyxy"),
        det_net_cfg=det_cfg(d, c, heads, layers, nq, ml),
        gen_net_cfg=gen_cfg(d, c, heads, layers),
        max_num_vertices=80,
        top_p_gen_model=0.9,
        sync_cls_avg_factor=True,
    )
    if tiny:
        head["max_sample_length"] = 6  # sizes only: fewer sampling steps on CPU
    return dict(
        type="VectorMapNet",
        data_preprocessor=dict(
            type="MultiViewDataPreprocessor",
            mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375],
            bgr_to_rgb=True,
            pad_size_divisor=32,
        ),
        backbone_cfg=dict(
            type="IPMEncoder",
            img_backbone=dict(
                type="InternImage",
                core_op="DCNv3",
                norm_layer="LN",
                layer_scale=1.0,
                offset_scale=1.0,
                post_norm=True,
                with_cp=False,
                out_indices=(0, 1, 2, 3),
                **trunk,
            ),
            img_neck=dict(
                type="FPN",
                in_channels=[ch, 2 * ch, 4 * ch, 8 * ch],
                out_channels=c,
                start_level=0,
                add_extra_convs=True,
                num_outs=4,
                norm_cfg=dict(type="BN2d"),
                relu_before_extra_convs=True,
            ),
            upsample=dict(zoom_size=(1, 2, 4, 8), in_channels=c, out_channels=c),
            xbound=[-30.0, 30.0, step],
            ybound=[-15.0, 15.0, step],
            heights=[-1.1, 0, 0.5, 1.1],
            out_channels=c,
            pretrained=None,
            num_cam=7,
        ),
        neck_input_channels=c,
        head_cfg=head,
        with_auxiliary_head=False,
        model_name="VectorMapNet",
    )


# ----------------------------------------------------------------------------- published sizes


@pytest.fixture(scope="module")
def published() -> torch.nn.Module:
    init_default_scope("mmdet")  # module-scoped: runs before the autouse scope fixture
    with torch.device("meta"):
        return MODELS.build(model_cfg())


def _count(model: torch.nn.Module, prefix: str) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefix))


def test_published_model_counts_and_children(published) -> None:
    assert [n for n, _ in published.named_children()] == ["data_preprocessor", "backbone", "neck", "head"]
    assert [n for n, _ in published.head.named_children()] == ["det_net", "gen_net", "augmentation"]
    # Worked out from the spec tables (§1.1, §2, §4.1, §5.1); InternImage-S is 48.50 M.
    assert _count(published, "backbone.img_backbone.") == 48_502_560
    assert _count(published, "backbone.img_neck.") == 153_600 + 1_024 + 589_824 + 1_024
    assert _count(published, "backbone.upsample.") == 6 * (128 * 128 * 9 + 128 + 2 * 128)
    assert _count(published, "backbone.outconvs.") == 128 * 524 * 9 + 128
    assert _count(published, "neck.") == 401_408 + 128 + 4 * 36_864 + 4 * 128 + 8_192
    layer = (768 * 256 + 768 + 256 * 256 + 256) + (16_448 + 8_224 + 2 * 65_792) + (131_584 + 131_328) + 1_536
    det = 33_024 + 61_440 + 1_539 + (2 * 65_792 + 4 * 256 + 514) + 768 + 768 + 1_024 + 256 + 514 + 6 * layer
    assert _count(published, "head.det_net.") == det == 4_335_687
    gen_layer = 2 * (768 * 256 + 768 + 256 * 256 + 256) + 131_584 + 131_328 + 1_536 + 3
    gen = 51_657 + 33_024 + 6 * gen_layer + 768 + 512 + 128_000 + 768 + 768 + 51_456
    assert _count(published, "head.gen_net.") == gen == 5_011_675
    assert sum(p.numel() for p in published.parameters()) == 60_644_418
    assert all(k.split(".")[0] in {"backbone", "neck", "head"} for k in published.state_dict())


def test_published_keys_and_shapes(published) -> None:
    sd = {k: tuple(v.shape) for k, v in published.state_dict().items()}
    expected = {
        "backbone.bev_planes": (4, 100, 200, 3),
        "backbone.masked_embeds.weight": (4, 128),
        "backbone.outconvs.weight": (128, 524, 3, 3),
        "backbone.img_neck.lateral_convs.3.conv.weight": (128, 640, 1, 1),
        "backbone.img_neck.fpn_convs.0.bn.running_var": (128,),
        "backbone.upsample.fscale.3.2.gn.weight": (128,),
        "backbone.upsample.fscale.1.0.conv.bias": (128,),
        "neck.0.weight": (64, 128, 7, 7),
        "neck.4.1.bn2.weight": (64,),
        "neck.5.weight": (128, 64, 1, 1),
        "head.augmentation.canvas_size": (2,),
        "head.augmentation.shift_scale": (2,),
        "head.augmentation.scaling_size": (2,),
        "head.det_net.canvas_size": (2,),
        "head.det_net.input_proj.weight": (256, 128, 1, 1),
        "head.det_net.query_embedding.weight": (120, 512),
        "head.det_net.bbox_embedding.weight": (2, 512),
        "head.det_net.label_embed.weight": (3, 256),
        "head.det_net.img_coord_embed.weight": (256, 2),
        "head.det_net.transformer.level_embeds": (1, 256),
        "head.det_net.transformer.reference_points_embed.weight": (2, 256),
        "head.det_net.transformer.decoder.layers.5.attentions.0.attn.in_proj_weight": (768, 256),
        "head.det_net.transformer.decoder.layers.5.attentions.1.sampling_offsets.weight": (64, 256),
        "head.det_net.transformer.decoder.layers.5.attentions.1.attention_weights.bias": (32,),
        "head.det_net.transformer.decoder.layers.5.attentions.1.value_proj.weight": (256, 256),
        "head.det_net.transformer.decoder.layers.5.ffns.0.layers.0.0.weight": (512, 256),
        "head.det_net.transformer.decoder.layers.5.ffns.0.layers.1.weight": (256, 512),
        "head.det_net.transformer.decoder.layers.5.norms.2.bias": (256,),
        "head.gen_net.canvas_size": (2,),
        "head.gen_net._project_to_logits.weight": (201, 256),
        "head.gen_net.input_proj.weight": (256, 128, 1, 1),
        "head.gen_net.decoder.layers.5.res_weight3": (1,),
        "head.gen_net.decoder.layers.5.multihead_attn.in_proj_weight": (768, 256),
        "head.gen_net.decoder.layers.5.linear1.weight": (512, 256),
        "head.gen_net.decoder.layers.5.norm3.weight": (256,),
        "head.gen_net.label_embed.weight": (3, 256),
        "head.gen_net.coord_embed.weight": (2, 256),
        "head.gen_net.pos_embeddings.weight": (500, 256),
        "head.gen_net.bbox_context_embed.weight": (3, 256),
        "head.gen_net.img_coord_embed.weight": (256, 2),
        "head.gen_net.vertex_embed.weight": (201, 256),
    }
    for key, shape in expected.items():
        assert sd.get(key) == shape, key
    # iterative=False: one shared branch listed under each of the 6 layer indices.
    for k in range(6):
        assert sd[f"head.det_net.pre_branches.cls.{k}.weight"] == (3, 512)
        assert sd[f"head.det_net.pre_branches.reg.{k}.0.weight"] == (256, 256)
        assert sd[f"head.det_net.pre_branches.reg.{k}.1.weight"] == (256,)
        assert sd[f"head.det_net.pre_branches.reg.{k}.6.weight"] == (2, 256)
    det = published.head.det_net
    assert det.pre_branches["cls"][0] is det.pre_branches["cls"][5]
    assert not any(".encoder." in k for k in sd)  # PlaceHolderEncoder: no parameters
    assert not any("decoder.norm" in k for k in sd if "det_net" in k)  # no final LayerNorm


# ----------------------------------------------------------------------------- inits (tiny, CPU)


def test_published_inits() -> None:
    torch.manual_seed(0)
    det = MODELS.build(det_cfg(d=32, c=16, heads=8, layers=2, num_query=6, max_lines=4))
    assert torch.allclose(det.pre_branches["cls"][0].bias, torch.full((3,), -math.log(99)))
    msda = det.transformer.decoder.layers[0].attentions[1]
    assert torch.count_nonzero(msda.attention_weights.weight) == 0
    ring = msda.sampling_offsets.bias.view(8, 1, 4, 2)
    assert torch.allclose(ring[0, 0, :, 0], torch.tensor([1.0, 2.0, 3.0, 4.0]))  # heading 0, points 1..4
    assert torch.allclose(ring[2, 0, 0], torch.tensor([0.0, 1.0]), atol=1e-6)  # heading 90 degrees
    assert torch.count_nonzero(det.transformer.reference_points_embed.bias) == 0
    gen = MODELS.build(gen_cfg(d=32, c=16, heads=4, layers=2))
    assert all(
        getattr(layer, f"res_weight{k}").item() == 0 for layer in gen.decoder.layers for k in (1, 2, 3)
    )
    assert gen.canvas_size.tolist() == [200, 100] and det.canvas_size.tolist() == [200, 100]
    # re-zero: a fresh decoder is the identity.
    x, mem = torch.randn(7, 2, 32), torch.randn(5, 2, 32)
    gen.eval()
    assert torch.allclose(gen.decoder(x, mem, tgt_mask=causal_mask(7))[0], x)


# ----------------------------------------------------------------------------- assignment / losses


def _preds(q: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    lo = torch.rand(q, 2, generator=g) * torch.tensor([150.0, 70.0])
    hi = lo + 5 + torch.rand(q, 2, generator=g) * 40
    lines = torch.stack([lo[:, 0], lo[:, 1], hi[:, 0], hi[:, 1]], 1)
    return {"lines": lines, "scores": torch.randn(q, 3, generator=g)}


@pytest.mark.parametrize(("q", "n", "seed"), [(5, 3, 0), (4, 4, 1), (6, 2, 2), (3, 1, 3)])
def test_hungarian_matches_brute_force(q: int, n: int, seed: int) -> None:
    det = MODELS.build(det_cfg(d=32, c=16, heads=8, layers=1, num_query=q, max_lines=3))
    preds = _preds(q, seed)
    gt = _preds(n, seed + 100)
    gts = {"lines": gt["lines"], "labels": torch.arange(n) % 3}
    res = det.assigner.assign(preds, gts)
    cost = det.assigner.cost(preds, gts)
    best = min(
        sum(float(cost[r, j]) for j, r in enumerate(rows)) for rows in itertools.permutations(range(q), n)
    )
    matched = torch.nonzero(res.gt_inds).reshape(-1)
    assert len(matched) == n and sorted((res.gt_inds[matched] - 1).tolist()) == list(range(n))
    got = sum(float(cost[r, res.gt_inds[r] - 1]) for r in matched.tolist())
    assert got == pytest.approx(best, rel=1e-6)
    assert (res.labels[matched] == gts["labels"][res.gt_inds[matched] - 1]).all()
    empty = det.assigner.assign(
        preds, {"lines": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    )
    assert int(empty.gt_inds.sum()) == 0


def test_costs_by_hand() -> None:
    pred = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    gt = torch.tensor([[1.0, 1.0, 3.0, 3.0]])
    assert float(BBoxCostC(weight=0.1)(pred, gt)[0, 0]) == pytest.approx(0.4)
    # inter 1, union 7, enclose 9: GIoU = 1/7 - 2/9
    assert float(IoUCostC(weight=1.0)(pred, gt)[0, 0]) == pytest.approx(-(1 / 7 - 2 / 9), rel=1e-6)
    det = MODELS.build(det_cfg(d=32, c=16, heads=8, layers=1, num_query=1, max_lines=1))
    logit = torch.tensor([[0.3, -1.2, 2.0]])
    p = torch.sigmoid(logit[0, 2])
    focal = 2.0 * (-0.25 * (1 - p) ** 2 * torch.log(p + 1e-12) + 0.75 * p**2 * torch.log(1 - p + 1e-12))
    cost = det.assigner.cost({"lines": pred, "scores": logit}, {"lines": gt, "labels": torch.tensor([2])})
    assert float(cost[0, 0]) == pytest.approx(float(focal) + 0.4 - (1 / 7 - 2 / 9), rel=1e-5)


def test_detector_losses_by_hand() -> None:
    det = MODELS.build(det_cfg(d=32, c=16, heads=8, layers=2, num_query=4, max_lines=3))
    g = torch.Generator().manual_seed(5)
    layer = {
        "lines": _preds(4, 7)["lines"][None].repeat(2, 1, 1),
        "scores": torch.randn(2, 4, 3, generator=g),
    }
    gts = [
        {"bbox": _preds(2, 8)["lines"], "class_label": torch.tensor([0, 2])},
        {"bbox": torch.zeros(0, 4), "class_label": torch.zeros(0, dtype=torch.long)},  # no lines
    ]
    losses, matches = det.loss(gts, [layer, layer])
    assert list(losses) == ["cls", "reg", "d0.cls", "d0.reg"]
    res = matches[-1][0]
    target = torch.zeros(2, 4, 3)
    reg = 0.0
    for q in torch.nonzero(res.gt_inds).reshape(-1).tolist():
        j = int(res.gt_inds[q]) - 1
        target[0, q, int(gts[0]["class_label"][j])] = 1
        d = (layer["lines"][0, q] - gts[0]["bbox"][j]).abs()
        reg += float(torch.where(d < 0.5, 0.5 * d * d / 0.5, d - 0.25).sum()) * 0.25
    num_pos = 2
    focal = sigmoid_focal_loss(layer["scores"], target, alpha=0.25, gamma=2.0, reduction="sum")
    assert float(losses["cls"]) == pytest.approx(2.0 * float(focal) / num_pos, rel=1e-5)
    assert float(losses["reg"]) == pytest.approx(0.1 * reg / num_pos, rel=1e-5)
    assert float(losses["d0.cls"]) == pytest.approx(float(losses["cls"]))


# ----------------------------------------------------------------------------- generator


def _gen_batch(n: int = 3, b: int = 2, c: int = 16) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(3)
    batch = {
        "lines_bs_idx": torch.arange(n) % b,
        "lines_cls": torch.arange(n) % 3,
        "bbox_flat": torch.tensor([[10, 5, 60, 40], [100, 20, 190, 90], [0, 0, 199, 99]])[:n],
        "polylines": torch.tensor(
            [[11, 6, 61, 41, 0, 0, 0], [101, 21, 150, 50, 191, 91, 0], [1, 1, 0, 0, 0, 0, 0]]
        )[:n],
    }
    batch["polyline_masks"] = torch.tensor(
        [[1, 1, 1, 1, 1, 0, 0], [1] * 7, [1, 1, 1, 0, 0, 0, 0]], dtype=torch.bool
    )[:n]
    batch["polyline_weights"] = batch["polyline_masks"].float() / batch["polyline_masks"].sum(1, keepdim=True)
    return batch, {"bev_embeddings": torch.randn(b, c, 3, 5, generator=g)}


def _trained_gen() -> PolylineGenerator:
    torch.manual_seed(0)
    gen = MODELS.build(gen_cfg(d=32, c=16, heads=4, layers=2))
    with torch.no_grad():  # leave the identity init so the decoder layers matter
        for layer in gen.decoder.layers:
            for k in (1, 2, 3):
                getattr(layer, f"res_weight{k}").fill_(0.5)
    return gen


def test_generator_training_pass_is_causal_and_masked() -> None:
    gen = _trained_gen().eval()  # eval: no dropout, the same mask path
    batch, ctx = _gen_batch()
    logits = gen(batch, ctx)
    assert logits.shape == (3, 7, 201)
    y = logits[:, 1::2]
    assert (y[..., 0] == -1e9).all() and (y[..., 101:] == -1e9).all()
    assert (logits[:, 0::2] > -1e8).all()  # x positions may emit the stop token and 1..200
    changed = copy.deepcopy(batch)
    changed["polylines"][:, 3] = 77  # input token 3 feeds positions >= 4 only
    diff = (gen(changed, ctx) - logits).abs().amax(-1)
    assert torch.all(diff[:, :4] == 0) and torch.all(diff[:, 4:].amax(0) > 0)
    box = copy.deepcopy(batch)
    box["bbox_flat"][:, 0] += 1  # the condition block is seen from position 0 on
    assert (gen(box, ctx) - logits)[:, 0].abs().amax() > 0
    loss = gen.loss(batch, logits)["seq"]
    logp = torch.log_softmax(logits, -1).gather(-1, batch["polylines"][..., None])[..., 0]
    w = batch["polyline_weights"]
    assert loss.item() == pytest.approx(
        (-(logp * batch["polyline_masks"] * w).sum() / w.sum()).item(), rel=1e-6
    )


def test_sampling_is_reproducible_with_a_seed() -> None:
    gen = _trained_gen().eval()
    batch, ctx = _gen_batch()
    state = torch.get_rng_state()
    a = gen.inference(batch, ctx, max_sample_length=5, generator=torch.Generator().manual_seed(0))
    b = gen.inference(batch, ctx, max_sample_length=5, generator=torch.Generator().manual_seed(0))
    c = gen.inference(batch, ctx, max_sample_length=5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(torch.get_rng_state(), state)  # a seeded generator leaves the global RNG alone
    assert torch.equal(a["polylines"], b["polylines"]) and torch.equal(
        a["polyline_masks"], b["polyline_masks"]
    )
    assert not torch.equal(a["polylines"], c["polylines"])
    assert a["polylines"].shape == (3, 11)
    y = a["polylines"][:, 1::2]
    assert ((y == 0) | ((y >= 1) & (y <= 100))).all()


def _reference_sampler(gen: PolylineGenerator, batch: dict, ctx: dict, steps: int, seed: int) -> torch.Tensor:
    """Full causal-masked recomputation each step, history kept: what the cached sampler
    with ``resample_history=False`` must reproduce draw for draw."""
    g = torch.Generator().manual_seed(seed)
    cond, memory = gen._prepare_context(batch, ctx)
    n = cond.shape[0]
    decoded = torch.zeros(n, 2 * steps + 1, dtype=torch.long)
    samples, remain = torch.zeros(n, 0, dtype=torch.long), torch.arange(n)
    for i in range(2 * steps + 1):
        x = torch.cat([cond, gen._embed_inputs(samples)], 1).transpose(0, 1)
        out, _ = gen.decoder(x, memory, tgt_mask=causal_mask(x.shape[0]))
        logits = top_p_logits(top_k_logits(gen._logits(out), 0), 0.9)
        drawn = sample_logits(logits, g)
        samples = torch.cat([samples, drawn[:, -1:]], 1)
        decoded[remain, i] = drawn[:, -1]
        if not (decoded[:, : i + 1] != 0).all(1).any():
            break
        keep = drawn[:, -1] != 0
        remain, samples, cond, memory = remain[keep], samples[keep], cond[keep], memory[:, keep]
    return decoded[:, : i + 1]


def test_cached_sampler_equals_full_recomputation() -> None:
    gen = _trained_gen().eval()
    batch, ctx = _gen_batch()
    ref = _reference_sampler(gen, batch, ctx, steps=4, seed=3)
    out = gen.inference(
        batch, ctx, max_sample_length=4, generator=torch.Generator().manual_seed(3), resample_history=False
    )
    masks = out["polyline_masks"]
    assert masks.shape[1] == ref.shape[1]
    assert torch.equal(out["polylines"][:, : ref.shape[1]] * masks, ref * masks)
    # The published re-sampling of the history changes what later steps see.
    quirk = gen.inference(batch, ctx, max_sample_length=4, generator=torch.Generator().manual_seed(3))
    assert quirk["polylines"][:, 0].tolist() == out["polylines"][:, 0].tolist()  # the first draw agrees


def test_head_post_process_by_hand() -> None:
    head = DGHead.__new__(DGHead)
    torch.nn.Module.__init__(head)
    head.gen_net = PolylineGenerator(
        in_channels=8,
        decoder_config=dict(
            layer_config=dict(d_model=8, nhead=2, dim_feedforward=16, dropout=0.0), num_layers=1
        ),
    )
    outs = {
        "det": {
            "lines_bs_idx": torch.tensor([0, 0, 1]),
            "scores": torch.tensor([0.9, 0.5, 0.7]),
            "labels": torch.tensor([2, 0, 1]),
        },
        "gen": {
            "polylines": torch.tensor([[3, 5, 7, 9, 0], [200, 100, 0, 0, 0], [1, 1, 5, 5, 9]]),
            "polyline_masks": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]).bool(),
        },
    }
    res = head.post_process(outs, ["a", "b"])
    assert [r["token"] for r in res] == ["a", "b"] and [r["nline"] for r in res] == [2, 1]
    np.testing.assert_allclose(res[0]["vectors"][0], [[2 / 199, 4 / 99], [6 / 199, 8 / 99]], rtol=1e-6)
    np.testing.assert_allclose(res[0]["vectors"][1], [[1.0, 1.0]])
    np.testing.assert_allclose(res[1]["vectors"][0], [[0.0, 0.0], [4 / 199, 4 / 99]], rtol=1e-6)  # unfinished
    assert res[0]["labels"].tolist() == [2, 0] and res[1]["scores"].tolist() == pytest.approx([0.7])


# ----------------------------------------------------------------------------- tiny model on AV2 frames

IMG_HW = (48, 85)  # resized cameras (the published 256 x 455 scaled down); padded to 64 x 96


@pytest.fixture(scope="module")
def av2_batch(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("av2")
    ds = make_av2_dataset(root, segments=1, frames_per_segment=2, image_size=(64, 48), splits=("train",))
    h, w = IMG_HW
    imgs, samples = [], []
    for frame in iter_frames(load_annotations(ds["train_ann"])):
        s = frame_to_sample(frame, root)
        views, ego2img = [], []
        for path, mat in zip(s["img_filenames"], s["ego2img"], strict=True):
            im = cv2.imread(path)
            views.append(cv2.resize(im, (w, h)))
            ego2img.append(np.diag([w / im.shape[1], h / im.shape[0], 1, 1]) @ mat)
        meta = dict(token=s["token"], ego2img=ego2img, img_shape=[(h, w, 3)] * 7, ego2img_pad_scaled=False)
        sample = BaseDataElement(metainfo=dict(token=s["token"], img_metas=[meta]))
        sample.polys = polygonize_local_map_bbox(vectorize_map(s["map_geoms"]))
        imgs.append(torch.from_numpy(np.stack(views)).permute(0, 3, 1, 2)[None])  # (1, 7, 3, h, w) uint8
        samples.append(sample)
    return {"inputs": {"img": imgs}, "data_samples": samples}


def _copy(batch: dict) -> dict:
    return {
        "inputs": {"img": list(batch["inputs"]["img"])},
        "data_samples": copy.deepcopy(batch["data_samples"]),
    }


def test_tiny_model_trains_and_predicts(av2_batch) -> None:
    torch.manual_seed(0)
    model = MODELS.build(model_cfg(tiny=True))
    model.init_weights()  # keeps the constructor inits (no pretrained backbone in the tiny config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    model.train()
    totals = []
    for _ in range(4):
        data = model.data_preprocessor(_copy(av2_batch), True)
        losses = model(**data, mode="loss")
        loss = sum(losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        totals.append(loss.item())
    assert set(losses) == {"det_cls", "det_reg", "det_d0.cls", "det_d0.reg", "gen_seq"}
    assert all(math.isfinite(t) for t in totals) and totals[-1] < totals[0], totals
    grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any(n.startswith("backbone.img_backbone.") for n in grads)
    assert any(n.startswith("head.gen_net.decoder.") for n in grads)
    assert "backbone.masked_embeds.weight" not in grads  # unused, as published

    model.eval()
    model.set_sampling_seed(0)
    out = model(**model.data_preprocessor(_copy(av2_batch), False), mode="predict")
    model.set_sampling_seed(0)
    again = model(**model.data_preprocessor(_copy(av2_batch), False), mode="predict")
    results = {}
    for sample, other in zip(out, again, strict=True):
        pred = vm.prediction_of(sample)
        assert len(pred["vectors"]) == len(pred["scores"]) == len(pred["labels"]) == 5  # max_lines
        for v in pred["vectors"]:
            assert v.ndim == 2 and v.shape[1] == 2 and (v >= 0).all() and (v <= 1).all()
        assert all(np.array_equal(a, b) for a, b in zip(pred["vectors"], other.pred_vectors, strict=True))
        results[pred["token"]] = format_sample(pred["vectors"], pred["scores"], pred["labels"])
    validate_submission({"meta": {}, "results": results})
    assert list(results) == [s.metainfo["token"] for s in av2_batch["data_samples"]]

    feats = model(**model.data_preprocessor(_copy(av2_batch), False), mode="tensor")
    assert feats["raw_bev_embeddings"].shape == (2, 32, 25, 50) and feats["bev_embeddings"].shape == (
        2,
        32,
        7,
        13,
    )
    assert len(feats["det_outputs"]) == 2 and feats["det_outputs"][-1]["lines"].shape == (2, 8, 4)


def test_frames_without_lines_reuse_the_last_batch(av2_batch) -> None:
    torch.manual_seed(0)
    model = MODELS.build(model_cfg(tiny=True)).train()
    empty = _copy(av2_batch)
    for s in empty["data_samples"]:
        s.polys = []
    first = model(**model.data_preprocessor(_copy(empty), True), mode="loss")
    assert all(v.item() == 0 for v in first.values())  # nothing seen yet: zero losses
    sum(first.values()).backward()
    model(**model.data_preprocessor(_copy(av2_batch), True), mode="loss")
    mixed = _copy(av2_batch)
    mixed["data_samples"][0].polys = []
    kept = model._valid_batch(torch.zeros(2, 7, 3, 64, 96), mixed["data_samples"])
    assert kept[0].shape[0] == 1 and kept[1][0]["token"] == mixed["data_samples"][1].metainfo["token"]
    reused = model._valid_batch(torch.zeros(2, 7, 3, 64, 96), empty["data_samples"])
    assert reused[0].shape[0] == 1 and len(reused[2]) == 1  # the last batch that had lines
    losses = model(**model.data_preprocessor(_copy(empty), True), mode="loss")
    assert losses["gen_seq"].item() > 0


def test_pad_quirk_on_ego2img() -> None:
    mats = [np.arange(16, dtype=np.float64).reshape(4, 4) + k for k in range(2)]
    meta = {"ego2img": mats, "img_shape": [(48, 85, 3)] * 2}
    out = vm.padded_ego2img(meta, (64, 96))
    np.testing.assert_allclose(out[:, 0], np.stack(mats)[:, 0] * 96 / 85)
    np.testing.assert_allclose(out[:, 1], np.stack(mats)[:, 1] * 64 / 48)
    np.testing.assert_allclose(out[:, 2:], np.stack(mats)[:, 2:])
    np.testing.assert_allclose(
        vm.padded_ego2img({**meta, "ego2img_pad_scaled": True}, (64, 96)), np.stack(mats)
    )
    with pytest.raises(ValueError, match="exceeds the image tensor"):
        vm.padded_ego2img(meta, (32, 96))
    with pytest.raises(KeyError, match="img_shape"):
        vm.padded_ego2img({"ego2img": mats}, (64, 96))


def test_build_targets_layout() -> None:
    vectors = {0: [np.array([[0.1, 0.2], [0.3, 0.2], [0.3, 0.4]])], 2: [np.array([[0.5, 0.5], [0.9, 0.6]])]}
    polys = polygonize_local_map_bbox(vectors)
    t = build_targets([polys, polys])
    assert t["gen"]["polylines"].shape == (4, 7) and t["gen"]["lines_bs_idx"].tolist() == [0, 0, 1, 1]
    assert t["gen"]["lines_cls"].tolist() == [0, 2, 0, 2]
    assert t["gen"]["polyline_masks"][1].tolist() == [True] * 5 + [False] * 2
    assert t["det"][1]["bbox"].shape == (2, 4) and t["det"][0]["class_label"].tolist() == [0, 2]
    with pytest.raises(ValueError, match="no lines"):
        build_targets([])
    with pytest.raises(KeyError, match="missing"):
        build_targets([{"keypoint": []}])


def test_errors_are_clear(av2_batch) -> None:
    model = MODELS.build(model_cfg(tiny=True))
    data = model.data_preprocessor(_copy(av2_batch), False)
    with pytest.raises(ValueError, match="mode must be"):
        model(**data, mode="train")
    with pytest.raises(TypeError, match="seed"):
        model.set_sampling_seed("0")
    with pytest.raises(ValueError, match="num_cam=7"):
        model.backbone(torch.zeros(1, 6, 3, 64, 96), [{"ego2img": np.eye(4)[None].repeat(6, 0)}])
    with pytest.raises(ValueError, match="one frame per sample"):
        model._images(torch.zeros(1, 2, 7, 3, 64, 96))
    no_polys = _copy(av2_batch)
    for s in no_polys["data_samples"]:
        del s.polys
    with pytest.raises(KeyError, match="polys"):
        model(**model.data_preprocessor(no_polys, True), mode="loss")
    gen = model.head.gen_net.train()
    with pytest.raises(RuntimeError, match="eval"):
        gen.inference(*_gen_batch(c=32))
    bad = _gen_batch(c=32)[0]
    bad["bbox_flat"] = bad["bbox_flat"] + 300
    with pytest.raises(ValueError, match="bbox_flat"):
        gen(bad, _gen_batch(c=32)[1])
    for key, value in (("iterative", True), ("separate_detect", True), ("mode", "cxcywh")):
        with pytest.raises(ValueError, match=key):
            MapElementDetector(
                **{**{k: v for k, v in det_cfg(32, 16, 8, 1, 4, 3).items() if k != "type"}, key: value}
            )
    with pytest.raises(ValueError, match="encoder"):
        PolylineGenerator(encoder_config=dict(num_layers=2))
    with pytest.raises(ValueError, match="joint_training"):
        DGHead(det_cfg(), gen_cfg(), joint_training=True)
    with pytest.raises(ValueError, match="only_det"):
        MODELS.build({**model_cfg(tiny=True), "only_det": True})
    assigner = HungarianLinesAssigner(cost=det_cfg()["train_cfg"]["assigner"]["cost"])
    with pytest.raises(ValueError, match="NaN"):
        assigner.assign(
            {"lines": torch.full((2, 4), float("nan")), "scores": torch.zeros(2, 3)},
            {"lines": torch.ones(1, 4), "labels": torch.zeros(1, dtype=torch.long)},
        )


def test_train_and_test_step_through_the_map_pipeline(tmp_path) -> None:
    """The dataset / transforms / metric side of the contract (``online_hdmap.transforms``,
    ``dataset``, ``metric``) end to end with mmengine's ``train_step`` / ``test_step``."""
    from mmengine.dataset import pseudo_collate
    from mmengine.optim import OptimWrapper

    import autonomous_driving.online_hdmap.registration  # noqa: F401  (dataset, transforms, metric)
    from autonomous_driving.online_hdmap.metric import sample_prediction

    ds = make_av2_dataset(tmp_path, segments=1, frames_per_segment=2, image_size=(64, 48), splits=("train",))
    steps = [
        dict(type="VectorizeMap", coords_dim=2, roi_size=(60, 30), simplify=True, normalize=True),
        dict(
            type="PolygonizeLocalMapBbox", canvas_size=(200, 100), coord_dim=2, num_class=3, threshold=4 / 200
        ),
        dict(type="LoadMultiViewImageFromFiles", color_type="unchanged"),
        dict(type="ResizeMultiViewImages", size=IMG_HW),
        dict(type="PadMultiViewImages", size_divisor=32, change_intrinsics=True),
        dict(type="PackMapInputs", keys=["img", "polys", "vectors"], meta_keys=["token", "ego2img"]),
    ]
    dataset = DATASETS.build(
        dict(type="AV2Dataset", ann_file=ds["train_ann"], root_path=ds["root"], pipeline=steps)
    )
    torch.manual_seed(0)
    model = MODELS.build(model_cfg(tiny=True))
    wrapper = OptimWrapper(torch.optim.AdamW(model.parameters(), lr=1e-3))
    batch = pseudo_collate([dataset[0], dataset[1]])
    assert batch["data_samples"][0].metainfo["img_metas"][0]["ego2img_pad_scaled"] is True
    model.train()
    logs = [model.train_step(copy.deepcopy(batch), wrapper) for _ in range(3)]
    total = [float(log["loss"]) for log in logs]
    parts = sum(float(v) for k, v in logs[0].items() if k != "loss")
    assert total[0] == pytest.approx(parts, rel=1e-5)  # every entry counts, as published
    assert total[-1] < total[0], total
    model.eval()
    model.set_sampling_seed(0)
    out = model.test_step(copy.deepcopy(batch))
    preds = [sample_prediction(s.to_dict()) for s in out]
    assert [p["token"] for p in preds] == ds["tokens"]["train"]
    assert all(len(p["vectors"]) == 5 for p in preds)


def test_ipm_encoder_channel_layout() -> None:
    """``(B, C + 3, L, Y, X)`` flattens to channel ``c * L + level``: the x, y, z planes are
    input channels ``C * L + level``, ``(C + 1) * L + level``, ``(C + 2) * L + level`` of
    ``outconvs`` (§1.3 step 5), here read back through centre taps."""
    torch.manual_seed(0)
    enc = MODELS.build(model_cfg(tiny=True)["backbone_cfg"]).eval()
    c, levels = 32, 4
    with torch.no_grad():
        enc.outconvs.weight.zero_()
        enc.outconvs.bias.zero_()
        enc.outconvs.weight[0, c * levels + 0, 1, 1] = 1  # x at level 0
        enc.outconvs.weight[1, (c + 1) * levels + 3, 1, 1] = 1  # y at level 3
        enc.outconvs.weight[2, (c + 2) * levels + 2, 1, 1] = 1  # z at level 2 (0.5 m)
        metas = [{"ego2img": np.stack([np.eye(4)] * 7)}]
        out = enc(torch.randn(1, 7, 3, 64, 96), metas)
    assert out.shape == (1, 32, 25, 50)
    torch.testing.assert_close(out[0, 0], enc.bev_planes[0, ..., 0])
    torch.testing.assert_close(out[0, 1], enc.bev_planes[3, ..., 1])
    torch.testing.assert_close(out[0, 2], torch.full((25, 50), 0.5))
    assert enc.bev_planes[0, 0, 0].tolist() == pytest.approx([-30.0, -15.0, -1.1])
