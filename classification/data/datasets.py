"""Image-classification datasets: class folders, "relative_path label" list files and
iNaturalist-2018 json, read from the filesystem or straight out of a zip archive."""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Callable, Sequence

from PIL import Image
from torch.utils.data import Dataset

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class ZipReader:
    """Reads members of one zip archive. The archive is opened lazily and once per process:
    a handle opened in the parent must not be shared by forked DataLoader workers."""

    def __init__(self, path: str):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"zip archive not found: {path}")
        self.path = path
        self._handle: zipfile.ZipFile | None = None
        self._pid: int | None = None
        self._cache: dict[str, bytes] = {}  # DATA.CACHE_MODE full/part: members preloaded

    def _zip(self) -> zipfile.ZipFile:
        if self._handle is None or self._pid != os.getpid():
            self._handle = zipfile.ZipFile(self.path, "r")
            self._pid = os.getpid()
        return self._handle

    def names(self) -> list[str]:
        with zipfile.ZipFile(self.path, "r") as z:  # listing only: no handle kept
            return [n for n in z.namelist() if not n.endswith("/")]

    def read(self, name: str) -> bytes:
        cached = self._cache.get(name)
        return cached if cached is not None else self._zip().read(name)

    def preload(self, names: Sequence[str]) -> int:
        """Keeps these members' bytes in memory (DATA.CACHE_MODE); returns the bytes held."""
        for name in names:
            if name not in self._cache:
                self._cache[name] = self._zip().read(name)
        return sum(len(b) for b in self._cache.values())

    def __getstate__(self) -> dict:  # pickled into spawned workers without the open handle
        return {"path": self.path, "_handle": None, "_pid": None, "_cache": self._cache}


class ImageListDataset(Dataset):
    """``samples`` of (path, label): paths under ``root`` or members of ``zip_reader``."""

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        root: str = "",
        zip_reader: ZipReader | None = None,
        transform: Callable | None = None,
        classes: Sequence[str] | None = None,
        meta=None,
    ):
        """``meta``: optional tuple of (len(samples), F_k) tensors of per-image metadata (for
        iNat18: temporal (N, 4) and spatial (N, 3)); when given, items are
        ([image, *meta rows], target) -- the meta-former's input -- instead of (image, target)."""
        if meta is not None:
            meta = tuple(meta)
            for part in meta:
                if len(part) != len(samples):
                    raise ValueError(f"meta has {len(part)} rows for {len(samples)} samples")
        self.meta = meta
        self.samples = list(samples)
        self.targets = [label for _, label in self.samples]
        self.root = root
        self.zip_reader = zip_reader
        self._held: dict[str, bytes] = {}  # DATA.IMG_ON_MEMORY: image files preloaded
        self.transform = transform
        self.classes = list(classes) if classes is not None else None

    def __len__(self) -> int:
        return len(self.samples)

    def load_image(self, index: int) -> Image.Image:
        path, _ = self.samples[index]
        if self.zip_reader is not None:
            image = Image.open(io.BytesIO(self.zip_reader.read(path)))
        elif path in self._held:
            image = Image.open(io.BytesIO(self._held[path]))
        else:
            image = Image.open(os.path.join(self.root, path))
        return image.convert("RGB")

    def hold_in_memory(self, indices: Sequence[int]) -> None:
        """Keeps these samples' image files in memory (DATA.IMG_ON_MEMORY); zip archives
        preload through their reader instead."""
        if self.zip_reader is not None:
            self.zip_reader.preload([self.samples[i][0] for i in indices])
            return
        for i in indices:
            path = self.samples[i][0]
            with open(os.path.join(self.root, path), "rb") as f:
                self._held[path] = f.read()

    def __getitem__(self, index: int):
        image = self.load_image(index)
        if self.transform is not None:
            image = self.transform(image)
        if self.meta is not None:
            return [image, *(part[index] for part in self.meta)], self.samples[index][1]
        return image, self.samples[index][1]


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS)


def scan_class_folders(folder: str, classes: Sequence[str] | None = None) -> tuple[list, list[str]]:
    """(relative_path, label) for every image in ``folder/<class>/**``; classes sorted by name
    unless given (so a val split uses the train split's indices)."""
    if classes is None:
        classes = sorted(d.name for d in os.scandir(folder) if d.is_dir())
    index = {name: i for i, name in enumerate(classes)}
    samples = []
    for entry in sorted(d.name for d in os.scandir(folder) if d.is_dir()):
        if entry not in index:
            raise ValueError(f"{folder}: class folder {entry!r} is not a class of the train split")
        for dirpath, _, files in sorted(os.walk(os.path.join(folder, entry))):
            for name in sorted(files):
                if _is_image(name):
                    rel = os.path.relpath(os.path.join(dirpath, name), folder)
                    samples.append((rel, index[entry]))
    return samples, list(classes)


