"""ImageNet-22K as the published trainer lays it out, and the 22K -> 1K class map.

Layout under DATA.DATA_PATH (``--dataset imagenet22K``)::

    fall11_whole/<wnid>/<image>.JPEG
    ILSVRC2011fall_whole_map_train.txt     "<wnid>/<image>.JPEG <label>" per line
    ILSVRC2011fall_whole_map_val.txt
    22k_class_to_idx.json                  {wnid: class index} of the 21841 classes

A list line's label is the class index, or the wnid itself (then looked up in the json).
List paths are relative to ``fall11_whole/`` (a leading ``fall11_whole/`` is accepted too).
The json and the lists may also sit in ``meta_data/`` under the root.

``map22kto1k.txt`` (shipped in this package, the published table): line k is the row of a
21841-class classifier that corresponds to ImageNet-1K class k."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

IMAGE_FOLDER = "fall11_whole"
LIST_FILES = {"train": "ILSVRC2011fall_whole_map_train.txt", "val": "ILSVRC2011fall_whole_map_val.txt"}
CLASS_TO_IDX_FILE = "22k_class_to_idx.json"
NUM_CLASSES_22K = 21841
NUM_CLASSES_1K = 1000
MAP22KTO1K_FILE = Path(__file__).resolve().with_name("map22kto1k.txt")
_META_FOLDER = "meta_data"


def map22kto1k_index(path: str | os.PathLike | None = None) -> torch.Tensor:
    """The 1000 row indices of the 22K classifier, in ImageNet-1K class order, from ``path``
    (None or '' = the map shipped in the package)."""
    from ..models.checkpoint import read_class_map  # models import data lazily too: no cycle

    return read_class_map(path or MAP22KTO1K_FILE, NUM_CLASSES_22K)


def _find(root: str, name: str) -> str | None:
    for folder in (root, os.path.join(root, _META_FOLDER)):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


def is_imagenet22k_layout(root: str) -> bool:
    """True when ``root`` looks like the published ImageNet-22K layout."""
    return os.path.isdir(os.path.join(root, IMAGE_FOLDER)) or any(
        _find(root, name) for name in LIST_FILES.values())


def read_class_to_idx(path: str) -> dict[str, int]:
    """{wnid: index} of a ``22k_class_to_idx.json``."""
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in data.items()):
        raise ValueError(f"{path}: expected a json object mapping WordNet ids to class indices")
    return data


def read_imagenet22k_split(root: str, split: str) -> tuple[list[tuple[str, int]], str, list[str] | None, str]:
    """(samples as (path under fall11_whole, label), image folder, class names by index or
    None, list file) of the ``train`` or ``val`` split."""
    if split not in LIST_FILES:
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    list_path = _find(root, LIST_FILES[split])
    if list_path is None:
        raise FileNotFoundError(
            f"ImageNet-22K list {LIST_FILES[split]} not found in DATA.DATA_PATH {root!r} (or its "
            f"{_META_FOLDER}/): the layout is {IMAGE_FOLDER}/<wnid>/*.JPEG with "
            f"{LIST_FILES['train']} / {LIST_FILES['val']} lists and {CLASS_TO_IDX_FILE}")
    json_path = _find(root, CLASS_TO_IDX_FILE)
    class_to_idx = read_class_to_idx(json_path) if json_path else None
    samples = []
    with open(list_path) as f:
        for number, line in enumerate(f, 1):
            fields = line.strip().rsplit(None, 1)
            if not fields:
                continue
            if len(fields) != 2:
                raise ValueError(
                    f"{list_path}:{number}: expected '<wnid>/<image> <label>', got {line.strip()!r}")
            path, token = fields
            if path.startswith(IMAGE_FOLDER + "/"):
                path = path[len(IMAGE_FOLDER) + 1:]
            wnid = path.split("/", 1)[0]
            if token.lstrip("-").isdigit():
                label = int(token)
                # a list written in another class order would silently mislabel: catch it here
                if class_to_idx is not None and wnid in class_to_idx and class_to_idx[wnid] != label:
                    raise ValueError(
                        f"{list_path}:{number}: label {label} of {path!r}, but {json_path} gives "
                        f"{wnid} index {class_to_idx[wnid]}")
            else:
                if class_to_idx is None:
                    raise FileNotFoundError(
                        f"{list_path}:{number}: label {token!r} is a class name; {CLASS_TO_IDX_FILE} "
                        f"(wnid -> index) must sit in {root!r}")
                if token not in class_to_idx:
                    raise ValueError(f"{list_path}:{number}: class {token!r} is not in {json_path}")
                label = class_to_idx[token]
            samples.append((path, label))
    classes = None
    if class_to_idx is not None:
        by_index = sorted(class_to_idx.items(), key=lambda item: item[1])
        if [index for _, index in by_index] == list(range(len(by_index))):
            classes = [wnid for wnid, _ in by_index]
    return samples, os.path.join(root, IMAGE_FOLDER), classes, list_path


__all__ = ["CLASS_TO_IDX_FILE", "IMAGE_FOLDER", "LIST_FILES", "MAP22KTO1K_FILE", "NUM_CLASSES_1K",
           "NUM_CLASSES_22K", "is_imagenet22k_layout", "map22kto1k_index", "read_class_to_idx",
           "read_imagenet22k_split"]
