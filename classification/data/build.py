"""Dataset layouts under DATA.DATA_PATH and the train / val loaders."""

from __future__ import annotations

import os

import torch
from timm.data import Mixup
from torch.utils.data import DataLoader, DistributedSampler
from yacs.config import CfgNode

from .datasets import (
    ImageListDataset,
    ZipReader,
    check_labels,
    parse_list_lines,
    read_inat_json,
    read_inat_meta,
    read_list_file,
    scan_class_folders,
    scan_zip_class_folders,
)
from .imagenet22k import NUM_CLASSES_1K, NUM_CLASSES_22K, is_imagenet22k_layout, read_imagenet22k_split
from .samplers import ShardedEvalSampler
from .transforms import build_transform

DATASETS = ("imagenet", "imagenet22k", "inat18")
# Classes of the published datasets: a config that leaves MODEL.NUM_CLASSES at its default
# (1000) gets these, as the published loader sets them (the iNat18 yaml relies on it).
DATASET_NUM_CLASSES = {"imagenet22k": NUM_CLASSES_22K, "inat18": 8142}


def model_num_classes(config: CfgNode) -> int:
    """Outputs of the model's head: MODEL.NUM_CLASSES, except 21841 with EVAL_22K_TO_1K and
    the dataset's own count when MODEL.NUM_CLASSES is left at 1000 for imagenet22K / inat18."""
    if config.get("EVAL_22K_TO_1K", False):
        if config.MODEL.NUM_CLASSES not in (NUM_CLASSES_1K, NUM_CLASSES_22K):
            raise ValueError(f"EVAL_22K_TO_1K evaluates a {NUM_CLASSES_22K}-class model; "
                             f"MODEL.NUM_CLASSES is {config.MODEL.NUM_CLASSES}")
        return NUM_CLASSES_22K
    name = config.DATA.DATASET.lower()
    if config.MODEL.NUM_CLASSES == NUM_CLASSES_1K and name in DATASET_NUM_CLASSES:
        return DATASET_NUM_CLASSES[name]
    return config.MODEL.NUM_CLASSES


def label_num_classes(config: CfgNode) -> int:
    """Labels lie in [0, this): the model's classes, or 1000 when EVAL_22K_TO_1K maps its
    21841 outputs to ImageNet-1K."""
    return NUM_CLASSES_1K if config.get("EVAL_22K_TO_1K", False) else model_num_classes(config)


def resolve_num_classes(config: CfgNode) -> int:
    """Sets MODEL.NUM_CLASSES to ``model_num_classes(config)`` (the config stays frozen if
    it was) and returns it."""
    classes = model_num_classes(config)
    if classes != config.MODEL.NUM_CLASSES:
        frozen = config.is_frozen()
        config.defrost()
        config.MODEL.NUM_CLASSES = classes
        if frozen:
            config.freeze()
    return classes


def _split_name(is_train: bool) -> str:
    return "train" if is_train else "val"


def _list_file(root: str, split: str) -> str | None:
    for name in (f"{split}.txt", f"{split}_map.txt"):
        if os.path.isfile(os.path.join(root, name)):
            return os.path.join(root, name)
    return None


def _zip_members(names: list[str], split: str) -> list[tuple[str, str]]:
    """(name relative to the split, member name): members may sit under a ``<split>/`` folder."""
    prefix = f"{split}/"
    if any(n.startswith(prefix) for n in names):
        return [(n[len(prefix) :], n) for n in names if n.startswith(prefix)]
    return [(n, n) for n in names]


def _zip_class_samples(reader: ZipReader, split: str, classes: list[str] | None) -> tuple[list, list[str]]:
    members = _zip_members(reader.names(), split)
    rel_to_member = dict(members)
    samples, classes = scan_zip_class_folders([rel for rel, _ in members], classes)
    return [(rel_to_member[rel], label) for rel, label in samples], classes


