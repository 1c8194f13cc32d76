"""Write a published InternImage ``.pth`` as a folder in the published Hugging Face layout.

    python classification/huggingface/convert.py --model_name internimage_t_1k_224 \
        --ckpt internimage_t_1k_224.pth --out hf/internimage_t_1k_224

The folder holds ``config.json`` (``model_type: internimage``, the published architecture
fields, ``architectures`` and ``auto_map`` as in the ``OpenGVLab/internimage_*`` repos),
``preprocessor_config.json`` (CLIP image processor: short side resized to the input size,
centre crop, bicubic, ImageNet mean/std) and ``model.safetensors`` (our weight names with
the ``model.`` prefix and ``layer_scale1/2``), i.e. what the published remote code reads and
what ``classification.huggingface`` loads natively. ``--model_name`` takes the ``.pth``
names and the three Hub names that differ. The folder is written next to ``--out`` under a
temporary name and renamed into place when complete."""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `classification` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Mapping, Sequence  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

from classification.models.checkpoint import read_state_dict  # noqa: E402
from classification.models.hub_layout import (  # noqa: E402  (no transformers import: a quick start)
    HUB_ARCHITECTURES,
    HUB_AUTO_MAP,
    HUB_CONFIG_FIELDS,
    to_hub_layout,
)
from classification.models.intern_image import InternImage  # noqa: E402
from classification.models.registry import (  # noqa: E402
    DEFAULT_DROP_PATH,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PUBLISHED,
    canonical_name,
)
from classification.models.variants import VARIANTS  # noqa: E402

_ARCH_DEFAULTS = dict(core_op="DCNv3", layer_scale=None, offset_scale=1.0, post_norm=False, mlp_ratio=4.0,
                      dw_kernel_size=None, res_post_norm=False, level2_post_norm=False,
                      level2_post_norm_block_ids=None, center_feature_scale=False, use_clip_projector=False,
                      remove_center=False, cls_scale=1.5, norm_layer="LN", act_layer="GELU",
                      drop_path_rate=0.0)


def hub_config(architecture: Mapping[str, Any], num_classes: int) -> dict[str, Any]:
    """The config.json content for an InternImage with these constructor arguments."""
    unknown = set(architecture) - set(HUB_CONFIG_FIELDS)
    if unknown:
        raise ValueError(f"not InternImage config fields: {sorted(unknown)}")
    values = {**_ARCH_DEFAULTS, **architecture, "num_classes": num_classes}
    missing = [k for k in ("channels", "depths", "groups") if k not in values]
    if missing:
        raise ValueError(f"architecture lacks {missing}")
    fields = {}
    for key in HUB_CONFIG_FIELDS:
        value = values[key]
        fields[key] = list(value) if isinstance(value, (tuple, list)) else value
    return {"architectures": list(HUB_ARCHITECTURES), "auto_map": dict(HUB_AUTO_MAP),
            "model_type": "internimage", **fields}


def published_config(model_name: str) -> dict[str, Any]:
    """config.json of a published name (``.pth`` name or Hub name)."""
    name = canonical_name(model_name)
    variant, num_classes, _ = PUBLISHED[name]
    return hub_config({**VARIANTS[variant], "drop_path_rate": DEFAULT_DROP_PATH[variant]}, num_classes)


def preprocessor_config(image_size: int) -> dict[str, Any]:
    """preprocessor_config.json: the published eval transform (TEST.CROP) as a CLIP image
    processor: short side resized to ``image_size`` (bicubic), centre crop, ImageNet mean/std."""
    return {
        "crop_size": {"height": image_size, "width": image_size},
        "do_center_crop": True,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": list(IMAGENET_MEAN),
        "image_processor_type": "CLIPImageProcessor",
        "image_std": list(IMAGENET_STD),
        "resample": 3,  # PIL bicubic
        "rescale_factor": 1 / 255,
        "size": {"shortest_edge": image_size},
    }


def _model_kwargs(config: Mapping[str, Any]) -> dict[str, Any]:
    kwargs = {k: config[k] for k in HUB_CONFIG_FIELDS}
    for key in ("depths", "groups", "level2_post_norm_block_ids"):
        if kwargs[key] is not None:
            kwargs[key] = tuple(kwargs[key])
    return kwargs


def check_state_dict(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any], source: str) -> None:
    """Raises ``ValueError`` unless ``state_dict`` has exactly the keys and shapes of the
    InternImage ``config`` describes (built on the meta device: no memory, no time)."""
    with torch.device("meta"):
        expected = InternImage(**_model_kwargs(config)).state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [f"{k}: {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
                  for k, v in expected.items() if k in state_dict and state_dict[k].shape != v.shape]
    if missing or unexpected or mismatched:
        raise ValueError(f"{source} does not match the architecture: {len(missing)} missing {missing[:5]}, "
                         f"{len(unexpected)} unexpected {unexpected[:5]}, "
                         f"{len(mismatched)} with other shapes {mismatched[:5]}")


def _json(path: Path, content: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(content, indent=2, sort_keys=False) + "\n")


def write_hub_folder(out: str | os.PathLike, state_dict: Mapping[str, torch.Tensor],
                     config: Mapping[str, Any], image_size: int, *, overwrite: bool = False,
                     log=print) -> Path:
    """Writes ``config``, the preprocessor config and ``state_dict`` (our names, converted to
    the Hub names) as a Hub-layout folder at ``out``: built in a temporary sibling folder and
    renamed into place, so ``out`` is either absent, the old folder or the complete new one."""
    from safetensors.torch import save_file

    out = Path(out).expanduser().absolute()
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists (pass --overwrite to replace it)")
    check_state_dict(state_dict, config, "the checkpoint")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        _json(staging / "config.json", config)
        _json(staging / "preprocessor_config.json", preprocessor_config(image_size))
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in to_hub_layout(state_dict).items()}
        size_gb = sum(t.numel() * t.element_size() for t in tensors.values()) / 1e9
        log(f"writing model.safetensors ({len(tensors)} tensors, {size_gb:.2f} GB)")
        save_file(tensors, str(staging / "model.safetensors"), metadata={"format": "pt"})
        if out.exists():
            retired = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            out.rename(retired)
            staging.rename(out)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def convert(model_name: str, ckpt: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False,
            trust: bool | None = None, log=print) -> Path:
    """``ckpt`` (a published ``.pth`` of ``model_name``) -> a Hub-layout folder at ``out``."""
    name = canonical_name(model_name)
    config = published_config(name)
    log(f"reading {ckpt}")
    state_dict = read_state_dict(ckpt, trust=trust)
    folder = write_hub_folder(out, state_dict, config, PUBLISHED[name][2], overwrite=overwrite, log=log)
    log(f"wrote {folder}")
    return folder


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_name", required=True,
                        help="published name, e.g. internimage_t_1k_224 or internimage_l_22k_384")
    parser.add_argument("--ckpt", required=True, metavar="FILE.pth", help="the published checkpoint")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to write (must not exist)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="full unpickle of --ckpt (only for files you trust; see read_checkpoint)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        convert(args.model_name, args.ckpt, args.out, overwrite=args.overwrite,
                trust=True if args.trust_checkpoint else None)
    except (ValueError, FileExistsError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
