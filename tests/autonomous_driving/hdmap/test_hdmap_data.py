"""The data side without the shared package: the generated AV2 dataset, the annotation
reader, VectorizeMap / PolygonizeLocalMapBbox arithmetic and the submission file."""

from __future__ import annotations

import json
import os
import pickle
from decimal import Decimal

import numpy as np
import pytest
from shapely.geometry import LineString, Polygon
from synthetic_av2 import CAMERAS, make_av2_dataset

from autonomous_driving.online_hdmap.annotations import (
    AV2_CAMERAS,
    camera_matrices,
    frame_map_lines,
    frame_to_sample,
    iter_frames,
    load_annotations,
    load_ground_truth,
)
from autonomous_driving.online_hdmap.submission import (
    default_meta,
    denormalize_vectors,
    format_results,
    format_sample,
    read_submission,
    write_submission,
)
from autonomous_driving.online_hdmap.vectorize import (
    evaluate_line,
    get_bbox,
    line_to_tokens,
    map_geoms_from_frame,
    normalize_line,
    polygonize_local_map_bbox,
    vectorize_map,
)


@pytest.fixture(scope="module")
def av2(tmp_path_factory) -> dict:
    return make_av2_dataset(tmp_path_factory.mktemp("av2"), segments=2, frames_per_segment=2, seed=0)


# ---- generated dataset and annotation reader -----------------------------------------


def test_generated_layout_is_the_published_one(av2) -> None:
    ann = load_annotations(av2["val_ann"])
    assert len(ann) == 2 and all(len(frames) == 2 for frames in ann.values())
    frames = list(iter_frames(ann))
    assert [f["timestamp"] for f in frames] == av2["tokens"]["val"]
    for f in frames:
        assert set(f) == {"segment_id", "timestamp", "sensor", "annotation", "pose"}
        assert isinstance(f["timestamp"], str)
        assert tuple(f["sensor"]) == AV2_CAMERAS == tuple(c for c, _ in CAMERAS)
        assert set(f["annotation"]) == {"ped_crossing", "divider", "boundary"}
        assert np.asarray(f["annotation"]["divider"][0]).shape[1] == 4  # x, y, z, visibility
        assert np.asarray(f["pose"]["ego2global_rotation"]).shape == (3, 3)
        assert len(f["pose"]["ego2global_translation"]) == 3
    # Every line lies in the 60 m x 30 m box.
    for lines in frame_map_lines(frames[0]).values():
        for line in lines:
            assert np.all(np.abs(line[:, 0]) <= 30) and np.all(np.abs(line[:, 1]) <= 15)
    # The ego moves between frames of a segment.
    t = [np.asarray(f["pose"]["ego2global_translation"]) for f in frames[:2]]
    assert np.linalg.norm(t[1] - t[0]) > 1.0


def test_cameras_see_the_map_box(av2) -> None:
    import cv2

    frame = next(iter_frames(load_annotations(av2["train_ann"])))
    xs, ys = np.meshgrid(np.linspace(-30, 30, 60), np.linspace(-15, 15, 30))
    ground = np.stack([xs.ravel(), ys.ravel(), np.zeros(xs.size), np.ones(xs.size)], 1)
    seen = np.zeros(len(ground), dtype=bool)
    for cam, m in camera_matrices(frame).items():
        img = cv2.imread(os.path.join(av2["root"], m["image_path"]))
        h, w = img.shape[:2]
        assert (h > w) == (cam == "ring_front_center")  # AV2's portrait front camera
        np.testing.assert_allclose(m["ego2img"][:3, :3], m["intrinsic"] @ m["extrinsic"][:3, :3])
        p = ground @ m["ego2img"].T
        front = p[:, 2] > 1e-9
        u, v = p[:, 0] / np.where(front, p[:, 2], 1), p[:, 1] / np.where(front, p[:, 2], 1)
        visible = front & (u > 0) & (u < w) & (v > 0) & (v < h)
        assert visible.mean() > 0.03, cam
        seen |= visible
    assert seen.mean() > 0.9


