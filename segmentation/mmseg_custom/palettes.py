"""Class names and colours for ``image_demo.py --palette``: mmseg's own tables
(``mmseg.utils.get_classes``/``get_palette``) under the names the published demo used."""

from __future__ import annotations

from mmseg.utils import get_classes, get_palette

# demo name -> mmseg dataset alias
PALETTES: dict[str, str] = {"ade20k": "ade20k", "cityscapes": "cityscapes", "cocostuff": "cocostuff"}


def palette_meta(name: str) -> dict[str, list]:
    """``dict(classes=..., palette=...)`` (a model's ``dataset_meta``) for a demo palette name."""
    if name not in PALETTES:
        raise ValueError(f"unknown palette {name!r}; choose one of {', '.join(PALETTES)}")
    alias = PALETTES[name]
    classes, palette = list(get_classes(alias)), [list(c) for c in get_palette(alias)]
    if len(classes) != len(palette):  # guards against an alias mix-up in mmseg's tables
        raise RuntimeError(f"mmseg's {alias} tables disagree: {len(classes)} classes, {len(palette)} colours")
    return dict(classes=classes, palette=palette)