def scan_zip_class_folders(
    names: Sequence[str], classes: Sequence[str] | None = None
) -> tuple[list, list[str]]:
    """Like ``scan_class_folders`` for zip members named ``<class>/<...>/<image>``."""
    images = [n for n in names if _is_image(n) and "/" in n]
    found = sorted({n.split("/", 1)[0] for n in images})
    if classes is None:
        classes = found
    index = {name: i for i, name in enumerate(classes)}
    unknown = [c for c in found if c not in index]
    if unknown:
        raise ValueError(f"zip class folders {unknown} are not classes of the train split")
    return sorted((n, index[n.split("/", 1)[0]]) for n in images), list(classes)


def parse_list_lines(lines: Sequence[str], source: str) -> list[tuple[str, int]]:
    """Parses "relative_path label" lines (the path may contain spaces; blank lines skipped)."""
    samples = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        path, _, label = line.rpartition(" ")
        try:
            samples.append((path.strip(), int(label)))
        except ValueError:
            raise ValueError(f"{source}:{number}: expected 'relative_path label', got {line!r}") from None
        if not path.strip():
            raise ValueError(f"{source}:{number}: expected 'relative_path label', got {line!r}")
    return samples


def read_list_file(path: str) -> list[tuple[str, int]]:
    with open(path) as f:
        return parse_list_lines(f.read().splitlines(), path)


def read_inat_json(path: str) -> list[tuple[str, int]]:
    """(file_name, category_id) from an iNaturalist json (images + annotations)."""
    with open(path) as f:
        data = json.load(f)
    try:
        files = {image["id"]: image["file_name"] for image in data["images"]}
        labels = {a["image_id"]: int(a["category_id"]) for a in data.get("annotations", [])}
    except (KeyError, TypeError) as error:
        raise ValueError(f"{path}: not an iNaturalist annotation file ({error})") from None
    missing = [i for i in files if i not in labels]
    if missing:
        raise ValueError(f"{path}: {len(missing)} images have no annotation (e.g. id {missing[0]})")
    return [(files[i], labels[i]) for i in sorted(files)]


INAT_META_KEYS = {"lat": ("latitude", "lat"), "lon": ("longitude", "lon"), "date": ("date",)}


def _inat_meta_fields(entry: dict) -> dict:
    return {name: next((entry[k] for k in keys if k in entry), None) for name, keys in INAT_META_KEYS.items()}


def read_inat_meta(path: str, locations_path: str | None = None):
    """Per-image metadata of an iNaturalist json, in ``read_inat_json``'s order: the
    meta-former's (temporal (N, 4), spatial (N, 3)) float tensors (``encode_temporal`` /
    ``encode_spatial``). Fields come from the ``images`` entries (``latitude``/``longitude``/
    ``date``; ``lat``/``lon`` also accepted), or from a separate locations file (a list of
    {id, lat, lon, date}, as released for iNat 2018) when ``locations_path`` is given; an
    entry there fills what the images entry lacks. Missing values give zero rows; None when
    no image has a date or location at all (items stay (image, target), which the meta-former
    reads as zero encodings too)."""
    import torch

    from ..models.intern_image_meta_former import encode_spatial, encode_temporal

    with open(path) as f:
        data = json.load(f)
    fields = {image["id"]: _inat_meta_fields(image) for image in data["images"]}
    if locations_path:
        with open(locations_path) as f:
            extra = json.load(f)
        if not isinstance(extra, list):
            raise ValueError(f"{locations_path}: expected a list of {{id, lat, lon, date}} entries")
        by_id = {str(e["id"]): _inat_meta_fields(e) for e in extra}
        for image_id, current in fields.items():
            for name, value in by_id.get(str(image_id), {}).items():
                if current[name] is None:
                    current[name] = value
    if not any(v is not None for entry in fields.values() for v in entry.values()):
        return None
    order = sorted(fields)
    temporal = [encode_temporal(fields[i]["date"]) for i in order]
    spatial = [encode_spatial(fields[i]["lat"], fields[i]["lon"]) for i in order]
    if not order:
        return torch.zeros(0, 4), torch.zeros(0, 3)
    return torch.stack(temporal), torch.stack(spatial)


def check_labels(samples: Sequence[tuple[str, int]], num_classes: int, source: str) -> None:
    """Rejects an empty dataset and labels outside [0, num_classes)."""
    if not samples:
        raise ValueError(f"{source}: no images found")
    for path, label in samples:
        if not 0 <= label < num_classes:
            raise ValueError(
                f"{source}: label {label} of {path!r} is outside [0, MODEL.NUM_CLASSES={num_classes})"
            )
