"""sam/: detector boxes prompt Segment Anything, on the detection tests' tiny COCO set with a
randomly initialised DINO-T (the published config) and a SAM built without weights (the
package's architecture scaled down, sam_testutils.tiny_sam: the published vit_b's image
encoder at 1024 px took 45 s per image on one thread of the shared CI CPU).

End to end through ``main``: COCO box and mask metrics are reported and the masks land in
the boxes that prompted them (a SAM whose decoder paints each prompt box makes the whole
coordinate chain visible: detector boxes in original pixels -> SAM's 1024-style frame ->
masks back in original pixels). With ground-truth boxes, the one-batch masks are what
``SamPredictor`` returns box by box. Bad input gets one line each."""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sam_testutils import REPO, TINY_SAM, tiny_coco_config, tiny_sam, write_tiny_coco
from torch import nn

pytest.importorskip("mmdet", reason="mmdet 3 is not installed (tools/bootstrap.sh installs it)")
pytest.importorskip("segment_anything", reason="segment-anything is not installed")

BOX_SAM = "vit_test_boxes"  # tiny SAM whose decoder paints the prompt boxes (box_painting_sam)
SEG_CONFIG = REPO / "segmentation/configs/ade20k/upernet_internimage_t_512_160k_ade20k.py"


@pytest.fixture(autouse=True)
def _mmdet_scope_one_thread():
    """mmengine's default scope is process-global (another tree's tests leave theirs); one
    intra-op thread on the shared 2-core CI machine (see tests/detection/conftest.py)."""
    from mmengine.registry import init_default_scope

    init_default_scope("mmdet")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _fast_config_text(monkeypatch):
    """mmengine logs and dumps the config formatted by yapf, ~5 s a run on the CI machine
    (four times per ``Runner``); the tests read neither, so the plain dict text stands in."""
    from mmengine.config import Config

    monkeypatch.setattr(Config, "pretty_text", property(lambda self: str(self.to_dict())))


@pytest.fixture(autouse=True)
def _test_sam_types(monkeypatch):
    from sam import sam_model

    monkeypatch.setitem(sam_model.SAM_BUILDERS, TINY_SAM, tiny_sam)
    monkeypatch.setitem(sam_model.SAM_BUILDERS, BOX_SAM, box_painting_sam)
    monkeypatch.delenv("INTERNIMAGE_TRUST_CHECKPOINTS", raising=False)


def _script():
    path = REPO / "sam" / "main_zero_shot_instance_seg.py"
    spec = importlib.util.spec_from_file_location("sam_main_zero_shot", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _BoxRecorder(nn.Module):
    """SAM's prompt encoder, remembering the boxes of the last prompt batch."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.boxes = None

    def forward(self, points, boxes, masks):
        self.boxes = boxes
        return self.encoder(points, boxes, masks)

    def get_dense_pe(self) -> torch.Tensor:
        return self.encoder.get_dense_pe()


class _BoxPainter(nn.Module):
    """Stands in for SAM's mask decoder: low-resolution logits +10 where a cell's centre lies
    inside the prompt box (SAM's input frame), -10 elsewhere."""

    def __init__(self, recorder: _BoxRecorder, input_size: int, low_res: int) -> None:
        super().__init__()
        self.recorder, self.input_size, self.low_res = recorder, input_size, low_res

    def forward(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
                multimask_output):
        centres = (torch.arange(self.low_res) + 0.5) * (self.input_size / self.low_res)
        boxes = self.recorder.boxes[:, None, None, :]  # B 1 1 4
        inside = ((centres[None, None, :] >= boxes[..., 0]) & (centres[None, None, :] <= boxes[..., 2])
                  & (centres[None, :, None] >= boxes[..., 1]) & (centres[None, :, None] <= boxes[..., 3]))
        return torch.where(inside, 10.0, -10.0)[:, None], torch.ones(len(boxes), 1)


def box_painting_sam():
    from segment_anything.modeling import Sam

    sam = tiny_sam()
    recorder = _BoxRecorder(sam.prompt_encoder)
    low_res = 4 * sam.prompt_encoder.image_embedding_size[0]  # SAM's decoder upsamples 4x
    return Sam(image_encoder=sam.image_encoder, prompt_encoder=recorder,
               mask_decoder=_BoxPainter(recorder, sam.image_encoder.img_size, low_res),
               pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375]).eval()


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory) -> dict[str, Path]:
    """The tiny COCO set, the DINO-T config on it, a random detector checkpoint and SAM
    checkpoints saved as the published files are (a plain state_dict)."""
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    root = tmp_path_factory.mktemp("sam_tiny_coco")
    ann = write_tiny_coco(root, width=128)
    config = tiny_coco_config(root, ann)
    init_default_scope("mmdet")
    torch.manual_seed(0)
    detector = MODELS.build(Config.fromfile(str(config)).model)
    # DINO's level_embed is torch.Tensor(...) until init_weights() fills it: without this the
    # saved checkpoint held whatever memory was there, and now and then NaN boxes came out.
    detector.init_weights()
    # Initialised DETR regression layers are zero, so every box would be a 6 px anchor
    # proposal: a width/height bias in each refinement step gives boxes the masks can fill.
    with torch.no_grad():
        for branch in detector.bbox_head.reg_branches:
            branch[-1].bias[2:] = 0.4
    torch.save({"state_dict": detector.state_dict()}, root / "detector.pth")
    torch.save(tiny_sam().state_dict(), root / "sam_tiny.pth")
    torch.save(box_painting_sam().state_dict(), root / "sam_boxes.pth")
    return dict(root=root, ann=ann, config=config, detector=root / "detector.pth",
                sam=root / "sam_tiny.pth", box_sam=root / "sam_boxes.pth")


