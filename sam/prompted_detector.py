"""``SamPromptedDetector``: any mmdet detector, with each predicted box's mask drawn by
Segment Anything.

Per image, the detector's boxes (in the original image's pixels, as mmdet's ``predict``
rescales them) are one prompt batch for SAM, which sees the original photo resized to a
long side of ``image_encoder.img_size`` (1024) and padded square (``SamPredictor``'s own
transform), with one mask per box (``multimask_output=False``). Mask ``i`` belongs to box
``i`` and so to its label and score: the masks are ``pred_instances.masks``, which mmdet's
``CocoMetric`` groups per class with the boxes. A detector that draws masks itself (Mask
R-CNN) has them replaced."""

from __future__ import annotations

import mmcv
import numpy as np
import torch
from mmdet.models.detectors import BaseDetector
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.fileio import get as read_bytes
from mmengine.model import BaseModel
from mmengine.runner import load_checkpoint
from segment_anything import SamPredictor

from sam.sam_model import ZeroShotSetupError, build_sam


@MODELS.register_module()
class SamPromptedDetector(BaseModel):
    """``detector`` (an mmdet config dict) with the weights of ``detector_checkpoint`` (loaded
    as ``load_from`` would: mmengine's loader, through the repository's safe reader and the
    published-layout conversion), prompting a SAM of ``sam_type`` with the weights of
    ``sam_checkpoint``. ``backend_args``: how the original images are read (the dataset's
    ``LoadImageFromFile`` setting). Test-time only."""

    def __init__(self, detector: dict, sam_type: str, sam_checkpoint: str | None = None,
                 detector_checkpoint: str | None = None, backend_args: dict | None = None) -> None:
        super().__init__()
        self.sam = build_sam(sam_type, sam_checkpoint)  # first: a wrong checkpoint fails in seconds
        self.predictor = SamPredictor(self.sam)  # not a module: holds the embedding of one image
        self.backend_args = backend_args
        self.detector = MODELS.build(detector)
        if not isinstance(self.detector, BaseDetector):
            raise ZeroShotSetupError(f"the detector config builds a {type(self.detector).__name__}, not an "
                                     "mmdet detector (BaseDetector): it predicts no boxes to prompt SAM with")
        if detector_checkpoint is not None:
            load_checkpoint(self.detector, detector_checkpoint, map_location="cpu", logger="current")

    @torch.no_grad()
    def test_step(self, data: dict | tuple | list) -> list[DetDataSample]:
        """The detector's own preprocessing (normalise, pad, batch), then ``forward``."""
        return self._run_forward(self.detector.data_preprocessor(data, False), mode="predict")

    def forward(self, inputs: torch.Tensor, data_samples: list[DetDataSample] | None = None,
                mode: str = "predict") -> list[DetDataSample]:
        if mode != "predict":
            raise ValueError(f"SamPromptedDetector only predicts: mode must be 'predict', got {mode!r}")
        samples = self.detector.predict(inputs, data_samples)  # rescale=True: boxes in original pixels
        for sample in samples:
            add_sam_masks(self.predictor, sample, self.backend_args)
        return samples


def read_image(sample: DetDataSample, backend_args: dict | None = None) -> np.ndarray:
    """The sample's photo as SAM expects it: RGB, uint8, H x W x 3, decoded as mmdet's
    ``LoadImageFromFile`` does (so the same size, EXIF orientation applied)."""
    path = sample.metainfo.get("img_path")
    if not path:
        raise ZeroShotSetupError("a test sample has no img_path: SAM needs the original image file")
    image = mmcv.imfrombytes(read_bytes(path, backend_args=backend_args), flag="color", channel_order="rgb")
    if tuple(image.shape[:2]) != tuple(sample.ori_shape):
        raise ZeroShotSetupError(f"{path}: the image is {image.shape[1]}x{image.shape[0]} but the detector "
                                 f"saw it as {sample.ori_shape[1]}x{sample.ori_shape[0]} (ori_shape)")
    return image


@torch.no_grad()
def add_sam_masks(predictor: SamPredictor, sample: DetDataSample, backend_args: dict | None = None) -> None:
    """Sets ``sample.pred_instances.masks`` (N x H x W bool, original image size): SAM's mask
    for each of the N boxes of ``pred_instances.bboxes`` (original pixels), all in one prompt
    batch, one mask per box."""
    instances = sample.get("pred_instances")
    if instances is None or "bboxes" not in instances:
        raise ZeroShotSetupError(f"the detector predicted no boxes for {sample.metainfo.get('img_path')} "
                                 "(no pred_instances.bboxes): SAM needs a box detector's output")
    height, width = sample.ori_shape
    boxes = instances.bboxes
    if len(boxes) == 0:
        instances.masks = torch.zeros((0, height, width), dtype=torch.bool, device=boxes.device)
        return
    predictor.set_image(read_image(sample, backend_args), image_format="RGB")
    prompts = predictor.transform.apply_boxes_torch(boxes.float(), (height, width))
    masks, _, _ = predictor.predict_torch(None, None, boxes=prompts.to(predictor.device),
                                          multimask_output=False)
    predictor.reset_image()  # the embedding belongs to this image only
    instances.masks = masks[:, 0].to(boxes.device)
