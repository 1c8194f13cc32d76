"""Classification data: datasets (class folders, list files, zip archives, iNaturalist json),
transforms and loaders."""

from .build import DATASETS, build_dataset, build_loader, build_mixup
from .datasets import ImageListDataset, ZipReader
from .samplers import ShardedEvalSampler
from .transforms import build_transform

__all__ = [
    "DATASETS",
    "ImageListDataset",
    "ShardedEvalSampler",
    "ZipReader",
    "build_dataset",
    "build_loader",
    "build_mixup",
    "build_transform",
]