def _run(tiny_set, work: Path, sam_type: str, sam_checkpoint: Path, *extra: str) -> dict:
    return _script().main([str(tiny_set["config"]), str(tiny_set["detector"]), str(sam_checkpoint),
                           "--sam_type", sam_type, "--work-dir", str(work), *extra])


def _decode(result: dict) -> tuple[np.ndarray, np.ndarray]:
    import pycocotools.mask as mask_util

    instances = result["pred_instances"]
    masks = np.stack([mask_util.decode(m) for m in instances["masks"]]).astype(bool)
    return instances["bboxes"].numpy(), masks


def test_pipeline_reports_box_and_mask_metrics(tiny_set, tmp_path, monkeypatch):
    monkeypatch.setenv("INTERNIMAGE_OUTPUT", str(tmp_path / "output"))
    out = tmp_path / "predictions.pkl"
    metrics = _run(tiny_set, tmp_path / "work", TINY_SAM, tiny_set["sam"], "--eval", "segm", "bbox",
                   "--out", str(out), "--show-dir", str(tmp_path / "shown"))
    for kind in ("bbox", "segm"):
        for name in ("mAP", "mAP_50", "mAP_75"):
            assert 0.0 <= metrics[f"coco/{kind}_{name}"] <= 1.0, metrics
    with open(out, "rb") as f:
        results = pickle.load(f)
    images = {image["id"]: image for image in json.loads(tiny_set["ann"].read_text())["images"]}
    assert sorted(r["img_id"] for r in results) == sorted(images)
    for result in results:
        boxes, masks = _decode(result)
        image = images[result["img_id"]]
        assert len(boxes) == len(masks) == 8  # one mask per box (test_cfg.max_per_img)
        assert masks.shape[1:] == (image["height"], image["width"])  # the original image's size
    assert sorted(p.name for p in (tmp_path / "shown").rglob("*.jpg")) == sorted(i["file_name"] for i in
                                                                                  images.values())
    assert not (tmp_path / "output").exists()  # --work-dir given: nothing under the output root


def test_masks_lie_in_the_boxes_that_prompted_them(tiny_set, tmp_path):
    out = tmp_path / "predictions.pkl"
    _run(tiny_set, tmp_path / "work", BOX_SAM, tiny_set["box_sam"], "--out", str(out))
    with open(out, "rb") as f:
        results = pickle.load(f)
    covered = 0
    for result in results:
        boxes, masks = _decode(result)
        rows, cols = np.arange(masks.shape[1])[:, None] + 0.5, np.arange(masks.shape[2])[None, :] + 0.5
        for (x1, y1, x2, y2), mask in zip(boxes, masks):
            near = (cols >= x1 - 3) & (cols <= x2 + 3) & (rows >= y1 - 3) & (rows <= y2 + 3)
            assert not (mask & ~near).any(), f"mask pixels more than 3 px outside box {(x1, y1, x2, y2)}"
            # a low-resolution cell is 2 px here: 2 px in from the edges, a box is painted throughout
            if x2 - x1 >= 8 and y2 - y1 >= 8:
                inner = (cols >= x1 + 2) & (cols <= x2 - 2) & (rows >= y1 + 2) & (rows <= y2 - 2)
                assert mask[inner].all(), f"box {(x1, y1, x2, y2)} is not filled by its mask"
                covered += 1
    assert covered >= 3, "too few boxes large enough to check that the masks fill them"


