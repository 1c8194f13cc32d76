"""Classification data: datasets (class folders, list files, zip archives, iNaturalist json,
the ImageNet-22K fall11_whole layout), transforms, loaders and the 22K -> 1K class map."""

from .build import DATASETS, build_dataset, build_loader, build_mixup, model_num_classes, resolve_num_classes
from .datasets import ImageListDataset, ZipReader
from .imagenet22k import MAP22KTO1K_FILE, map22kto1k_index, read_imagenet22k_split
from .samplers import ShardedEvalSampler
from .transforms import build_transform

__all__ = [
    "DATASETS",
    "MAP22KTO1K_FILE",
    "ImageListDataset",
    "ShardedEvalSampler",
    "ZipReader",
    "build_dataset",
    "build_loader",
    "build_mixup",
    "build_transform",
    "map22kto1k_index",
    "model_num_classes",
    "read_imagenet22k_split",
    "resolve_num_classes",
]
