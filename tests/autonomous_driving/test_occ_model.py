"""BEVFormer-Occ model classes (driving_occupancy_params.md §0, §1, §3, §4): the published
state_dict from the published model section, the published initialisation, output layout,
the loss, the temporal path (history BEV, resets, test-time state, CAN-bus delta), the
shift / rotation of the previous BEV, gradients into the backbone and input errors."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmengine.structures import BaseDataElement
from synthetic_occ import SHARED_DATA

import autonomous_driving.bev_common.backbone  # noqa: F401  (registers InternImage)
import autonomous_driving.bev_common.data_preprocessor  # noqa: F401
import autonomous_driving.bev_common.encoder  # noqa: F401
from autonomous_driving.bev_common.attention import SpatialCrossAttention, TemporalSelfAttention
from autonomous_driving.occupancy_prediction.bevformer_occ import detector as occ_detector  # noqa: F401
from autonomous_driving.occupancy_prediction.bevformer_occ.head import BEVFormerOccHead
from autonomous_driving.occupancy_prediction.bevformer_occ.transformer import TransformerOcc

KEYS_FILE = SHARED_DATA / "bevformer_intern-s_occ_keys.txt"
PUBLISHED_PARAMS = 64_818_930


def model_cfg(
    *,
    dim=256,
    ffn=512,
    bev_h=200,
    bev_w=200,
    pillar_h=16,
    num_layers=4,
    pillar_points=8,
    sca_points=8,
    tsa_points=4,
    num_cams=6,
    pc_range=(-40.0, -40.0, -1.0, 40.0, 40.0, 5.4),
    backbone=None,
    neck_in=(160, 320, 640),
    use_mask=False,
    rotate_center=(100, 100),
) -> dict:
    """The published config's model section (driving_occupancy.md §1.2, params §1–§9);
    the defaults are the published values, the tests shrink sizes only."""
    pc_range = list(pc_range)
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
            with_cp=True,
            out_indices=(1, 2, 3),
            init_cfg=None,
        )  # published: Pretrained Mask R-CNN checkpoint (no download here)
    layer = dict(
        type="BEVFormerLayer",
        attn_cfgs=[
            dict(type="TemporalSelfAttention", embed_dims=dim, num_levels=1, num_points=tsa_points),
            dict(
                type="SpatialCrossAttention",
                pc_range=pc_range,
                num_cams=num_cams,
                embed_dims=dim,
                deformable_attention=dict(
                    type="MSDeformableAttention3D", embed_dims=dim, num_points=sca_points, num_levels=4
                ),
            ),
        ],
        feedforward_channels=ffn,
        ffn_dropout=0.1,
        operation_order=("self_attn", "norm", "cross_attn", "norm", "ffn", "norm"),
    )
    if dim != 256:  # the published FFN default hard-codes embed_dims=256 (kept quirk)
        layer["ffn_cfgs"] = dict(
            type="FFN",
            embed_dims=dim,
            feedforward_channels=ffn,
            num_fcs=2,
            ffn_drop=0.1,
            act_cfg=dict(type="ReLU", inplace=True),
        )
    return dict(
        type="BEVFormerOcc",
        use_grid_mask=True,
        video_test_mode=True,
        data_preprocessor=dict(
            type="MultiViewDataPreprocessor",
            mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375],
            bgr_to_rgb=True,
            pad_size_divisor=32,
        ),
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
        pts_bbox_head=dict(
            type="BEVFormerOccHead",
            bev_h=bev_h,
            bev_w=bev_w,
            num_query=900,
            num_classes=18,
            in_channels=dim,
            sync_cls_avg_factor=True,
            with_box_refine=True,
            as_two_stage=False,
            use_mask=use_mask,
            pc_range=pc_range,
            loss_occ=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
            transformer=dict(
                type="TransformerOcc",
                pillar_h=pillar_h,
                num_classes=18,
                norm_cfg=dict(type="BN"),
                norm_cfg_3d=dict(type="BN3d"),
                use_3d=True,
                use_conv=False,
                rotate_prev_bev=True,
                use_shift=True,
                use_can_bus=True,
                embed_dims=dim,
                num_cams=num_cams,
                rotate_center=list(rotate_center),
                encoder=dict(
                    type="BEVFormerEncoder",
                    num_layers=num_layers,
                    pc_range=pc_range,
                    num_points_in_pillar=pillar_points,
                    return_intermediate=False,
                    transformerlayers=layer,
                ),
            ),
            positional_encoding=dict(
                type="LearnedPositionalEncoding", num_feats=dim // 2, row_num_embed=bev_h, col_num_embed=bev_w
            ),
        ),
    )


# Small sizes: 2 cameras, 64x64 images, BEV 4 rows x 6 columns (non-square, so X/Y order
# shows), 4 heights, 32 channels.
BEV_H, BEV_W, PILLAR_H, DIM = 4, 6, 4, 32
IMG = 64
PC_RANGE = (-6.0, -4.0, -1.0, 6.0, 4.0, 3.0)


def small_cfg(**kw) -> dict:
    backbone = dict(
        type="InternImage",
        core_op="DCNv3",
        channels=16,
        depths=[1, 1, 1, 1],
        groups=[1, 2, 4, 8],
        mlp_ratio=2.0,
        drop_path_rate=0.0,
        norm_layer="LN",
        layer_scale=1.0,
        offset_scale=1.0,
        post_norm=True,
        with_cp=False,
        out_indices=(1, 2, 3),
        init_cfg=None,
    )
    args = dict(
        dim=DIM,
        ffn=64,
        bev_h=BEV_H,
        bev_w=BEV_W,
        pillar_h=PILLAR_H,
        num_layers=1,
        pillar_points=4,
        sca_points=4,
        tsa_points=2,
        num_cams=2,
        pc_range=PC_RANGE,
        backbone=backbone,
        neck_in=(32, 64, 128),
        rotate_center=(BEV_W / 2, BEV_H / 2),
    )
    args.update(kw)
    return model_cfg(**args)


def build_small(**kw):
    torch.manual_seed(0)
    model = MODELS.build(small_cfg(**kw))
    model.init_weights()
    return model


def _lidar2img(yaw_deg: float) -> np.ndarray:
    """A camera at the ego origin, 1 m up, looking along yaw (x forward, y left, z up);
    ego2lidar is the identity in these tests."""
    yaw = math.radians(yaw_deg)
    forward = np.array([math.cos(yaw), math.sin(yaw), 0.0])
    right = np.array([math.sin(yaw), -math.cos(yaw), 0.0])
    down = np.array([0.0, 0.0, -1.0])
    rot = np.stack([right, down, forward])  # rows: camera x, y, z in ego coordinates
    ego2cam = np.eye(4)
    ego2cam[:3, :3] = rot
    ego2cam[:3, 3] = -rot @ np.array([0.0, 0.0, 1.0])
    k = np.eye(4)
    k[0, 0] = k[1, 1] = IMG / 2
    k[0, 2] = k[1, 2] = IMG / 2
    return k @ ego2cam


def frame_meta(*, scene="s0", prev=True, can_bus=None, token="t0") -> dict:
    if can_bus is None:
        can_bus = np.zeros(18)
    return dict(
        lidar2img=[_lidar2img(0.0), _lidar2img(180.0)],
        ego2lidar=np.eye(4),
        img_shape=[(IMG, IMG, 3)] * 2,
        pad_shape=[(IMG, IMG, 3)] * 2,
        can_bus=np.asarray(can_bus, float),
        prev_bev_exists=prev,
        scene_token=scene,
        sample_idx=token,
        frame_idx=0,
        timestamp=0,
    )


def sample(metas: list[dict], *, seed=0) -> BaseDataElement:
    g = torch.Generator().manual_seed(seed)
    ds = BaseDataElement(metainfo=dict(img_metas=metas))
    ds.voxel_semantics = torch.randint(0, 18, (BEV_W, BEV_H, PILLAR_H), generator=g, dtype=torch.uint8)
    ds.mask_lidar = torch.randint(0, 2, (BEV_W, BEV_H, PILLAR_H), generator=g, dtype=torch.uint8)
    ds.mask_camera = torch.randint(0, 2, (BEV_W, BEV_H, PILLAR_H), generator=g, dtype=torch.uint8)
    return ds


def images(bs: int, q: int, seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"img": torch.randn(bs, q, 2, 3, IMG, IMG, generator=g)}


def moving_can_bus(step: float, yaw_deg: float) -> np.ndarray:
    can_bus = np.zeros(18)
    can_bus[0], can_bus[1] = step, 0.3 * step
    can_bus[-2] = math.radians(yaw_deg)
    can_bus[-1] = yaw_deg
    return can_bus


def queue_metas(flags=(False, True, True), scene="s0") -> list[dict]:
    return [
        frame_meta(scene=scene, prev=flag, can_bus=moving_can_bus(0.5 * i, 3.0 * i))
        for i, flag in enumerate(flags)
    ]


class HeadCalls:
    """Records every head call: grad mode, train mode, whether a history BEV came in."""

    def __init__(self, model):
        self.calls = []
        self.model = model
        self.handle = model.pts_bbox_head.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        prev_bev = args[2] if len(args) > 2 else kwargs.get("prev_bev")
        self.calls.append(
            dict(
                grad=torch.is_grad_enabled(),
                training=self.model.training,
                prev=None if prev_bev is None else prev_bev.detach().clone(),
                only_bev=kwargs.get("only_bev", False),
                metas=copy.deepcopy(args[1]),
            )
        )

    def close(self):
        self.handle.remove()


# -- published structure ------------------------------------------------------------------------


def _published_keys() -> list[tuple[str, tuple[int, ...]]]:
    assert KEYS_FILE.is_file(), f"{KEYS_FILE} not found: ../shared/data must sit beside the repo"
    rows = []
    for line in KEYS_FILE.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape = line.rsplit(" (", 1)
        rows.append((key, tuple(int(v) for v in shape.rstrip(")").replace(",", " ").split())))
    return rows


def test_published_model_state_dict_matches_published_keys():
    with torch.device("meta"):
        model = MODELS.build(model_cfg())
    ours = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert ours == _published_keys()  # same keys, same shapes, same order
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED_PARAMS
    head = model.pts_bbox_head
    children = [name for name, _ in model.named_children()]
    assert children == ["data_preprocessor", "pts_bbox_head", "img_backbone", "img_neck", "grid_mask"]
    assert head.grid_length == pytest.approx((0.4, 0.4))
    gm = model.grid_mask
    assert (gm.use_h, gm.use_w, gm.rotate, gm.offset, gm.ratio, gm.mode, gm.prob) == (
        True,
        True,
        1,
        False,
        0.5,
        1,
        0.7,
    )


def test_init_as_published():
    model = build_small()
    head, tr = model.pts_bbox_head, model.pts_bbox_head.transformer
    # bev_embedding and the positional encoding keep N(0, 1): the head's init_weights only
    # initialises the transformer (mmdet's Uniform(0, 1) would have no negatives).
    for w in (
        head.bev_embedding.weight,
        head.positional_encoding.row_embed.weight,
        head.positional_encoding.col_embed.weight,
        tr.level_embeds,
        tr.cams_embeds,
    ):
        assert w.min() < -0.5 and 0.6 < w.std() < 1.4

    # Every >1-D parameter of the transformer was drawn xavier-uniform ...
    def xavier_bound(w):
        fan_in, fan_out = w.shape[1] * w[0][0].numel(), w.shape[0] * w[0][0].numel()
        return math.sqrt(6.0 / (fan_in + fan_out))

    for w in (
        tr.decoder[0].conv.weight,
        tr.predicter[0].weight,
        tr.can_bus_mlp[0].weight,
        tr.encoder.layers[0].ffns[0].layers[0][0].weight,
    ):
        bound = xavier_bound(w)
        assert w.abs().max() <= bound + 1e-6 and w.abs().max() > 0.8 * bound
    # ... then the deformable attentions re-initialised themselves (zero offset weights,
    # grid-pattern bias); SCA is not re-initialised: xavier output_proj with a zero bias.
    tsa = tr.encoder.layers[0].attentions[0]
    sca = tr.encoder.layers[0].attentions[1]
    assert isinstance(tsa, TemporalSelfAttention) and isinstance(sca, SpatialCrossAttention)
    assert torch.all(tsa.sampling_offsets.weight == 0) and torch.all(tsa.attention_weights.weight == 0)
    assert torch.allclose(tsa.sampling_offsets.bias[:4], torch.tensor([1.0, 0.0, 2.0, 0.0]))
    assert torch.all(sca.deformable_attention.sampling_offsets.weight == 0)
    assert torch.all(sca.output_proj.bias == 0)
    assert sca.output_proj.weight.abs().max() <= xavier_bound(sca.output_proj.weight) + 1e-6
    # The published xavier_init(can_bus_mlp) is a no-op: its biases keep the Linear default.
    for lin in (tr.can_bus_mlp[0], tr.can_bus_mlp[2]):
        bound = 1 / math.sqrt(lin.in_features)
        assert lin.bias.abs().max() <= bound and lin.bias.abs().max() > 0.3 * bound
    assert torch.all(tr.can_bus_mlp.norm.weight == 1) and torch.all(tr.can_bus_mlp.norm.bias == 0)
    assert torch.all(tr.decoder[0].bn.weight == 1) and torch.all(tr.decoder[0].bn.bias == 0)
    assert tr.decoder[0].conv.bias is None
    assert torch.all(model.img_neck.lateral_convs[0].conv.bias == 0)  # FPN: Xavier init_cfg, bias 0


# -- outputs and loss ---------------------------------------------------------------------------


def test_output_layout_and_predict():
    model = build_small().eval()
    ds = [sample([frame_meta(prev=False)])]
    with torch.no_grad():
        outs = model(images(1, 1), ds, mode="tensor")
    assert outs["occ"].shape == (1, BEV_W, BEV_H, PILLAR_H, 18)  # (bs, X=W, Y=H, Z, classes)
    assert outs["bev_embed"].shape == (1, DIM, BEV_H, BEV_W)
    model.reset_test_state()
    with torch.no_grad():
        pred = model(images(1, 1), ds, mode="predict")
    assert pred[0] is ds[0] and "voxel_semantics" in pred[0]  # ground truth kept
    assert pred[0].pred_occ.dtype == torch.uint8 and pred[0].pred_occ.shape == (BEV_W, BEV_H, PILLAR_H)
    # No history on the first frame: predict == argmax of the tensor-mode logits.
    assert torch.equal(pred[0].pred_occ.long(), outs["occ"][0].argmax(-1))


def test_extract_img_feat_layouts():
    model = build_small().eval()
    with torch.no_grad():
        one_cam = model.extract_img_feat(torch.randn(1, 1, 3, IMG, IMG))  # published squeeze_ broke here
        queue = model.extract_img_feat(torch.randn(2 * 3, 2, 3, IMG, IMG), len_queue=3)
    assert [tuple(f.shape) for f in one_cam] == [(1, 1, DIM, s, s) for s in (8, 4, 2, 1)]
    assert [tuple(f.shape) for f in queue] == [(2, 3, 2, DIM, s, s) for s in (8, 4, 2, 1)]


@pytest.mark.parametrize("use_mask", [False, True])
def test_loss_against_hand_computation(use_mask):
    head = build_small(use_mask=use_mask).pts_bbox_head
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, BEV_W, BEV_H, PILLAR_H, 18, generator=g)
    labels = torch.randint(0, 18, (2, BEV_W, BEV_H, PILLAR_H), generator=g, dtype=torch.uint8)
    mask = torch.randint(0, 2, labels.shape, generator=g, dtype=torch.uint8)
    loss = head.loss(labels, mask, {"occ": logits})["loss_occ"]
    nll = -F.log_softmax(logits.double(), -1).gather(-1, labels.long()[..., None])[..., 0]
    expected = (nll * mask).sum() / mask.sum() if use_mask else nll.mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match=r"labels in \[0, 17\]"):
        head.loss(torch.full_like(labels, 18), mask, {"occ": logits})


def test_loss_mode_is_the_head_loss_of_the_training_path():
    model = build_small(use_mask=True).train()
    ds = [sample(queue_metas())]
    torch.manual_seed(3)
    np.random.seed(3)
    losses = model(images(1, 3), ds, mode="loss")
    torch.manual_seed(3)
    np.random.seed(3)
    outs = model(images(1, 3), ds, mode="tensor")
    vs = ds[0].voxel_semantics[None]
    expected = model.pts_bbox_head.loss(vs, ds[0].mask_camera[None], outs)["loss_occ"]
    assert set(losses) == {"loss_occ"}
    assert torch.allclose(losses["loss_occ"], expected)


# -- temporal path ------------------------------------------------------------------------------


def test_history_bev_no_grad_eval_mode_and_resets():
    model = build_small().train()
    calls = HeadCalls(model)
    model(images(1, 3), [sample(queue_metas((False, True, True)))], mode="loss")
    c = calls.calls
    assert [(x["grad"], x["training"], x["only_bev"]) for x in c] == [
        (False, False, True),
        (False, False, True),
        (True, True, False),
    ]
    assert c[0]["prev"] is None and c[1]["prev"] is not None and c[2]["prev"] is not None
    assert model.training
    # A frame whose prev_bev_exists is False drops the history, in the queue and at the end.
    calls.calls.clear()
    model(images(1, 3), [sample(queue_metas((False, False, False)))], mode="loss")
    assert [x["prev"] is None for x in calls.calls] == [True, True, True]
    # The current frame's metas (the last of the queue) go to the supervised call.
    assert calls.calls[-1]["metas"][0]["can_bus"][0] == pytest.approx(1.0)
    calls.close()


def test_history_decided_per_sample_in_a_batch():
    """Published: sample 0's prev_bev_exists decides for the batch. Here each sample keeps
    its own: a mixed batch gives what each sample gives alone."""
    model = build_small().eval()
    metas_a = queue_metas((False, True, True))
    metas_b = queue_metas((False, True, False))
    img = images(2, 3)["img"]
    with torch.no_grad():
        both = model({"img": img}, [sample(metas_a), sample(metas_b)], mode="tensor")
        alone = [
            model({"img": img[b : b + 1]}, [sample(m)], mode="tensor")
            for b, m in enumerate((metas_a, metas_b))
        ]
    for key in ("occ", "bev_embed"):
        assert torch.allclose(both[key], torch.cat([a[key] for a in alone]), atol=1e-5)


def test_test_time_state_scene_reset_and_can_bus_delta():
    model = build_small().eval()
    model.reset_test_state()
    calls = HeadCalls(model)
    bus = [moving_can_bus(0.0, 10.0), moving_can_bus(1.5, 25.0), moving_can_bus(4.0, 40.0)]
    bus[0][:3] = [100.0, 200.0, 0.0]  # absolute poses at test time
    bus[1][:3] = [101.5, 200.5, 0.0]
    bus[2][:3] = [50.0, 60.0, 0.0]
    frames = [
        frame_meta(scene="A", can_bus=bus[0], token="a0"),
        frame_meta(scene="A", can_bus=bus[1], token="a1"),
        frame_meta(scene="B", can_bus=bus[2], token="b0"),
    ]
    originals = copy.deepcopy(frames)
    bevs = []
    with torch.no_grad():
        for i, meta in enumerate(frames):
            model(images(1, 1, seed=i), [sample([meta])], mode="predict")
            bevs.append(model.prev_frame_info["prev_bev"].clone())
    c = calls.calls
    first, second, third = (x["metas"][0]["can_bus"] for x in c)
    assert c[0]["prev"] is None and c[2]["prev"] is None  # first frame, then a new scene
    assert torch.equal(c[1]["prev"], bevs[0])  # the previous frame's BEV (bs, C, Hb, Wb)
    np.testing.assert_allclose(first[:3], 0)
    assert first[-1] == 0 and first[-2] == pytest.approx(math.radians(10.0))
    np.testing.assert_allclose(second[:3], bus[1][:3] - bus[0][:3])  # delta to the previous frame
    assert second[-1] == pytest.approx(15.0) and second[-2] == pytest.approx(
        math.radians(25.0)
    )  # [-2] absolute
    np.testing.assert_allclose(third[:3], 0)
    assert third[-1] == 0
    assert model.prev_frame_info["scene_token"] == "B"
    for meta, orig in zip(frames, originals):  # the caller's metas are left as they were
        np.testing.assert_array_equal(meta["can_bus"], orig["can_bus"])
    # video_test_mode off: never a history
    model.video_test_mode = False
    calls.calls.clear()
    with torch.no_grad():
        for i, meta in enumerate(frames[:2]):
            model(images(1, 1, seed=i), [sample([meta])], mode="predict")
    assert all(x["prev"] is None for x in calls.calls)
    calls.close()


def test_prev_bev_rotation_and_shift_by_hand():
    tr = build_small().pts_bbox_head.transformer
    bev = torch.zeros(1, BEV_H * BEV_W, DIM)
    row, col = 1, 4
    bev[0, row * BEV_W + col] = 7.0
    meta = frame_meta(can_bus=moving_can_bus(0.0, 0.0))
    meta["can_bus"][-1] = 90.0  # delta yaw, degrees
    # By hand: pixel centre (col+0.5, row+0.5) relative to the centre (W/2, H/2) = (1.5, -0.5);
    # 90 degrees counter-clockwise as displayed (rows down): (x, y) -> (y, -x) = (-0.5, -1.5),
    # i.e. pixel centre (2.5, 0.5): column 2, row 0.
    captured = {}

    def grab(module, args, kwargs):
        captured.update(kwargs)
        raise StopIteration  # the encoder's inputs are all this test needs

    handle = tr.encoder.register_forward_pre_hook(grab, with_kwargs=True)
    feats = [torch.zeros(1, 2, DIM, s, s) for s in (8, 4, 2, 1)]
    bev_pos = torch.zeros(1, DIM, BEV_H, BEV_W)
    with pytest.raises(StopIteration):
        tr.get_bev_features(
            feats,
            torch.zeros(BEV_H * BEV_W, DIM),
            BEV_H,
            BEV_W,
            grid_length=(2.0, 2.0),
            bev_pos=bev_pos,
            img_metas=[meta],
            prev_bev=bev,
        )
    handle.remove()
    rotated = captured["prev_bev"]  # (nq, bs, C)
    grid = rotated[:, 0, 0].reshape(BEV_H, BEV_W)
    expected = torch.zeros(BEV_H, BEV_W)
    expected[0, 2] = 7.0
    assert torch.equal(grid, expected)
    # Shift: 1 m along global x, absolute yaw 90 degrees: bev_angle = 90 - 0, so
    # shift_x = L sin(90)/gl_x/W and shift_y = L cos(90)/gl_y/H ~ 0; (x, y) order.
    meta = frame_meta(can_bus=moving_can_bus(0.0, 0.0))
    meta["can_bus"][0], meta["can_bus"][-2] = 1.0, math.pi / 2
    shift = tr.compute_shift(
        [meta], (0.5, 0.25), BEV_H, BEV_W, dtype=torch.float64, device=torch.device("cpu")
    )
    assert shift.shape == (1, 2)
    assert shift[0, 0].item() == pytest.approx(1.0 / 0.25 / BEV_W)
    assert shift[0, 1].item() == pytest.approx(0.0, abs=1e-12)
    meta["can_bus"][1], meta["can_bus"][-2] = 1.0, math.radians(45.0)  # moving along the heading
    shift = tr.compute_shift(
        [meta], (0.5, 0.25), BEV_H, BEV_W, dtype=torch.float64, device=torch.device("cpu")
    )
    assert shift[0, 1].item() == pytest.approx(math.sqrt(2) / 0.5 / BEV_H)
    assert shift[0, 0].item() == pytest.approx(0.0, abs=1e-12)


def test_backward_reaches_the_backbone():
    model = build_small().train()
    loss = model(images(1, 2), [sample(queue_metas((False, True)))], mode="loss")["loss_occ"]
    loss.backward()
    stem = next(model.img_backbone.parameters())
    assert stem.grad is not None and stem.grad.abs().sum() > 0
    for p in (
        model.pts_bbox_head.bev_embedding.weight,
        model.pts_bbox_head.transformer.cams_embeds,
        model.pts_bbox_head.transformer.can_bus_mlp[0].weight,
        model.img_neck.fpn_convs[3].conv.weight,
    ):
        assert p.grad is not None and p.grad.abs().sum() > 0


# -- bad inputs ---------------------------------------------------------------------------------


def test_bad_inputs_get_clear_errors():
    model = build_small().eval()
    meta = frame_meta()
    del meta["can_bus"]
    with pytest.raises(KeyError, match="can_bus"):
        model(images(1, 1), [sample([meta])], mode="predict")
    with pytest.raises(KeyError, match="img_metas"):
        model(images(1, 1), [BaseDataElement()], mode="tensor")
    with pytest.raises(ValueError, match=r"\(B, Q, N, 3, H, W\)"):
        model({"img": torch.zeros(1, 2, 3, IMG, IMG)}, [sample([frame_meta()])], mode="tensor")
    with pytest.raises(ValueError, match="2 frame metas for an image queue of 1"):
        model(images(1, 1), [sample(queue_metas((False, True)))], mode="tensor")
    with pytest.raises(ValueError, match="Q = 1"):
        model(images(1, 2), [sample(queue_metas((False, True)))], mode="predict")
    with pytest.raises(ValueError, match="num_cams=2"):
        model({"img": torch.zeros(1, 1, 3, 3, IMG, IMG)}, [sample([frame_meta()])], mode="tensor")
    with pytest.raises(ValueError, match="mode must be"):
        model(images(1, 1), [sample([frame_meta()])], mode="bogus")
    meta = frame_meta()
    del meta["prev_bev_exists"]
    with pytest.raises(KeyError, match="prev_bev_exists"):
        model(images(1, 1), [sample([meta])], mode="tensor")
    bad = sample([frame_meta()])
    del bad.voxel_semantics
    with pytest.raises(KeyError, match="voxel_semantics"):
        model.train()(images(1, 1), [bad], mode="loss")


def test_bad_configs_get_clear_errors():
    cfg = small_cfg()
    cfg["pts_bbox_head"]["transformer"]["use_3d"] = False
    with pytest.raises(ValueError, match="use_3d"):
        MODELS.build(cfg)
    cfg = small_cfg()
    cfg["pts_bbox_head"]["not_an_option"] = 1
    with pytest.raises(TypeError, match="not_an_option"):
        MODELS.build(cfg)
    model = MODELS.build(small_cfg(rotate_center=(100, 100)))  # the published centre on a 6x4 grid
    with pytest.raises(ValueError, match="rotate_center"):
        model(images(1, 1), [sample([frame_meta()])], mode="tensor")
    assert issubclass(MODELS.get("BEVFormerOccHead"), BEVFormerOccHead)
    assert MODELS.get("TransformerOcc") is TransformerOcc


# -- mmengine integration -----------------------------------------------------------------------


def test_train_and_test_step_through_the_data_preprocessor():
    """Raw uint8 queues (images 60 high, padded to 64 by the preprocessor) through
    ``train_step`` (one SGD update) and ``test_step`` (pred_occ per sample)."""
    from mmengine.optim import OptimWrapper

    model = build_small().train()
    g = torch.Generator().manual_seed(0)

    def batch(q, flags, scene):
        metas = [
            frame_meta(scene=scene, prev=f, can_bus=moving_can_bus(0.5 * i, 2.0 * i))
            for i, f in enumerate(flags)
        ]
        for m in metas:
            m["img_shape"] = [(IMG - 4, IMG, 3)] * 2
            del m["pad_shape"]
        img = torch.randint(0, 256, (q, 2, 3, IMG - 4, IMG), generator=g, dtype=torch.uint8)
        return {"inputs": {"img": [img]}, "data_samples": [sample(metas)]}

    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    before = model.pts_bbox_head.bev_embedding.weight.detach().clone()
    log_vars = model.train_step(batch(2, (False, True), "s0"), optim)
    assert set(log_vars) == {"loss", "loss_occ"} and torch.isfinite(log_vars["loss"])
    assert not torch.equal(before, model.pts_bbox_head.bev_embedding.weight)
    model.eval()
    out = model.test_step(batch(1, (True,), "s1"))
    assert out[0].pred_occ.shape == (BEV_W, BEV_H, PILLAR_H) and out[0].pred_occ.dtype == torch.uint8
    assert out[0].metainfo["img_metas"][0]["pad_shape"] == [(IMG, IMG, 3)] * 2
    out = model.test_step(batch(1, (True,), "s1"))  # same scene: the second frame has a history
    assert model.prev_frame_info["prev_bev"].shape == (1, DIM, BEV_H, BEV_W)


def test_loss_under_autocast():
    """AmpOptimWrapper's autocast: the loss (fp32, as the published force_fp32) and backward run."""
    model = build_small().train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(images(1, 2), [sample(queue_metas((False, True)))], mode="loss")["loss_occ"]
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert next(model.img_backbone.parameters()).grad.abs().sum() > 0


