"""Multi-scale + flip test pipelines for mmseg's ``SegTTAModel`` (``test.py --aug-test``).

The published configs scaled the *test scale* (e.g. (2048, 512)) by each ratio
(mmcv 1.x ``MultiScaleFlipAug(img_scale, img_ratios)``); mmseg 1.x's stock
``tta_pipeline`` rescales the raw image instead. This builds the published semantics from a
config's own single-scale test pipeline, so every config gets the right scales."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

DEFAULT_RATIOS: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def build_tta_pipeline(test_pipeline: Sequence[Mapping], ratios: Sequence[float] = DEFAULT_RATIOS,
                       flip: bool = True) -> list[dict]:
    """``[<steps before Resize>, TestTimeAug([Resize x ratios], [no flip, flip], <steps after>)]``.

    ``test_pipeline`` must hold one ``Resize`` (with ``scale`` or ``scale_factor``)."""
    steps = [dict(copy.deepcopy(step)) for step in test_pipeline]
    resize_at = [i for i, step in enumerate(steps) if step.get("type") == "Resize"]
    if len(resize_at) != 1:
        raise ValueError(f"the test pipeline needs exactly one Resize step to scale, found {len(resize_at)}: "
                         f"{[step.get('type') for step in steps]}")
    if not ratios or any(r <= 0 for r in ratios):
        raise ValueError(f"aug-test ratios must be positive, got {list(ratios)}")
    i = resize_at[0]
    resize = steps[i]
    if resize.get("scale") is not None:
        w, h = resize["scale"]
        scales = [dict(resize, scale=(int(w * r), int(h * r))) for r in ratios]
    else:
        base = resize.get("scale_factor", 1.0)
        scales = [dict(resize, scale_factor=base * r) for r in ratios]
    flips = [dict(type="RandomFlip", prob=0.0, direction="horizontal")]
    if flip:
        flips.append(dict(type="RandomFlip", prob=1.0, direction="horizontal"))
    branches = [scales, flips] + [[step] for step in steps[i + 1:]]
    return steps[:i] + [dict(type="TestTimeAug", transforms=branches)]