def _ground_truth_samples(tiny_set):
    """One DetDataSample per photo with its ground-truth box and 3 random boxes as predictions."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    data = json.loads(tiny_set["ann"].read_text())
    generator = torch.Generator().manual_seed(0)
    for image in data["images"]:
        (ann,) = [a for a in data["annotations"] if a["image_id"] == image["id"]]
        x, y, w, h = ann["bbox"]
        corners = torch.rand(3, 2, 2, generator=generator) * torch.tensor([image["width"], image["height"]])
        random_boxes = torch.cat([corners.amin(1), corners.amax(1)], dim=1)
        sample = DetDataSample(metainfo=dict(img_path=str(tiny_set["root"] / "images" / image["file_name"]),
                                             ori_shape=(image["height"], image["width"])))
        sample.pred_instances = InstanceData(
            bboxes=torch.cat([torch.tensor([[x, y, x + w, y + h]]), random_boxes]),
            labels=torch.tensor([ann["category_id"] - 1, 0, 1, 2]), scores=torch.ones(4))
        yield sample


def test_ground_truth_boxes_get_the_masks_sam_predictor_returns(tiny_set):
    import mmcv
    from segment_anything import SamPredictor

    from sam.prompted_detector import add_sam_masks

    torch.manual_seed(1)
    sam = tiny_sam()
    reference = SamPredictor(sam)
    for sample in _ground_truth_samples(tiny_set):
        add_sam_masks(SamPredictor(sam), sample)
        masks = sample.pred_instances.masks
        # the photo as mmdet's LoadImageFromFile decodes it, in RGB: what a user hands SamPredictor
        reference.set_image(mmcv.imread(sample.img_path, channel_order="rgb"))
        for box, mask in zip(sample.pred_instances.bboxes.numpy(), masks):
            expected, _, _ = reference.predict(box=box, multimask_output=False)
            assert np.array_equal(mask.numpy(), expected[0]), f"box {box} of {sample.img_path}"
        assert masks.any(), "an untrained SAM draws something"  # the comparison is not of empty masks


def test_published_format_sam_checkpoint_loads_through_the_safe_reader(tiny_set, tmp_path):
    from classification.models.checkpoint import UntrustedCheckpointError
    from sam.sam_model import build_sam

    sam = build_sam(TINY_SAM, tiny_set["sam"])  # a plain state_dict of tensors, no opt-in needed
    saved = torch.load(tiny_set["sam"], weights_only=True)
    assert all(torch.equal(value, saved[key]) for key, value in sam.state_dict().items())
    assert not sam.training

    class Payload:
        def __reduce__(self):
            return (print, ("payload ran",))

    torch.save({**saved, "extra": Payload()}, tmp_path / "payload.pth")
    with pytest.raises(UntrustedCheckpointError, match="refusing to unpickle builtins.print"):
        build_sam(TINY_SAM, tmp_path / "payload.pth")


def test_a_sam_checkpoint_of_another_type_is_one_error(tiny_set, tmp_path):
    """A vit_l file with --sam_type vit_b (the real vit_b, built without weights): the encoder
    shapes are compared first, so no size-mismatch list."""
    vit_l_like = {"image_encoder.patch_embed.proj.weight": torch.zeros(1024, 3, 16, 16),
                  **{f"image_encoder.blocks.{i}.norm1.weight": torch.zeros(1024) for i in range(24)}}
    torch.save(vit_l_like, tmp_path / "sam_vit_l.pth")
    with pytest.raises(SystemExit) as error:
        _run(tiny_set, tmp_path / "work", "vit_b", tmp_path / "sam_vit_l.pth")
    message = str(error.value)
    assert message == (f"error: SAM checkpoint {tmp_path / 'sam_vit_l.pth'} holds vit_l (embed dim 1024, "
                       "24 blocks), but --sam_type vit_b is vit_b (embed dim 768, 12 blocks): pass the "
                       "--sam_type of the checkpoint")


def test_a_checkpoint_that_is_no_sam_is_refused(tiny_set):
    from sam.sam_model import ZeroShotSetupError, build_sam

    with pytest.raises(ZeroShotSetupError, match="is not a Segment Anything checkpoint: it has no "
                                                 "'image_encoder.patch_embed.proj.weight'"):
        build_sam(TINY_SAM, tiny_set["detector"])


def test_a_segmentation_config_is_refused(tiny_set):
    with pytest.raises(SystemExit) as error:
        _script().main([str(SEG_CONFIG), str(tiny_set["detector"]), str(tiny_set["sam"])])
    assert "is not a box detector config (default_scope 'mmseg', model 'EncoderDecoder')" in str(error.value)


def test_a_detector_output_without_boxes_is_refused():
    from mmdet.structures import DetDataSample
    from segment_anything import SamPredictor

    from sam.prompted_detector import add_sam_masks
    from sam.sam_model import ZeroShotSetupError

    sample = DetDataSample(metainfo=dict(img_path="a.jpg", ori_shape=(8, 8)))
    with pytest.raises(ZeroShotSetupError, match="the detector predicted no boxes for a.jpg"):
        add_sam_masks(SamPredictor(tiny_sam()), sample)


def test_a_dataset_without_images_is_refused(tiny_set, tmp_path):
    ann = json.loads(tiny_set["ann"].read_text())
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps(dict(ann, images=[], annotations=[])))
    options = [f"test_dataloader.dataset.ann_file={empty}", f"test_evaluator.ann_file={empty}"]
    with pytest.raises(SystemExit) as error:
        _run(tiny_set, tmp_path / "work", TINY_SAM, tiny_set["sam"], "--cfg-options", *options)
    assert "has no images" in str(error.value) and str(empty) in str(error.value)


def test_config_wraps_the_detector_and_keeps_the_output_root(tiny_set, tmp_path, monkeypatch):
    monkeypatch.setenv("INTERNIMAGE_OUTPUT", str(tmp_path / "output"))
    script = _script()
    cfg = script.build_cfg(script.parse_args([str(tiny_set["config"]), str(tiny_set["detector"]),
                                              str(tiny_set["sam"]), "--sam_type", TINY_SAM]))
    assert cfg.model.type == "SamPromptedDetector" and cfg.model.detector.type == "DINO"
    assert cfg.model.detector_checkpoint == str(tiny_set["detector"]) and cfg.load_from is None
    assert cfg.model.sam_checkpoint == str(tiny_set["sam"]) and cfg.model.sam_type == TINY_SAM
    assert list(cfg.test_evaluator.metric) == ["bbox", "segm"]  # the default --eval
    assert cfg.work_dir == str(tmp_path / "output" / "work_dirs" / "dino_t_tiny")


_DISTRIBUTED_RUNNER = """
import sys
sys.path.insert(0, {tests!r})
import importlib.util
from sam_testutils import TINY_SAM, tiny_sam
from mmengine.config import Config
from sam import sam_model
sam_model.SAM_BUILDERS[TINY_SAM] = tiny_sam
Config.pretty_text = property(lambda self: str(self.to_dict()))  # as _fast_config_text
spec = importlib.util.spec_from_file_location("sam_main", {script!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
module.main(sys.argv[1:])
"""


@pytest.mark.slow
def test_two_processes_give_the_single_process_predictions(tiny_set, tmp_path):
    """torchrun --nproc_per_node 2 ... --launcher pytorch on CPUs (gloo): each process takes
    part of the images; the gathered predictions are those of one process."""
    runner = tmp_path / "run_sam.py"
    runner.write_text(_DISTRIBUTED_RUNNER.format(tests=str(Path(__file__).parent),
                                                 script=str(REPO / "sam" / "main_zero_shot_instance_seg.py")))
    common = [str(tiny_set[k]) for k in ("config", "detector", "sam")] + ["--sam_type", TINY_SAM]
    single, double = tmp_path / "single.pkl", tmp_path / "double.pkl"
    _script().main([*common, "--work-dir", str(tmp_path / "work1"), "--out", str(single)])
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", str(runner), *common, "--launcher", "pytorch",
                           "--work-dir", str(tmp_path / "work2"), "--out", str(double)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "over 2 CPU processes (gloo)" in proc.stdout
    with open(single, "rb") as f, open(double, "rb") as g:
        one, two = pickle.load(f), pickle.load(g)
    assert [r["img_id"] for r in one] == [r["img_id"] for r in two]
    for a, b in zip(one, two):
        assert torch.equal(a["pred_instances"]["bboxes"], b["pred_instances"]["bboxes"])
        assert [m["counts"] for m in a["pred_instances"]["masks"]] == \
            [m["counts"] for m in b["pred_instances"]["masks"]]
