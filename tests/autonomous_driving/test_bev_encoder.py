"""The shared BEVFormer encoder blocks (bev_common): published key names and shapes, the
published initialisation, the forward arithmetic against independent grid_sample
references (TSA, SCA / MSDeformableAttention3D), point_sampling on hand-built cameras, the
OpenLane-V2 options (double value projection, lidar2img alone, front-view image size),
the layer's operation order, the kept shift quirk, per-sample batches, the MSDA path with
and without the ops_dcnv3 kernel, config building under the registries, GridMask, the
InternImage registration and clear errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from autonomous_driving.bev_common.attention import (
    CustomMSDeformableAttention,
    MSDeformableAttention3D,
    SpatialCrossAttention,
    TemporalSelfAttention,
)
from autonomous_driving.bev_common.encoder import BEVFormerEncoder, BEVFormerLayer
from autonomous_driving.bev_common.grid_mask import GridMask

KEYS_FILE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "bevformer_intern-s_occ_keys.txt"
PC_RANGE = [-40.0, -40.0, -1.0, 40.0, 40.0, 5.4]
OPERATION_ORDER = ("self_attn", "norm", "cross_attn", "norm", "ffn", "norm")


def encoder_cfg(dims=256, heads=8, ffn=512, layers=4, cams=6, levels=4, points=8, pillar=8, ffn_cfgs=None):
    """The published encoder config (bevformer_intern-s_occ.py), sizes as arguments."""
    layer = dict(
        type="BEVFormerLayer",
        attn_cfgs=[
            dict(type="TemporalSelfAttention", embed_dims=dims, num_heads=heads, num_levels=1),
            dict(
                type="SpatialCrossAttention",
                pc_range=PC_RANGE,
                num_cams=cams,
                embed_dims=dims,
                deformable_attention=dict(
                    type="MSDeformableAttention3D",
                    embed_dims=dims,
                    num_heads=heads,
                    num_points=points,
                    num_levels=levels,
                ),
            ),
        ],
        feedforward_channels=ffn,
        ffn_dropout=0.1,
        operation_order=OPERATION_ORDER,
    )
    if ffn_cfgs is not None:
        layer["ffn_cfgs"] = ffn_cfgs
    return dict(
        type="BEVFormerEncoder",
        num_layers=layers,
        pc_range=PC_RANGE,
        num_points_in_pillar=pillar,
        return_intermediate=False,
        transformerlayers=layer,
    )


SMALL = dict(dims=32, heads=4, ffn=48, layers=2, cams=2, levels=2, points=4, pillar=4)


def small_encoder(**overrides) -> BEVFormerEncoder:
    from mmdet.registry import MODELS

    args = {**SMALL, **overrides}
    args.setdefault("ffn_cfgs", dict(type="FFN", embed_dims=args["dims"]))
    return MODELS.build(encoder_cfg(**args))


def randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Away from the init (zero offset weights and attention logits would hide errors)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=gen, dtype=param.dtype) * 0.3)
    return module


# --------------------------------------------------------------------------------------- cameras
K = np.array([[40.0, 0, 48, 0], [0, 40.0, 32, 0], [0, 0, 1, 0], [0, 0, 0, 1]])  # principal point = centre
IMAGE = (64, 96)  # (h, w)


def camera_looking_along(yaw_deg: float) -> np.ndarray:
    """lidar -> camera for a camera at the origin looking along yaw (x forward, z up): the
    camera's z is the viewing direction, x right, y down."""
    yaw = math.radians(yaw_deg)
    forward = np.array([math.cos(yaw), math.sin(yaw), 0.0])
    right = np.array([math.sin(yaw), -math.cos(yaw), 0.0])
    down = np.array([0.0, 0.0, -1.0])
    out = np.eye(4)
    out[:3, :3] = np.stack([right, down, forward])
    return out


def metas(bs: int = 1, cams: int = 2, ego2lidar=None, yaws=(0.0, 180.0)) -> list[dict]:
    lidar2img = [K @ camera_looking_along(y) for y in yaws[:cams]]
    return [
        dict(
            lidar2img=lidar2img,
            ego2lidar=np.eye(4) if ego2lidar is None else ego2lidar,
            img_shape=[(IMAGE[0] - 4, IMAGE[1], 3)] * cams,  # unpadded; the features cover pad_shape
            pad_shape=[(*IMAGE, 3)] * cams,
        )
        for _ in range(bs)
    ]