def test_images_show_the_lines(av2) -> None:
    import cv2

    frame = next(iter_frames(load_annotations(av2["train_ann"])))
    path = os.path.join(av2["root"], frame["sensor"]["ring_front_center"]["image_path"])
    img = cv2.imread(path).astype(int)
    ground = img[img.shape[0] // 2 :]
    painted = np.abs(ground - 90).sum(-1) > 60
    assert 0.05 < painted.mean() < 0.8


def test_reader_errors_name_the_problem(tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    with pytest.raises(ValueError, match="segment_id"):
        load_annotations(bad)
    bad.write_text(json.dumps({"s": [{"segment_id": "s"}]}))
    with pytest.raises(ValueError, match="no 'timestamp'"):
        load_annotations(bad)
    with pytest.raises(ValueError, match="has no 'boundary'"):
        frame_map_lines({"timestamp": "1", "annotation": {"ped_crossing": [], "divider": []}})
    with pytest.raises(ValueError, match=r"divider\[0\]"):
        frame_map_lines(
            {"timestamp": "1", "annotation": {"ped_crossing": [], "divider": [[[0, 0]]], "boundary": []}}
        )
    with pytest.raises(ValueError, match="interval"):
        list(iter_frames({}, interval=0))


def test_interval_and_ground_truth(av2) -> None:
    ann = load_annotations(av2["val_ann"])
    assert [f["timestamp"] for f in iter_frames(ann, interval=3)] == av2["tokens"]["val"][::3]
    gts = load_ground_truth(av2["val_ann"])
    assert list(gts) == av2["tokens"]["val"]
    assert all(line.shape[1] == 2 for lines in gts[av2["tokens"]["val"][0]].values() for line in lines)


# ---- VectorizeMap / PolygonizeLocalMapBbox --------------------------------------------


def test_normalize_line() -> None:
    # (p + (30, 15)) / (62, 32): the corners of the box and the inverse.
    pts = np.array([[-30.0, -15.0], [30.0, 15.0], [0.0, 0.0]])
    np.testing.assert_allclose(normalize_line(pts), [[0, 0], [60 / 62, 30 / 32], [30 / 62, 15 / 32]])
    np.testing.assert_allclose(denormalize_vectors([normalize_line(pts)])[0], pts, atol=1e-12)


def test_vectorize_map_simplifies_in_metres_and_drops_z() -> None:
    geoms = {
        1: [LineString([(-10, 0, 1.0), (0, 0.1, 2.0), (10, 0, 3.0)])],  # 0.1 m bump: removed
        2: [LineString([(-10, 0, 0.0), (0, 0.3, 0.0), (10, 0, 0.0)])],  # 0.3 m bump: kept
        0: [Polygon([(0, 0), (1, 0), (1, 1)])],  # not a line: skipped
    }
    out = vectorize_map(geoms)
    np.testing.assert_allclose(out[1][0], normalize_line(np.array([[-10.0, 0], [10, 0]])))
    np.testing.assert_allclose(out[2][0], normalize_line(np.array([[-10.0, 0], [0, 0.3], [10, 0]])))
    assert out[0] == []
    raw = vectorize_map(geoms, simplify=False, normalize=False)
    np.testing.assert_allclose(raw[1][0], [[-10, 0], [0, 0.1], [10, 0]])


def test_map_geoms_from_frame(av2) -> None:
    frame = next(iter_frames(load_annotations(av2["val_ann"])))
    geoms = map_geoms_from_frame(frame)
    assert list(geoms) == [0, 1, 2]
    assert geoms[1][0].has_z
    np.testing.assert_allclose(
        np.asarray(geoms[1][0].coords), np.asarray(frame["annotation"]["divider"][0])[:, :3]
    )


def test_get_bbox_buffers_thin_boxes() -> None:
    # Horizontal line: H = 0 < 0.02 -> buffered by r = 0.01 with round caps: the envelope
    # grows by 0.01 on all sides.
    np.testing.assert_allclose(
        get_bbox(np.array([[0.2, 0.5], [0.6, 0.5]])), [[0.19, 0.49], [0.61, 0.51]], atol=1e-12
    )
    # H = 0.01: r = (0.02 - 0.01) / 2 = 0.005 (axis-aligned segments, so the extreme
    # points are vertices of shapely's round caps and joins; slanted ends are polygonal).
    np.testing.assert_allclose(
        get_bbox(np.array([[0.2, 0.5], [0.6, 0.5], [0.6, 0.51]])),
        [[0.195, 0.495], [0.605, 0.515]],
        atol=1e-12,
    )
    # Wide enough: the plain bounds; and clipped to [0, 1].
    np.testing.assert_allclose(get_bbox(np.array([[0.2, 0.3], [0.6, 0.5]])), [[0.2, 0.3], [0.6, 0.5]])
    np.testing.assert_allclose(
        get_bbox(np.array([[0.0, 0.5], [0.0, 0.9]])), [[0.0, 0.49], [0.01, 0.91]], atol=1e-12
    )


def test_tokens_and_weights() -> None:
    # int(0.5 * 199) = 99, int(0.5 * 99) = 49, +1; int(0.999 * 199) = 198; then the stop 0.
    np.testing.assert_array_equal(line_to_tokens(np.array([[0.5, 0.5], [0.999, 0.0]])), [100, 50, 199, 1, 0])
    # The spec's worked example (driving_hdmap_params.md §5.7).
    w = evaluate_line(np.array([[0, 0], [0.1, 0], [0.1, 0.2]]))
    np.testing.assert_allclose(w, [1 / 9, 1 / 9, 1 / 6, 1 / 6, 2 / 9, 2 / 9, 1 / 6])
    # All vertices equal: edge sum 0 is divided by 1, vertex weights 0, stop 1/(2n).
    np.testing.assert_allclose(evaluate_line(np.zeros((2, 2))), [0, 0, 0, 0, 0.25])


def test_polygonize_local_map_bbox() -> None:
    vectors = {
        2: [np.array([[0.0, 0.2], [0.5, 0.2], [0.5, 0.4]])],
        0: [np.array([[0.1, 0.1], [0.3, 0.6]])],
    }
    out = polygonize_local_map_bbox(vectors)
    np.testing.assert_array_equal(out["det_label"], [0, 2])  # label order, then file order
    np.testing.assert_array_equal(out["gen_label"], out["det_label"])
    # ped_crossing box: (0.1, 0.1)-(0.3, 0.6): corners x200, y100.
    np.testing.assert_allclose(out["keypoint"][0], [20, 10, 60, 60], rtol=1e-6)
    np.testing.assert_array_equal(out["qkeypoint"][0], [19, 9, 59, 59])  # int(.1*199)=19, int(.6*99)=59
    # boundary box (0, 0.2)-(0.5, 0.4): x0 = 0 clipped to 0.1 in canvas units.
    np.testing.assert_allclose(out["keypoint"][1], [0.1, 20, 100, 40], rtol=1e-6)
    assert out["keypoint"].dtype == np.float32 and out["qkeypoint"].dtype == np.int32
    np.testing.assert_array_equal(out["polylines"][0], [20, 10, 60, 60, 0])
    np.testing.assert_allclose(out["polyline_weights"][0], np.full(5, 1 / 5))
    e = np.array([0.5, 0.2])  # boundary edges: v = [.5, .35, .2] / 1.05
    v = np.array([e[0], e.mean(), e[1]])
    v = v / v.sum() / 2  # halved onto the x and y token
    np.testing.assert_allclose(out["polyline_weights"][1], [*np.repeat(v, 2), 1 / 6])
    assert all(m.dtype == bool and m.all() for m in out["polyline_masks"])
    assert polygonize_local_map_bbox({0: [], 1: [], 2: []}) == []


def test_pipeline_on_generated_frame(av2) -> None:
    frame = next(iter_frames(load_annotations(av2["train_ann"])))
    vectors = vectorize_map(map_geoms_from_frame(frame))
    polys = polygonize_local_map_bbox(vectors)
    n = sum(len(v) for v in vectors.values())
    assert polys["keypoint"].shape == (n, 4) and len(polys["polylines"]) == n
    assert all(1 <= t.max() <= 200 and t[-1] == 0 for t in polys["polylines"])
    kp = polys["keypoint"]
    assert np.all(
        (kp[:, [0, 2]] >= 0.1) & (kp[:, [0, 2]] <= 199.9) & (kp[:, [1, 3]] >= 0.1) & (kp[:, [1, 3]] <= 99.9)
    )


# ---- submission file -------------------------------------------------------------------


def test_format_sample_denormalises_and_drops_short_lines() -> None:
    vecs = [np.array([[0.0, 0.0], [0.5, 0.5]]), np.array([[0.5, 0.5]])]
    out = format_sample(vecs, [0.9, 0.8], [1, 2])
    assert out == {"vectors": [[[-30.0, -15.0], [1.0, 1.0]]], "scores": [0.9], "labels": [1]}
    with pytest.raises(ValueError, match="one length"):
        format_sample(vecs, [0.9], [1, 2])


def test_write_submission_is_atomic_and_round_trips(tmp_path) -> None:
    path = tmp_path / "work" / "submission_vector.json"
    results = {
        "1": {"vectors": [np.array([[0.0, 1.0], [2.0, 3.0]])], "scores": [np.float32(0.5)], "labels": [2]}
    }
    write_submission(path, results)
    sub = read_submission(path)
    assert sub["meta"] == default_meta()
    assert sub["results"] == {"1": {"vectors": [[[0.0, 1.0], [2.0, 3.0]]], "scores": [0.5], "labels": [2]}}
    before = path.read_bytes()
    # A failure while serialising leaves the previous file untouched and no temporary file.
    with pytest.raises(TypeError, match="cannot write"):
        write_submission(
            path, {"1": {"vectors": [[[0, 0], [1, 1]]], "scores": [Decimal("0.5")], "labels": [2]}}
        )
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == ["submission_vector.json"]
    with pytest.raises(ValueError, match=r"labels\[0\]"):
        write_submission(path, {"1": {"vectors": [[[0, 0], [1, 1]]], "scores": [0.5], "labels": [7]}})
    with pytest.raises(ValueError, match="unknown meta"):
        default_meta(email="x")


def test_read_submission_pickle_without_code(tmp_path) -> None:
    sub = {
        "meta": default_meta(),
        "results": {"1": {"vectors": [np.zeros((2, 2))], "scores": [0.1], "labels": [0]}},
    }
    good = tmp_path / "sub.pkl"
    good.write_bytes(pickle.dumps(sub))
    np.testing.assert_array_equal(read_submission(good)["results"]["1"]["vectors"][0], np.zeros((2, 2)))

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps({"meta": {}, "results": {}, "x": Evil()}))
    with pytest.raises(pickle.UnpicklingError, match="system"):
        read_submission(bad)
    with pytest.raises(ValueError, match=r"\.json"):
        read_submission(tmp_path / "sub.txt")


def test_frame_to_sample(av2) -> None:
    frame = next(iter_frames(load_annotations(av2["val_ann"])))
    sample = frame_to_sample(frame, av2["root"])
    assert sample["token"] == frame["timestamp"] and sample["cam_names"] == list(AV2_CAMERAS)
    assert all(os.path.isfile(p) for p in sample["img_filenames"])
    k4 = np.eye(4)
    k4[:3, :3] = sample["intrinsics"][3]
    np.testing.assert_allclose(sample["ego2img"][3], k4 @ sample["extrinsics"][3])
    assert list(sample["map_geoms"]) == [0, 1, 2]
    test_frame = {k: v for k, v in frame.items() if k != "annotation"}
    assert "map_geoms" not in frame_to_sample(test_frame, av2["root"])


def test_format_results_writes_the_submission(tmp_path) -> None:
    preds = [
        {"token": 11, "vectors": [np.array([[0.5, 0.5], [1.0, 1.0]])], "scores": [0.7], "labels": [0]},
        {"token": "12", "vectors": [np.zeros((1, 2))], "scores": [0.2], "labels": [1]},
    ]
    path = format_results(preds, tmp_path)
    assert path == str(tmp_path / "submission_vector.json")
    sub = read_submission(path)
    assert sub["results"] == {
        "11": {"vectors": [[[1.0, 1.0], [32.0, 17.0]]], "scores": [0.7], "labels": [0]},
        "12": {"vectors": [], "scores": [], "labels": []},
    }
    with pytest.raises(ValueError, match="predicted twice"):
        format_results(preds + preds[:1], tmp_path)
