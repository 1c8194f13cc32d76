"""Datasets the published configs use that mmseg 1.2 does not ship.

mmseg 1.2's ``NYUDataset`` is the depth-estimation set, and its Mapillary datasets keep
Mapillary's own 66/124 classes; the published Mapillary pre-training maps Mapillary
Vistas v1.2 labels onto Cityscapes' 19 train ids so the decoder transfers to Cityscapes."""

from __future__ import annotations

from typing import ClassVar

from mmseg.datasets import ADE20KDataset, BaseSegDataset, CityscapesDataset
from mmseg.registry import DATASETS

# NYU-Depth-V2 40-class segmentation (Gupta et al. 2013 grouping of the raw labels).
NYU40_CLASSES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror",
    "floor mat", "clothes", "ceiling", "books", "refridgerator", "television", "paper", "towel",
    "shower curtain", "box", "whiteboard", "person", "night stand", "toilet", "sink", "lamp",
    "bathtub", "bag", "otherstructure", "otherfurniture", "otherprop")


def _nyu40_palette() -> list[list[int]]:
    # the published NYU colours are the first 40 of ADE20K's
    return [list(c) for c in ADE20KDataset.METAINFO["palette"][:len(NYU40_CLASSES)]]


@DATASETS.register_module(force=True)
class NYUDepthV2Dataset(BaseSegDataset):
    """NYU-Depth-V2 semantic segmentation, 40 classes. Label maps store 0 for
    "unlabelled" and 1..40 for the classes, hence ``reduce_zero_label=True`` (0 -> 255,
    k -> k-1). The published layout is ``image/*.png``, ``label40/*.png`` and split files
    ``train.txt``/``test.txt`` listing file stems (``ann_file``)."""

    METAINFO: ClassVar[dict] = dict(classes=NYU40_CLASSES, palette=_nyu40_palette())

    def __init__(self, img_suffix: str = ".png", seg_map_suffix: str = ".png",
                 reduce_zero_label: bool = True, **kwargs) -> None:
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix,
                         reduce_zero_label=reduce_zero_label, **kwargs)


# Mapillary Vistas v1.2 label ids (66 classes) grouped into Cityscapes' 19 train ids.
MAPILLARY_TO_CITYSCAPES: tuple[tuple[int, ...], ...] = (
    (13, 24, 41),  # road <- road, lane marking (general), manhole
    (2, 15),       # sidewalk <- curb, sidewalk
    (17,),         # building
    (6,),          # wall
    (3,),          # fence
    (45, 47),      # pole <- pole, utility pole
    (48,),         # traffic light
    (50,),         # traffic sign <- traffic sign (front)
    (30,),         # vegetation
    (29,),         # terrain
    (27,),         # sky
    (19,),         # person
    (20, 21, 22),  # rider <- bicyclist, motorcyclist, other rider
    (55,),         # car
    (61,),         # truck
    (54,),         # bus
    (58,),         # train <- on rails
    (57,),         # motorcycle
    (52,),         # bicycle
)
MAPILLARY_NUM_CLASSES = 66
IGNORE_INDEX = 255


def mapillary_to_cityscapes_label_map() -> dict[int, int]:
    """Every Mapillary id -> its Cityscapes train id, 255 (ignored) for the rest."""
    label_map = dict.fromkeys(range(MAPILLARY_NUM_CLASSES), IGNORE_INDEX)
    for train_id, ids in enumerate(MAPILLARY_TO_CITYSCAPES):
        for mapillary_id in ids:
            label_map[mapillary_id] = train_id
    return label_map


@DATASETS.register_module(force=True)
class MapillaryCityscapesDataset(BaseSegDataset):
    """Mapillary Vistas (``*.jpg`` images, ``*.png`` v1.2 label ids) seen as a Cityscapes
    set: mmseg's ``LoadAnnotations`` applies ``label_map`` while loading, so every
    pipeline and the 19-class decode heads work unchanged."""

    METAINFO: ClassVar[dict] = dict(CityscapesDataset.METAINFO)

    def __init__(self, img_suffix: str = ".jpg", seg_map_suffix: str = ".png", **kwargs) -> None:
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, **kwargs)

    @classmethod
    def get_label_map(cls, new_classes=None) -> dict[int, int]:
        # BaseSegDataset derives label_map from a class subset; here it is the fixed
        # many-to-one Mapillary -> Cityscapes grouping (a class subset is not supported).
        if new_classes is not None and list(new_classes) != list(cls.METAINFO["classes"]):
            raise ValueError("MapillaryCityscapesDataset has the 19 Cityscapes classes; "
                             "metainfo cannot select a subset")
        return mapillary_to_cityscapes_label_map()
