"""Print (and save) the outputs of named InternImage submodules for one image.

    python classification/extract_feature.py --cfg classification/configs/internimage_t_1k_224.yaml \
        --img photo.jpg --keys patch_embed levels.0.downsample [--resume CKPT] [--save] [--output DIR]

Keys are module paths as in ``model.named_modules()`` (``patch_embed``, ``levels.2.blocks.0.dcn``,
``conv_head``, ...). The image is resized to DATA.IMG_SIZE (no crop) and normalised with the
config's mean/std."""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `classification` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Sequence  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402

from classification.config import load_config_file  # noqa: E402
from classification.models import build_model  # noqa: E402
from classification.models.checkpoint import (  # noqa: E402
    add_trust_argument,
    apply_trust_argument,
    load_pretrained,
)
from classification.output_root import default_output  # noqa: E402

_PIL_MODES = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
              "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Extract intermediate InternImage features of one image")
    parser.add_argument("--cfg", required=True, metavar="FILE", help="config yaml")
    parser.add_argument("--img", required=True, metavar="IMAGE", help="image file")
    parser.add_argument("--keys", required=True, nargs="+", metavar="MODULE_PATH",
                        help="submodules to hook, e.g. patch_embed levels.0.downsample")
    parser.add_argument("--resume", default="", metavar="CKPT", help="weights to load (.pth)")
    add_trust_argument(parser)  # --trust-checkpoint
    parser.add_argument("--save", action="store_true", help="save the features with torch.save")
    parser.add_argument("--output", default=None, metavar="DIR",
                        help="folder for the saved features (default: $INTERNIMAGE_OUTPUT/features, "
                             "outside the checkout; see classification/output_root.py)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    parser.add_argument("--opts", nargs="+", default=[], metavar="KEY VALUE",
                        help="config overrides, e.g. MODEL.INTERN_IMAGE.CORE_OP DCNv3_pytorch")
    return parser.parse_args(argv)


def load_image(path: str | Path, size: int, interpolation: str = "bicubic",
               mean: Sequence[float] = (0.485, 0.456, 0.406),
               std: Sequence[float] = (0.229, 0.224, 0.225)) -> torch.Tensor:
    """The image as a normalised (1, 3, size, size) float tensor."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"image file {str(path)!r} does not exist")
    image = Image.open(path).convert("RGB").resize((size, size), _PIL_MODES.get(interpolation,
                                                                              Image.Resampling.BICUBIC))
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    x = (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    return x.unsqueeze(0)


def resolve_modules(model: nn.Module, keys: Sequence[str]) -> dict[str, nn.Module]:
    """The submodule of every key; a ``KeyError`` listing the valid top-level names otherwise."""
    modules = dict(model.named_modules())
    found = {}
    for key in keys:
        if key not in modules or key == "":
            top = [name for name, _ in model.named_children()]
            raise KeyError(f"no submodule {key!r} in {type(model).__name__}; valid top-level names: "
                           f"{', '.join(top)} (nested paths use dots, e.g. levels.0.downsample)")
        found[key] = modules[key]
    return found


def _detach(output: object) -> object:
    if isinstance(output, torch.Tensor):
        return output.detach().cpu()
    if isinstance(output, (tuple, list)):
        return type(output)(_detach(o) for o in output)
    return output


def _shape(output: object) -> str:
    if isinstance(output, torch.Tensor):
        return str(tuple(output.shape))
    if isinstance(output, (tuple, list)):
        return "[" + ", ".join(_shape(o) for o in output) + "]"
    return type(output).__name__


@torch.no_grad()
def extract_features(model: nn.Module, image: torch.Tensor, keys: Sequence[str]) -> dict[str, object]:
    """Runs ``model`` on ``image`` and returns the output of each hooked submodule (on CPU).
    A module that runs several times keeps its last output."""
    outputs: dict[str, object] = {}
    handles = []
    for key, module in resolve_modules(model, keys).items():
        def hook(_module: nn.Module, _inputs: object, output: object, key: str = key) -> None:
            outputs[key] = _detach(output)
        handles.append(module.register_forward_hook(hook))
    try:
        model(image)
    finally:
        for handle in handles:
            handle.remove()
    return outputs


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    args = parse_args(argv)
    apply_trust_argument(args.trust_checkpoint)
    config = load_config_file(args.cfg, args.opts)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = build_model(config)
    if args.resume:
        load_pretrained(model, args.resume, strict=True,
                        map22kto1k_path=config.DATA.MAP22KTO1K_PATH or None)
    else:
        warnings.warn(f"no --resume: extracting features of {config.MODEL.NAME or 'the model'} with RANDOM "
                      "weights (fine for checking shapes, meaningless as features)", UserWarning,
                      stacklevel=2)
    model.to(device).eval()
    resolve_modules(model, args.keys)  # fail on a bad key before reading the image
    image = load_image(args.img, config.DATA.IMG_SIZE, config.DATA.INTERPOLATION, config.AUG.MEAN,
                       config.AUG.STD).to(device)
    features = extract_features(model, image, args.keys)
    for key in args.keys:
        print(f"{key}: {_shape(features[key])}" if key in features else f"{key}: (not run by forward)")
    if args.save:
        out_dir = Path(args.output or default_output("features"))
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{Path(args.img).stem}_features.pth"
        torch.save(features, path)
        print(f"saved {len(features)} features to {path}")
    return features


if __name__ == "__main__":
    main()