def test_encoder_inputs_and_volume_layout_as_published():
    """What get_bev_features hands the encoder (§4 steps 1, 5, 6) and how the BEV channels
    become the (bs, X, Y, Z, classes) volume (§4 forward steps 3-4)."""
    tr = build_small().eval().pts_bbox_head.transformer
    captured = {}

    def grab(module, args, kwargs):
        captured.update(kwargs, args=args)
        raise StopIteration

    handle = tr.encoder.register_forward_pre_hook(grab, with_kwargs=True)
    sizes = ((8, 8), (4, 4), (2, 2), (1, 1))
    feats = [torch.randn(1, 2, DIM, h, w) for h, w in sizes]
    queries = torch.randn(BEV_H * BEV_W, DIM)
    bev_pos = torch.randn(1, DIM, BEV_H, BEV_W)
    meta = frame_meta(can_bus=moving_can_bus(0.7, 20.0))
    with pytest.raises(StopIteration):
        tr.get_bev_features(feats, queries, BEV_H, BEV_W, grid_length=(2.0, 2.0), bev_pos=bev_pos,
                            img_metas=[meta], prev_bev=None)
    handle.remove()
    query, key, value = captured["args"]
    with torch.no_grad():
        bus = tr.can_bus_mlp(torch.tensor(meta["can_bus"], dtype=torch.float32)[None])
    assert torch.allclose(query, (queries + bus)[:, None])  # (nq, bs, C) + CAN-bus MLP
    assert torch.equal(captured["bev_pos"], bev_pos.flatten(2).permute(2, 0, 1))
    expected = torch.cat([(f[0].flatten(2).transpose(1, 2) + tr.cams_embeds[:, None] + tr.level_embeds[lvl])
                          for lvl, f in enumerate(feats)], 1)[:, :, None]  # (N, Lv, bs, C)
    assert key is value and torch.allclose(value, expected)
    assert captured["spatial_shapes"].tolist() == [list(s) for s in sizes]
    assert captured["level_start_index"].tolist() == [0, 64, 80, 84]
    assert captured["prev_bev"] is None and captured["img_metas"] == [meta]
    # Layout: channel m*pillar_h + z of BEV cell (y, x) is feature m at height z of voxel (x, y, z).
    tr.decoder = torch.nn.Identity()
    tr.predicter = torch.nn.Identity()
    m, z, y, x = torch.meshgrid(torch.arange(DIM // PILLAR_H), torch.arange(PILLAR_H), torch.arange(BEV_H),
                                torch.arange(BEV_W), indexing="ij")
    code = (1000 * m + 100 * z + 10 * y + x).float().reshape(1, DIM, BEV_H, BEV_W)
    volume = tr.decode(code)
    assert volume.shape == (1, BEV_W, BEV_H, PILLAR_H, DIM // PILLAR_H)
    assert volume[0, 5, 2, 3, 1] == 1000 * 1 + 100 * 3 + 10 * 2 + 5