def _train_classes(config: CfgNode) -> list[str] | None:
    """Class names of the train split's folders (so val shares its indices); None when the
    train split is not a class-folder layout."""
    root = config.DATA.DATA_PATH
    if config.DATA.ZIP_MODE:
        path = os.path.join(root, "train.zip")
        if os.path.isfile(path) and _list_file(root, "train") is None:
            reader = ZipReader(path)
            if not any(n in ("train.txt", "train_map.txt") for n in reader.names()):
                return _zip_class_samples(reader, "train", None)[1]
        return None
    folder = os.path.join(root, "train")
    if _list_file(root, "train") is None and os.path.isdir(folder):
        return sorted(d.name for d in os.scandir(folder) if d.is_dir())
    return None


def _imagenet_samples(
    config: CfgNode, split: str
) -> tuple[list, str, ZipReader | None, list[str] | None, str]:
    """(samples, root, zip reader, classes, source description) of an imagenet-style split."""
    root = config.DATA.DATA_PATH
    list_file = _list_file(root, split)
    classes = _train_classes(config) if split != "train" else None
    if config.DATA.ZIP_MODE:
        reader = ZipReader(os.path.join(root, f"{split}.zip"))
        if list_file:  # a list file beside the archive names members of the archive
            return read_list_file(list_file), "", reader, None, list_file
        names = reader.names()
        for name in (f"{split}.txt", f"{split}_map.txt"):
            if name in names:
                lines = reader.read(name).decode().splitlines()
                return parse_list_lines(lines, f"{reader.path}:{name}"), "", reader, None, reader.path
        samples, classes = _zip_class_samples(reader, split, classes)
        return samples, "", reader, classes, reader.path
    if list_file:
        return read_list_file(list_file), root, None, None, list_file
    folder = os.path.join(root, split)
    if os.path.isdir(folder):
        samples, classes = scan_class_folders(folder, classes)
        return samples, folder, None, classes, folder
    raise FileNotFoundError(
        f"no {split} split under DATA.DATA_PATH {root!r}: expected a class-folder "
        f"directory {split}/ or a list file {split}.txt"
    )


def build_dataset(is_train: bool, config: CfgNode) -> ImageListDataset:
    """The train or val split of DATA.DATASET under DATA.DATA_PATH, with its transform."""
    root = config.DATA.DATA_PATH
    name = config.DATA.DATASET.lower()
    if name not in DATASETS:
        raise ValueError(
            f"DATA.DATASET must be one of imagenet, imagenet22K, inat18; got {config.DATA.DATASET!r}"
        )
    if not root:
        raise ValueError("DATA.DATA_PATH is not set (pass --data-path DIR)")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"DATA.DATA_PATH {root!r} is not a directory")
    split = _split_name(is_train)
    meta = None
    if name == "inat18":
        if config.DATA.ZIP_MODE:
            raise ValueError("DATA.ZIP_MODE is not supported for inat18")
        source = os.path.join(root, f"{split}2018.json")
        if not os.path.isfile(source):
            raise FileNotFoundError(f"iNaturalist annotations not found: {source}")
        samples, reader, classes, data_root = read_inat_json(source), None, None, root
        # date/location metadata (for MODEL.TYPE intern_image_meta_former): from the images entries
        # or a <split>2018_locations.json beside them; items become ([image, temporal, spatial], target)
        locations = os.path.join(root, f"{split}2018_locations.json")
        meta = read_inat_meta(source, locations if os.path.isfile(locations) else None)
    elif name == "imagenet22k" and is_imagenet22k_layout(root):
        if config.DATA.ZIP_MODE:
            raise ValueError("DATA.ZIP_MODE is not supported for the ImageNet-22K fall11_whole layout")
        samples, data_root, classes, source = read_imagenet22k_split(root, split)
        reader = None
    else:
        samples, data_root, reader, classes, source = _imagenet_samples(config, split)
    check_labels(samples, label_num_classes(config), source)
    return ImageListDataset(
        samples,
        root=data_root,
        zip_reader=reader,
        transform=build_transform(is_train, config),
        classes=classes,
        meta=meta,
    )