def encoder_inputs(bs=1, cams=2, dims=32, bev=(6, 5), levels=((8, 12), (4, 6)), dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    bev_h, bev_w = bev
    num_keys = sum(h * w for h, w in levels)
    spatial_shapes = torch.tensor(levels)
    level_start_index = torch.cat([torch.zeros(1, dtype=torch.long), spatial_shapes.prod(1).cumsum(0)[:-1]])
    return dict(
        bev_query=torch.randn(bev_h * bev_w, bs, dims, generator=gen, dtype=dtype),
        key=torch.randn(cams, num_keys, bs, dims, generator=gen, dtype=dtype),
        bev_h=bev_h,
        bev_w=bev_w,
        bev_pos=torch.randn(bev_h * bev_w, bs, dims, generator=gen, dtype=dtype),
        spatial_shapes=spatial_shapes,
        level_start_index=level_start_index,
    )


def run_encoder(encoder, inputs, prev_bev=None, shift=None, img_metas=None):
    bs = inputs["bev_query"].shape[1]
    return encoder(
        inputs["bev_query"],
        inputs["key"],
        inputs["key"],
        bev_h=inputs["bev_h"],
        bev_w=inputs["bev_w"],
        bev_pos=inputs["bev_pos"],
        spatial_shapes=inputs["spatial_shapes"],
        level_start_index=inputs["level_start_index"],
        prev_bev=prev_bev,
        shift=torch.zeros(bs, 2, dtype=inputs["bev_query"].dtype) if shift is None else shift,
        img_metas=metas(bs) if img_metas is None else img_metas,
    )


# ------------------------------------------------------------------------- independent references
def sample(value_map: torch.Tensor, locations: torch.Tensor) -> torch.Tensor:
    """value_map (heads, Ch, h, w), locations (heads, q, P, 2) in [0, 1] -> (heads, Ch, q, P)."""
    return F.grid_sample(
        value_map, 2 * locations - 1, mode="bilinear", padding_mode="zeros", align_corners=False
    )


def tsa_reference(m: TemporalSelfAttention, query, value, query_pos, ref_2d, bev_h, bev_w):
    """§7 per sample and queue slot; the offset input is the sample's own history."""
    bs, nq, dims = query.shape
    heads, points, head_dim = m.num_heads, m.num_points, dims // m.num_heads
    out = []
    for b in range(bs):
        inp = torch.cat([value[2 * b], query[b] + query_pos[b]], -1)
        offsets = m.sampling_offsets(inp).view(nq, heads, 2, 1, points, 2)
        weights = m.attention_weights(inp).view(nq, heads, 2, points).softmax(-1)
        acc = 0
        for slot in range(2):
            v = m.value_proj(value[2 * b + slot]).view(bev_h, bev_w, heads, head_dim).permute(2, 3, 0, 1)
            loc = ref_2d[2 * b + slot, :, 0][:, None, None, :] + offsets[:, :, slot, 0] / torch.tensor(
                [bev_w, bev_h], dtype=query.dtype
            )
            sampled = sample(v, loc.permute(1, 0, 2, 3))  # (heads, Ch, nq, P)
            acc = acc + (sampled * weights[:, :, slot].permute(1, 0, 2)[:, None]).sum(-1)
        acc = acc.permute(2, 0, 1).reshape(nq, dims) / 2
        out.append(m.output_proj(acc) + query[b])
    return torch.stack(out)


def sca_reference(m: SpatialCrossAttention, query, value, reference_points_cam, bev_mask, spatial_shapes):
    """§8/§9 per sample and camera, computed for every query and then kept where visible."""
    msda = m.deformable_attention
    bs, nq, dims = query.shape
    heads, levels, points, head_dim = msda.num_heads, msda.num_levels, msda.num_points, dims // msda.num_heads
    anchors = reference_points_cam.shape[3]
    visible = bev_mask.sum(-1) > 0
    out = []
    for b in range(bs):
        slots = torch.zeros(nq, dims, dtype=query.dtype)
        offsets = msda.sampling_offsets(query[b]).view(nq, heads, levels, points, 2)
        weights = msda.attention_weights(query[b]).view(nq, heads, levels * points).softmax(-1)
        weights = weights.view(nq, heads, levels, points)
        for cam in range(value.shape[0]):
            v = msda.value_proj(value[cam, :, b])
            start, acc = 0, 0
            for level, (h, w) in enumerate(spatial_shapes.tolist()):
                v_l = v[start : start + h * w].view(h, w, heads, head_dim).permute(2, 3, 0, 1)
                start += h * w
                anchor = reference_points_cam[cam, b][:, torch.arange(points) % anchors]  # (nq, P, 2)
                loc = anchor[:, None] + offsets[:, :, level] / torch.tensor([w, h], dtype=query.dtype)
                sampled = sample(v_l, loc.permute(1, 0, 2, 3).to(query.dtype))
                acc = acc + (sampled * weights[:, :, level].permute(1, 0, 2)[:, None]).sum(-1)
            acc = acc.permute(2, 0, 1).reshape(nq, dims)
            slots = slots + acc * visible[cam, b][:, None]
        count = visible[:, b].sum(0).clamp(min=1)
        out.append(m.output_proj(slots / count[:, None]) + query[b])
    return torch.stack(out)


# ----------------------------------------------------------------------------------- structure
def test_published_encoder_keys_and_shapes_match_the_checkpoint():
    from mmdet.registry import MODELS

    with torch.device("meta"):
        encoder = MODELS.build(encoder_cfg())
    prefix = "pts_bbox_head.transformer.encoder."
    ours = [f"{prefix}{k} ({', '.join(map(str, v.shape))})" for k, v in encoder.state_dict().items()]
    published = [line.strip() for line in KEYS_FILE.read_text().splitlines() if line.startswith(prefix)]
    assert len(published) == 104
    assert ours == published  # names, order and shapes
    layer = encoder.layers[0]
    assert isinstance(layer, BEVFormerLayer)
    assert [type(a) for a in layer.attentions] == [TemporalSelfAttention, SpatialCrossAttention]
    assert isinstance(layer.attentions[1].deformable_attention, MSDeformableAttention3D)
    assert layer.attentions[1].deformable_attention.output_proj is None
    assert layer.batch_first and not layer.pre_norm and layer.operation_order == OPERATION_ORDER
    ffn = layer.ffns[0]
    assert (ffn.layers[0][2].p, ffn.layers[2].p, ffn.add_identity) == (0.1, 0.1, True)
    assert isinstance(ffn.layers[0][1], torch.nn.ReLU) and layer.norms[0].eps == 1e-5


def test_published_initialisation_of_the_attentions():
    from mmdet.registry import MODELS

    encoder = MODELS.build(encoder_cfg(layers=1))  # real tensors: one published-size layer is small
    tsa, sca = encoder.layers[0].attentions
    msda = sca.deformable_attention

    def expected_grid(heads, slots, points):
        theta = 2 * np.pi * np.arange(heads) / heads
        direction = np.stack([np.cos(theta), np.sin(theta)], -1)
        direction /= np.abs(direction).max(-1, keepdims=True)
        grid = direction[:, None, None, :] * np.arange(1, points + 1)[None, None, :, None]
        return np.broadcast_to(grid, (heads, slots, points, 2))

    tsa_bias = tsa.sampling_offsets.bias.detach().view(8, 2, 4, 2)  # (head, queue slot x 1 level, point, xy)
    np.testing.assert_allclose(tsa_bias.numpy(), expected_grid(8, 2, 4), atol=1e-5)
    assert tsa_bias[0, 0].tolist() == [[1, 0], [2, 0], [3, 0], [4, 0]]
    assert torch.allclose(tsa_bias[1, 0], torch.tensor([[1.0, 1], [2, 2], [3, 3], [4, 4]]))
    msda_bias = msda.sampling_offsets.bias.detach().view(8, 4, 8, 2)
    np.testing.assert_allclose(msda_bias.numpy(), expected_grid(8, 4, 8), atol=1e-5)
    for module in (tsa, msda):
        assert not module.sampling_offsets.weight.any()
        assert not module.attention_weights.weight.any() and not module.attention_weights.bias.any()
        assert not module.value_proj.bias.any()
        bound = math.sqrt(6 / sum(module.value_proj.weight.shape))  # xavier uniform
        assert module.value_proj.weight.abs().max() <= bound and module.value_proj.weight.std() > bound / 3
    assert not tsa.output_proj.bias.any() and not sca.output_proj.bias.any()
    # TransformerOcc's init re-runs these; the result is the same pattern again
    with torch.no_grad():
        tsa.sampling_offsets.bias.zero_()
        tsa.attention_weights.weight.fill_(1)
    tsa.init_weights()
    np.testing.assert_allclose(
        tsa.sampling_offsets.bias.detach().view(8, 2, 4, 2), expected_grid(8, 2, 4), atol=1e-5
    )
    assert not tsa.attention_weights.weight.any()


def test_custom_msda_is_mmcv_msda_with_the_published_names():
    from mmcv.ops import MultiScaleDeformableAttention

    torch.manual_seed(0)
    ours = CustomMSDeformableAttention(embed_dims=256, num_heads=8, num_levels=1, num_points=4)
    torch.manual_seed(0)
    mmcv_module = MultiScaleDeformableAttention(embed_dims=256, num_heads=8, num_levels=1, num_points=4)
    shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert shapes == {  # driving_openlane_params.md §3.1, decoder cross-attention
        "sampling_offsets.weight": (64, 256),
        "sampling_offsets.bias": (64,),
        "attention_weights.weight": (32, 256),
        "attention_weights.bias": (32,),
        "value_proj.weight": (256, 256),
        "value_proj.bias": (256,),
        "output_proj.weight": (256, 256),
        "output_proj.bias": (256,),
    }
    for key, value in mmcv_module.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key
    ours.eval()
    mmcv_module.eval()
    mmcv_module.load_state_dict(randomise(ours).state_dict())
    query, value = torch.randn(5, 2, 256), torch.randn(50, 2, 256)  # batch second, as published
    args = dict(reference_points=torch.rand(2, 5, 1, 2), spatial_shapes=torch.tensor([[5, 10]]))
    args["level_start_index"] = torch.tensor([0])
    expected = mmcv_module(query, value=value, **args)
    torch.testing.assert_close(ours(query, value=value, flag="decoder", **args), expected)


# ----------------------------------------------------------------------------- temporal attention
def test_tsa_matches_the_reference_and_duplicates_the_query_without_history():
    tsa = (
        randomise(TemporalSelfAttention(embed_dims=16, num_heads=2, num_levels=1, num_points=3))
        .double()
        .eval()
    )
    bev_h, bev_w, bs = 4, 5, 2
    gen = torch.Generator().manual_seed(1)
    query = torch.randn(bs, bev_h * bev_w, 16, generator=gen, dtype=torch.float64)
    pos = torch.randn(bs, bev_h * bev_w, 16, generator=gen, dtype=torch.float64)
    ref = torch.rand(bs * 2, bev_h * bev_w, 1, 2, generator=gen, dtype=torch.float64)
    shapes, start = torch.tensor([[bev_h, bev_w]]), torch.tensor([0])
    history = torch.randn(bs, bev_h * bev_w, 16, generator=gen, dtype=torch.float64)
    value = torch.stack([history, query], 1).reshape(bs * 2, bev_h * bev_w, 16)

    out = tsa(
        query,
        None,
        value,
        query_pos=pos,
        reference_points=ref,
        spatial_shapes=shapes,
        level_start_index=start,
    )
    torch.testing.assert_close(out, tsa_reference(tsa, query, value, pos, ref, bev_h, bev_w))
    # batch rows are independent (published value[:bs] mixed samples for bs > 1)
    one = tsa(query[1:], None, value[2:], query_pos=pos[1:], reference_points=ref[2:], spatial_shapes=shapes)
    torch.testing.assert_close(out[1:], one)

    no_history = tsa(query, None, None, query_pos=pos, reference_points=ref, spatial_shapes=shapes)
    duplicated = torch.stack([query, query], 1).reshape(bs * 2, bev_h * bev_w, 16)  # before the pos encoding
    torch.testing.assert_close(
        no_history, tsa(query, None, duplicated, query_pos=pos, reference_points=ref, spatial_shapes=shapes)
    )
    torch.testing.assert_close(no_history, tsa_reference(tsa, query, duplicated, pos, ref, bev_h, bev_w))


# ------------------------------------------------------------------------------ point sampling
def test_point_sampling_projects_ahead_to_the_centre_and_masks_points_behind():
    encoder = small_encoder()
    ego = torch.tensor(
        [
            [10.0, 0.0, 0.0],  # straight ahead of camera 0: its image centre
            [-10.0, 0.0, 0.0],  # behind camera 0, straight ahead of camera 1
            [10.0, 10.0, 0.0],  # 45 degrees to the left: inside camera 0's +-50 degree view
            [1.0, 30.0, 0.0],  # far to the left: outside both images
            [10.0, -2.0, 1.0],  # right of and above the optical axis
        ],
        dtype=torch.float64,
    )
    pc = torch.tensor(PC_RANGE, dtype=torch.float64)
    normalised = ((ego - pc[:3]) / (pc[3:] - pc[:3]))[None, None]  # (bs=1, D=1, nq, 3)
    cam, mask = encoder.point_sampling(normalised, PC_RANGE, metas())
    assert cam.shape == (2, 1, 5, 1, 2) and cam.dtype == torch.float32 and mask.dtype == torch.bool
    torch.testing.assert_close(cam[0, 0, 0, 0], torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(cam[1, 0, 1, 0], torch.tensor([0.5, 0.5]))
    # u = (fx * X / Z + cx) / W with camera X = -ego y; v likewise with camera Y = -ego z; pad_shape (64, 96)
    expected = torch.tensor([(40 * 2 / 10 + 48) / 96, (40 * -1 / 10 + 32) / 64])
    torch.testing.assert_close(cam[0, 0, 4, 0], expected)
    assert mask[:, 0, :, 0].tolist() == [[True, False, True, False, True], [False, True, False, False, False]]
    # 45 degrees left: u = (40 * -1 + 48) / 96 = 1/12, inside
    torch.testing.assert_close(cam[0, 0, 2, 0], torch.tensor([(48 - 40) / 96, 0.5]))

    # ego -> lidar first: a lidar turned by 180 degrees sees with camera 0 what lies behind the ego
    turned = np.diag([-1.0, -1.0, 1.0, 1.0])
    cam, mask = encoder.point_sampling(normalised, PC_RANGE, metas(ego2lidar=turned))
    torch.testing.assert_close(cam[0, 0, 1, 0], torch.tensor([0.5, 0.5]))
    assert mask[0, 0, :, 0].tolist() == [False, True, False, False, False]


# ------------------------------------------------- OpenLane-V2 options (driving_openlane_params §2.4)
def option_encoder(**options) -> BEVFormerEncoder:
    """``small_encoder`` with encoder-level options (``projection``, ``image_size``)."""
    from mmdet.registry import MODELS

    args = {**SMALL, "ffn_cfgs": dict(type="FFN", embed_dims=SMALL["dims"])}
    return MODELS.build({**encoder_cfg(**args), **options})


def test_tsa_double_value_proj_is_the_single_tsa_with_the_projection_composed():
    kwargs = dict(embed_dims=16, num_heads=2, num_levels=1, num_points=3)
    double = randomise(TemporalSelfAttention(**kwargs, double_value_proj=True)).double().eval()
    single = TemporalSelfAttention(**kwargs).double().eval()
    assert not single.double_value_proj
    assert list(single.state_dict()) == list(double.state_dict())  # no parameter added
    single.load_state_dict(double.state_dict())
    bev_h, bev_w, bs = 3, 4, 2
    gen = torch.Generator().manual_seed(4)
    query = torch.randn(bs, bev_h * bev_w, 16, generator=gen, dtype=torch.float64)
    value = torch.randn(bs * 2, bev_h * bev_w, 16, generator=gen, dtype=torch.float64)
    ref = torch.rand(bs * 2, bev_h * bev_w, 1, 2, generator=gen, dtype=torch.float64)
    call = dict(reference_points=ref, spatial_shapes=torch.tensor([[bev_h, bev_w]]))
    out = double(query, None, value, **call)
    assert not torch.allclose(out, single(query, None, value, **call))  # the option changes the output
    # value_proj(value_proj(v)) is one linear map with weight W·W and bias W·b + b
    w, b = double.value_proj.weight.detach(), double.value_proj.bias.detach()
    with torch.no_grad():
        single.value_proj.weight.copy_(w @ w)
        single.value_proj.bias.copy_(w @ b + b)
    torch.testing.assert_close(out, single(query, None, value, **call))
    with pytest.raises(TypeError, match="double_value_proj"):
        TemporalSelfAttention(**kwargs, double_value_proj="yes")


def _ahead_points() -> torch.Tensor:
    ego = torch.tensor([[10.0, 0.0, 0.0], [-10.0, 0.0, 0.0], [10.0, -2.0, 1.0], [-10.0, 3.0, -1.0]])
    pc = torch.tensor(PC_RANGE)
    return ((ego - pc[:3]) / (pc[3:] - pc[:3]))[None, None]  # (bs=1, D=1, nq, 3)


def test_projection_lidar2img_alone_ignores_ego2lidar():
    points = _ahead_points()
    turned = np.diag([-1.0, -1.0, 1.0, 1.0])
    default = option_encoder()
    lidar_only = option_encoder(projection="lidar2img")
    assert default.projection == "lidar2img@ego2lidar" and lidar_only.projection == "lidar2img"
    with_ego = default.point_sampling(points, PC_RANGE, metas(ego2lidar=turned))
    ignored = lidar_only.point_sampling(points, PC_RANGE, metas(ego2lidar=turned))
    identity = default.point_sampling(points, PC_RANGE, metas())
    assert not torch.equal(with_ego[1], ignored[1])  # the turned lidar sees the other way
    torch.testing.assert_close(ignored[0], identity[0])
    assert torch.equal(ignored[1], identity[1])
    # lidar2img alone == the default with ego2lidar folded into lidar2img; ego2lidar not needed
    folded = metas()
    folded[0]["lidar2img"] = [m @ turned for m in folded[0]["lidar2img"]]
    del folded[0]["ego2lidar"]
    alone = lidar_only.point_sampling(points, PC_RANGE, folded)
    torch.testing.assert_close(alone[0], with_ego[0])
    assert torch.equal(alone[1], with_ego[1])
    with pytest.raises(KeyError, match="ego2lidar"):
        default.point_sampling(points, PC_RANGE, folded)


def test_image_size_front_img_shape_normalises_every_camera_by_the_unpadded_front_view():
    points = _ahead_points()
    shapes = metas()
    shapes[0]["img_shape"] = [(60, 80, 3), (30, 50, 3)]  # camera 1's own size must not matter
    padded, _ = option_encoder().point_sampling(points, PC_RANGE, shapes)
    front_encoder = option_encoder(image_size="front_img_shape")
    front, _ = front_encoder.point_sampling(points, PC_RANGE, shapes)
    # default: divided by pad_shape (64, 96); front: by img_shape[0] (60, 80), both cameras
    torch.testing.assert_close(front[..., 0] * 80, padded[..., 0] * 96)
    torch.testing.assert_close(front[..., 1] * 60, padded[..., 1] * 64)
    torch.testing.assert_close(front[1, 0, 1, 0], torch.tensor([48 / 80, 32 / 60]))  # camera 1's centre
    no_pad = metas()
    del no_pad[0]["pad_shape"]  # the default falls back to img_shape
    fallback, _ = option_encoder().point_sampling(points, PC_RANGE, no_pad)
    torch.testing.assert_close(fallback[..., 1] * 60, padded[..., 1] * 64)
    flat = metas()
    flat[0]["img_shape"] = (60, 80, 3)
    with pytest.raises(ValueError, match="per-camera"):
        front_encoder.point_sampling(points, PC_RANGE, flat)


def test_bad_encoder_options_are_named():
    with pytest.raises(ValueError, match="projection must be one of"):
        option_encoder(projection="ego2img")
    with pytest.raises(ValueError, match="image_size must be one of"):
        option_encoder(image_size="img_shape")


def test_bev_features_host_without_the_attributes_gets_a_clear_error():
    from autonomous_driving.bev_common.bev_features import BEVFeaturesMixin

    class Host(BEVFeaturesMixin, torch.nn.Module):
        embed_dims = 8

    with pytest.raises(AttributeError, match="lacks .*'num_feature_levels'"):
        Host().get_bev_features([], torch.zeros(1, 8), 1, 1, grid_length=(1, 1), bev_pos=None, img_metas=[])


def test_reference_points_follow_the_published_layout():
    ref_3d = BEVFormerEncoder.get_reference_points(3, 4, 6.4, 8, dim="3d", bs=2, dtype=torch.float64)
    ref_2d = BEVFormerEncoder.get_reference_points(3, 4, dim="2d", bs=2, dtype=torch.float64)
    assert ref_3d.shape == (2, 8, 12, 3) and ref_2d.shape == (2, 12, 1, 2)
    heights = ref_3d[0, :, 0, 2] * 6.4 - 1.0  # metric heights with the published pc_range
    torch.testing.assert_close(heights, torch.linspace(-0.5, 4.9, 8, dtype=torch.float64))
    q = 1 * 4 + 2  # row 1, column 2
    torch.testing.assert_close(ref_2d[0, q, 0], torch.tensor([2.5 / 4, 1.5 / 3], dtype=torch.float64))
    torch.testing.assert_close(ref_3d[1, 3, q, :2], ref_2d[1, q, 0])


# ------------------------------------------------------------------------------- cross attention
def sca_case(bs=2, dims=16, cams=2, nq=7, anchors=2, seed=3):
    sca = SpatialCrossAttention(
        embed_dims=dims,
        num_cams=cams,
        deformable_attention=dict(
            type="MSDeformableAttention3D", embed_dims=dims, num_heads=2, num_levels=2, num_points=4
        ),
    )
    sca = randomise(sca).double().eval()
    gen = torch.Generator().manual_seed(seed)
    levels = torch.tensor([[4, 6], [2, 3]])
    query = torch.randn(bs, nq, dims, generator=gen, dtype=torch.float64)
    value = torch.randn(cams, 30, bs, dims, generator=gen, dtype=torch.float64)
    ref_cam = torch.rand(cams, bs, nq, anchors, 2, generator=gen).float()
    bev_mask = torch.rand(cams, bs, nq, anchors, generator=gen) > 0.5
    bev_mask[:, :, 0] = False  # query 0: no camera sees it
    bev_mask[:, :, 1, 0] = True  # query 1: every camera sees it
    if bs > 1:
        bev_mask[0, 1, 2] = ~bev_mask[0, 0, 2]  # samples differ in what camera 0 sees of query 2
    bev_mask[1, :, 2] = False
    return sca, query, value, ref_cam, bev_mask, levels


def call_sca(sca, query, value, ref_cam, bev_mask, levels):
    start = torch.tensor([0, 24])
    return sca(
        query,
        value,
        value,
        reference_points_cam=ref_cam,
        bev_mask=bev_mask,
        spatial_shapes=levels,
        level_start_index=start,
    )


def test_sca_attends_only_visible_queries_per_sample():
    sca, query, value, ref_cam, bev_mask, levels = sca_case()
    out = call_sca(sca, query, value, ref_cam, bev_mask, levels)
    torch.testing.assert_close(out, sca_reference(sca, query, value, ref_cam, bev_mask, levels))
    # a query no camera sees gets only output_proj.bias plus the residual
    torch.testing.assert_close(out[:, 0], query[:, 0] + sca.output_proj.bias)
    # each sample uses its own visibility (published: sample 0's for all)
    for b in range(2):
        alone = call_sca(
            sca,
            query[b : b + 1],
            value[:, :, b : b + 1],
            ref_cam[:, b : b + 1],
            bev_mask[:, b : b + 1],
            levels,
        )
        torch.testing.assert_close(out[b : b + 1], alone)
    # changing a query nobody sees changes nothing else
    moved = query.clone()
    moved[:, 0] += 5
    torch.testing.assert_close(call_sca(sca, moved, value, ref_cam, bev_mask, levels)[:, 1:], out[:, 1:])


def test_sca_with_no_visible_query_returns_the_residual_plus_bias():
    sca, query, value, ref_cam, bev_mask, levels = sca_case(bs=1)
    out = call_sca(sca, query, value, ref_cam, torch.zeros_like(bev_mask), levels)
    torch.testing.assert_close(out, query + sca.output_proj.bias)


# -------------------------------------------------------------------------------------- layers
def test_layer_runs_tsa_sca_ffn_post_norm_with_bev_pos_only_in_tsa():
    encoder = randomise(small_encoder(layers=1)).double().eval()
    layer = encoder.layers[0]
    inputs = encoder_inputs()
    calls = []
    layer.register_forward_pre_hook(lambda m, a, kw: calls.append(kw), with_kwargs=True)
    out = run_encoder(encoder, inputs)
    kw = calls[0]
    tsa, sca = layer.attentions
    query = inputs["bev_query"].permute(1, 0, 2)
    bev_pos = inputs["bev_pos"].permute(1, 0, 2)
    x = tsa(
        query,
        None,
        None,
        query_pos=bev_pos,
        reference_points=kw["ref_2d"],
        spatial_shapes=torch.tensor([[6, 5]]),
    )
    x = layer.norms[0](x)
    x = call_sca(sca, x, inputs["key"], kw["reference_points_cam"], kw["bev_mask"], inputs["spatial_shapes"])
    x = layer.norms[1](x)
    x = layer.norms[2](x + layer.ffns[0].layers(x))
    torch.testing.assert_close(out, x)


def test_shift_moves_both_halves_of_the_hybrid_reference_and_history_is_kept_across_layers():
    encoder = small_encoder().double().eval()
    inputs = encoder_inputs()
    seen = []
    for layer in encoder.layers:
        layer.register_forward_pre_hook(lambda m, a, kw: seen.append(kw), with_kwargs=True)
    shift = torch.tensor([[0.1, -0.05]], dtype=torch.float64)
    prev_bev = torch.randn_like(inputs["bev_query"])
    run_encoder(encoder, inputs, prev_bev=prev_bev, shift=shift)
    ref_2d = BEVFormerEncoder.get_reference_points(6, 5, dim="2d", dtype=torch.float64)
    hybrid = seen[0]["ref_2d"]
    assert hybrid.shape == (2, 30, 1, 2)
    for half in (0, 1):  # published: shift_ref_2d = ref_2d (no clone), so both are shifted
        torch.testing.assert_close(hybrid[half], (ref_2d + shift[:, None, None])[0])
    stacked = torch.stack([prev_bev[:, 0], inputs["bev_query"][:, 0]])  # [history, initial query]
    for kw in seen:  # not updated between layers
        torch.testing.assert_close(kw["prev_bev"], stacked)
        assert kw["bev_mask"].shape == (2, 1, 30, 4)


def test_encoder_batch_equals_each_sample_alone():
    encoder = randomise(small_encoder()).double().eval()
    inputs = encoder_inputs(bs=2)
    turned = np.diag([-1.0, -1.0, 1.0, 1.0])
    batch_metas = metas(1) + metas(1, ego2lidar=turned)  # per-sample ego2lidar (published: sample 0's)
    prev_bev = torch.randn_like(inputs["bev_query"])
    shift = torch.tensor([[0.02, 0.0], [0.0, -0.03]], dtype=torch.float64)
    out = run_encoder(encoder, inputs, prev_bev=prev_bev, shift=shift, img_metas=batch_metas)
    assert out.shape == (2, 30, 32)
    for b in range(2):
        single = {k: (v[:, b : b + 1] if k in ("bev_query", "bev_pos") else v) for k, v in inputs.items()}
        single["key"] = inputs["key"][:, :, b : b + 1]
        alone = run_encoder(
            encoder,
            single,
            prev_bev=prev_bev[:, b : b + 1],
            shift=shift[b : b + 1],
            img_metas=batch_metas[b : b + 1],
        )
        torch.testing.assert_close(out[b : b + 1], alone)


def test_gradients_reach_every_parameter_and_input():
    encoder = randomise(small_encoder()).train()
    inputs = encoder_inputs(dtype=torch.float32)
    inputs["key"].requires_grad_(True)
    inputs["bev_query"].requires_grad_(True)
    prev_bev = torch.randn_like(inputs["bev_query"], requires_grad=True)
    run_encoder(encoder, inputs, prev_bev=prev_bev).square().sum().backward()
    for name, param in encoder.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
    for tensor in (inputs["key"], inputs["bev_query"], prev_bev):
        assert tensor.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------ MSDA path
def test_msda_path_is_mmcv_function_and_same_with_and_without_the_ops_dcnv3_kernel(monkeypatch):
    from mmcv.ops import multi_scale_deform_attn as mmcv_module

    from ops_dcnv3 import mmcv_msda
    from ops_dcnv3.msda import kernel_available

    if not kernel_available("cpu"):
        pytest.skip("ops_dcnv3 MSDA kernel not built")
    encoder = randomise(small_encoder()).eval()
    inputs = encoder_inputs(dtype=torch.float32)
    prev_bev = torch.randn_like(inputs["bev_query"])
    mmcv_msda.install()
    calls = []
    ours = mmcv_msda.multi_scale_deformable_attn
    monkeypatch.setattr(mmcv_msda, "multi_scale_deformable_attn", lambda *a: calls.append(1) or ours(*a))
    try:
        with torch.no_grad():
            fast = run_encoder(encoder, inputs, prev_bev=prev_bev)
        assert len(calls) == 2 * 2  # TSA and MSDA3D of both layers reached the kernel
        mmcv_msda.uninstall()
        assert not getattr(mmcv_module.multi_scale_deformable_attn_pytorch, "_ops_dcnv3_msda", False)
        with torch.no_grad():
            slow = run_encoder(encoder, inputs, prev_bev=prev_bev)
        assert len(calls) == 4
    finally:
        mmcv_msda.install()
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------ registries
@pytest.mark.parametrize("scope", ["mmdet", "mmengine"])
def test_config_builds_through_mmcv_builders_in_any_default_scope(scope):
    from mmcv.cnn.bricks.transformer import build_transformer_layer_sequence
    from mmengine.registry import DefaultScope

    cfg = encoder_cfg(**{**SMALL, "ffn_cfgs": dict(type="FFN", embed_dims=32)})
    cfg["type"] = "mmdet.BEVFormerEncoder"  # the top level names its scope; nested types stay plain
    with DefaultScope.overwrite_default_scope(scope):
        encoder = build_transformer_layer_sequence(cfg)
    assert type(encoder) is BEVFormerEncoder and len(encoder.layers) == 2
    assert type(encoder.layers[1].attentions[1].deformable_attention) is MSDeformableAttention3D
    assert encoder.layers[0].ffns[0].feedforward_channels == 48


# ----------------------------------------------------------------------------------------- errors
def test_clear_errors_for_bad_inputs_and_configs():
    from mmdet.registry import MODELS

    encoder = small_encoder().eval()
    inputs = encoder_inputs(dtype=torch.float32)
    bad = metas()
    del bad[0]["lidar2img"]
    with pytest.raises(KeyError, match="lidar2img"):
        run_encoder(encoder, inputs, img_metas=bad)
    bad = metas()
    bad[0]["lidar2img"] = bad[0]["lidar2img"][:1] + [np.eye(3)]
    with pytest.raises(ValueError, match="4x4"):
        run_encoder(encoder, inputs, img_metas=bad)
    bad = metas()
    del bad[0]["ego2lidar"]
    with pytest.raises(KeyError, match="ego2lidar"):
        run_encoder(encoder, inputs, img_metas=bad)
    with pytest.raises(ValueError, match="img_metas must be a list of 1"):
        run_encoder(encoder, inputs, img_metas=metas(2))
    with pytest.raises(ValueError, match="channels"):
        run_encoder(
            encoder,
            {**inputs, "bev_query": inputs["bev_query"][..., :16], "bev_pos": inputs["bev_pos"][..., :16]},
        )
    with pytest.raises(ValueError, match="bev_h"):
        run_encoder(encoder, {**inputs, "bev_h": 7})
    with pytest.raises(ValueError, match="shift"):
        run_encoder(encoder, inputs, shift=torch.zeros(1, 3))
    with pytest.raises(ValueError, match="num_cams=2"):  # three cameras' features for a 2-camera SCA
        run_encoder(encoder, {**inputs, "key": torch.cat([inputs["key"]] * 2)[:3]}, img_metas=metas(cams=2))
    with pytest.raises(ValueError, match="spatial_shapes"):
        run_encoder(encoder, {**inputs, "spatial_shapes": torch.tensor([[8, 12], [4, 5]])})
    # the published FFN default is 256 wide: other widths must pass ffn_cfgs
    with pytest.raises(ValueError, match="ffn_cfgs"):
        MODELS.build(encoder_cfg(**SMALL))
    with pytest.raises(ValueError, match="divisible"):
        TemporalSelfAttention(embed_dims=30, num_heads=8)
    with pytest.raises(ValueError, match="num_bev_queue"):
        TemporalSelfAttention(num_bev_queue=3)
    with pytest.raises(ValueError, match="multiple"):
        msda = MSDeformableAttention3D(embed_dims=16, num_heads=2, num_levels=1, num_points=3)
        msda(
            torch.zeros(1, 2, 16),
            value=torch.zeros(1, 4, 16),
            reference_points=torch.zeros(1, 2, 2, 2),
            spatial_shapes=torch.tensor([[2, 2]]),
            level_start_index=torch.tensor([0]),
        )
    with pytest.raises(ValueError, match="operation_order"):
        BEVFormerLayer(attn_cfgs=[], feedforward_channels=8, operation_order=("self_attn", "ffn"))


# -------------------------------------------------------------------------------------- GridMask
def expected_grid_mask(h, w, ratio, mode):
    """§2 step by step with the same numpy draws."""
    hh, ww = int(1.5 * h), int(1.5 * w)
    d = np.random.randint(2, h)
    length = min(max(int(d * ratio + 0.5), 1), d - 1)
    mask = np.ones((hh, ww), np.float32)
    st_h, st_w = np.random.randint(d), np.random.randint(d)
    for i in range(hh // d):
        mask[d * i + st_h : min(d * i + st_h + length, hh)] = 0
    for i in range(ww // d):
        mask[:, d * i + st_w : min(d * i + st_w + length, ww)] = 0
    np.random.randint(1)  # rotate=1: angle 0
    mask = mask[(hh - h) // 2 : (hh - h) // 2 + h, (ww - w) // 2 : (ww - w) // 2 + w]
    return torch.from_numpy(1 - mask if mode == 1 else mask)


def test_grid_mask_published_arguments_shared_mask_and_training_only():
    grid_mask = GridMask(True, True, rotate=1, offset=False, ratio=0.5, mode=1, prob=0.7)
    assert not list(grid_mask.parameters())
    x = torch.rand(2, 3, 20, 30) + 1
    grid_mask.eval()
    assert grid_mask(x) is x
    grid_mask.train()
    seeds = {}
    for seed in range(50):
        np.random.seed(seed)
        seeds.setdefault(np.random.rand() <= 0.7, seed)
    np.random.seed(seeds[False])  # draw above prob: unchanged
    assert grid_mask(x) is x
    np.random.seed(seeds[True])
    np.random.rand()
    expected = expected_grid_mask(20, 30, 0.5, mode=1)
    np.random.seed(seeds[True])
    torch.testing.assert_close(grid_mask(x), x * expected)  # one mask for every image and channel
    assert set(expected.unique().tolist()) == {0.0, 1.0} and 0 < expected.mean() < 1
    assert GridMask(True, True, prob=0.0).train()(x) is x


# ----------------------------------------------------------------------------------- backbone
def test_internimage_is_the_one_dense_backbone_and_loads_a_ddp_mask_rcnn_checkpoint(tmp_path):
    from mmdet.registry import MODELS

    from autonomous_driving.bev_common import backbone
    from dense_common import InternImageBackbone

    assert MODELS.get("InternImage") is InternImageBackbone is backbone.InternImage
    published = dict(
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
    )
    with torch.device("meta"):
        trunk = MODELS.build(published)
    ours = [f"img_backbone.{k} ({', '.join(map(str, v.shape))})" for k, v in trunk.state_dict().items()]
    keys = [line.strip() for line in KEYS_FILE.read_text().splitlines() if line.startswith("img_backbone.")]
    assert ours == keys and len(keys) == 743
    assert trunk.out_channels == [160, 320, 640]

    tiny = dict(published, channels=16, depths=[1, 1, 1, 1], groups=[1, 2, 4, 8], with_cp=False)
    source = randomise(MODELS.build(tiny))
    checkpoint = {  # a DDP-saved Mask R-CNN: module.backbone.* plus neck and heads
        "meta": {"epoch": 36},
        "state_dict": {
            **{f"module.backbone.{k}": v for k, v in source.state_dict().items()},
            "module.neck.fpn_convs.0.conv.weight": torch.zeros(4, 4, 3, 3),
            "module.rpn_head.rpn_cls.bias": torch.zeros(3),
        },
    }
    torch.save(checkpoint, tmp_path / "mask_rcnn.pth")
    model = MODELS.build(
        dict(tiny, init_cfg=dict(type="Pretrained", checkpoint=str(tmp_path / "mask_rcnn.pth")))
    )
    model.init_weights()
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