def build_mixup(config: CfgNode) -> Mixup | None:
    """timm Mixup/CutMix (with label smoothing folded into the soft targets), or None when off."""
    aug = config.AUG
    if not (aug.MIXUP > 0 or aug.CUTMIX > 0 or aug.CUTMIX_MINMAX is not None):
        return None
    if config.DATA.BATCH_SIZE % 2:
        raise ValueError(f"mixup/cutmix needs an even DATA.BATCH_SIZE, got {config.DATA.BATCH_SIZE}")
    return Mixup(
        mixup_alpha=aug.MIXUP,
        cutmix_alpha=aug.CUTMIX,
        cutmix_minmax=aug.CUTMIX_MINMAX,
        prob=aug.MIXUP_PROB,
        switch_prob=aug.MIXUP_SWITCH_PROB,
        mode=aug.MIXUP_MODE,
        label_smoothing=config.MODEL.LABEL_SMOOTHING,
        num_classes=config.MODEL.NUM_CLASSES,
    )


def _preload_zip(dataset: ImageListDataset, config: CfgNode, rank: int, world_size: int) -> None:
    """DATA.CACHE_MODE in zip mode, as published: 'full' keeps every image of the archive in
    memory, 'part' this rank's share (images rank, rank + world_size, ...); 'no' reads on
    demand. DATA.IMG_ON_MEMORY (any layout) holds this rank's share of the image files.
    (Unlike the published 'part', each rank still samples the whole split.)"""
    if dataset.zip_reader is not None and config.DATA.CACHE_MODE != "no":
        step, first = (1, 0) if config.DATA.CACHE_MODE == "full" else (world_size, rank)
        dataset.hold_in_memory(range(first, len(dataset), step))
    if config.DATA.IMG_ON_MEMORY:  # published: each rank holds its share of the image files
        dataset.hold_in_memory(range(rank, len(dataset), world_size))


def build_loader(config: CfgNode, train: bool = True, rank: int | None = None, world_size: int | None = None):
    """(dataset_train, dataset_val, loader_train, loader_val, mixup_fn). With ``train=False``
    (eval / throughput) the train entries are None. Rank and world size default to the
    current process group. MODEL.NUM_CLASSES is set to the dataset's (``resolve_num_classes``)
    first, as the published loader does, so build the model after this."""
    from ..utils.distributed import get_rank, get_world_size

    resolve_num_classes(config)
    rank = get_rank() if rank is None else rank
    world_size = get_world_size() if world_size is None else world_size
    batch_size = config.DATA.BATCH_SIZE
    if batch_size < 1:
        raise ValueError(f"DATA.BATCH_SIZE must be >= 1, got {batch_size}")
    common = dict(
        num_workers=config.DATA.NUM_WORKERS,
        pin_memory=bool(config.DATA.PIN_MEMORY and torch.cuda.is_available()),
    )
    dataset_val = build_dataset(False, config)
    _preload_zip(dataset_val, config, rank, world_size)
    loader_val = DataLoader(
        dataset_val,
        batch_size=batch_size,
        shuffle=False,
        drop_last=False,
        sampler=ShardedEvalSampler(len(dataset_val), rank, world_size),
        **common,
    )
    if not train:
        return None, dataset_val, None, loader_val, None
    dataset_train = build_dataset(True, config)
    _preload_zip(dataset_train, config, rank, world_size)
    # DistributedSampler also in a single process: its shuffle depends only on (SEED, epoch),
    # so a resumed run sees the same order it would have seen.
    sampler = DistributedSampler(
        dataset_train, num_replicas=world_size, rank=rank, shuffle=True, seed=config.SEED, drop_last=False
    )
    loader_train = DataLoader(dataset_train, batch_size=batch_size, sampler=sampler, drop_last=True, **common)
    if len(loader_train) == 0:
        raise ValueError(
            f"the train split has {len(sampler)} images per process, fewer than "
            f"DATA.BATCH_SIZE={batch_size}: no full batch to train on"
        )
    return dataset_train, dataset_val, loader_train, loader_val, build_mixup(config)
