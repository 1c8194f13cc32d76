"""timm integration: every published InternImage weight name (model.md) is a timm model.

    import classification.models  # registers the names
    model = timm.create_model("internimage_t_1k_224", pretrained=True)

Weights are the ``<name>.pth`` files of the Hugging Face repo ``OpenGVLab/InternImage``
(found in the HF cache or downloaded), or a local file given with
``pretrained_cfg_overlay=dict(file=...)``: a published ``.pth``, or the weights of a
transformers-layout Hub repo (``model.safetensors`` / ``pytorch_model.bin``, keys with a
``model.`` prefix and ``layer_scale1/2``). The three Hub repo names that differ from the
``.pth`` names (``HUB_ALIASES``) are registered too. ``features_only=True`` wraps the model
in timm's ``FeatureGetterNet`` (``forward_intermediates``)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from typing import Any

import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._builder import resolve_pretrained_cfg

try:  # optional: without it only local files (pretrained_cfg_overlay=dict(file=...)) work
    from huggingface_hub import hf_hub_download
except ImportError:  # pragma: no cover
    hf_hub_download = None

from .checkpoint import routed_torch_load, strip_prefix, unwrap_state_dict
from .hub_layout import from_hub_layout, is_hub_layout
from .intern_image import InternImage
from .variants import VARIANTS

HF_HUB_ID = "OpenGVLab/InternImage"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# name -> (variant, classes of its head, input resolution)
PUBLISHED: dict[str, tuple[str, int, int]] = {
    "internimage_t_1k_224": ("t", 1000, 224),
    "internimage_s_1k_224": ("s", 1000, 224),
    "internimage_b_1k_224": ("b", 1000, 224),
    "internimage_l_22kto1k_384": ("l", 1000, 384),
    "internimage_xl_22kto1k_384": ("xl", 1000, 384),
    "internimage_h_22kto1k_640": ("h", 1000, 640),
    "internimage_g_22kto1k_512": ("g", 1000, 512),
    "internimage_l_22k_192to384": ("l", 21841, 384),
    "internimage_xl_22k_192to384": ("xl", 21841, 384),
    "internimage_h_jointto22k_384": ("h", 21841, 384),
    "internimage_g_pretrainto22k_384": ("g", 21841, 384),
}

# Hub repos (OpenGVLab/<name>, transformers layout) whose name differs from the .pth name
HUB_ALIASES: dict[str, str] = {
    "internimage_l_22k_384": "internimage_l_22k_192to384",
    "internimage_xl_22k_384": "internimage_xl_22k_192to384",
    "internimage_g_jointto22k_384": "internimage_g_pretrainto22k_384",
}


def canonical_name(name: str) -> str:
    """The ``.pth`` name of a published name or Hub repo name; ``ValueError`` otherwise."""
    name = HUB_ALIASES.get(name, name)
    if name not in PUBLISHED:
        known = ", ".join(sorted([*PUBLISHED, *HUB_ALIASES]))
        raise ValueError(f"unknown InternImage model name {name!r}; known names: {known}")
    return name


def hub_repo_name(name: str) -> str:
    """The name of the transformers-layout Hub repo (``OpenGVLab/<this>``) of a published name."""
    name = canonical_name(name)
    return next((alias for alias, target in HUB_ALIASES.items() if target == name), name)


# Default stochastic depth per variant (the training recipes'); any kwarg overrides it.
DEFAULT_DROP_PATH = {"t": 0.1, "s": 0.4, "b": 0.5, "l": 0.1, "xl": 0.2, "h": 0.2, "g": 0.4}


def _cfg(name: str) -> dict[str, Any]:
    pth_name = canonical_name(name)
    variant, num_classes, size = PUBLISHED[pth_name]
    # the map the head pools: stride 32 (conv head), stride 16 for the CLIP-projector head (H/G)
    stride = 16 if VARIANTS[variant].get("use_clip_projector") else 32
    return dict(
        hf_hub_id=HF_HUB_ID, hf_hub_filename=f"{pth_name}.pth", num_classes=num_classes,
        input_size=(3, size, size), pool_size=(size // stride, size // stride),
        # the published eval (TEST.CROP): short side resized to the input size, centre crop
        crop_pct=1.0, crop_mode="center", interpolation="bicubic",
        mean=IMAGENET_MEAN, std=IMAGENET_STD, first_conv="patch_embed.conv1", classifier="head",
        license="mit", paper_name="InternImage: Exploring Large-Scale Vision Foundation Models with "
        "Deformable Convolutions", paper_ids="arXiv:2211.05778",
        origin_url="https://huggingface.co/OpenGVLab/InternImage")


default_cfgs = generate_default_cfgs({name: _cfg(name) for name in [*PUBLISHED, *HUB_ALIASES]})


def missing_weights_message(name: str, detail: str = "") -> str:
    """How to get ``<name>.pth`` when it cannot be found or downloaded."""
    filename = f"{HUB_ALIASES.get(name, name)}.pth"
    return (
        f"pretrained weights for {name!r} are not available{': ' + detail if detail else ''}.\n"
        f"Fetch {filename} from https://huggingface.co/{HF_HUB_ID} and either\n"
        f"  - put it in the Hugging Face cache: huggingface-cli download {HF_HUB_ID} {filename}\n"
        f"  - or pass its path: timm.create_model({name!r}, pretrained=True, "
        f"pretrained_cfg_overlay=dict(file='/path/to/{filename}'))")


def hub_unreachable(timeout_s: float = 3.0) -> str | None:
    """Why the Hugging Face Hub cannot be reached right now (offline mode, or no HTTP answer
    from its endpoint within ``timeout_s``, or a server error), or None when it answers."""
    import urllib.error
    import urllib.request

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set and the file is not in the Hugging Face cache"
    try:
        urllib.request.urlopen(urllib.request.Request(constants.ENDPOINT, method="HEAD"), timeout=timeout_s)
    except urllib.error.HTTPError as error:  # the Hub (or a proxy) answered
        if error.code >= 500:
            return f"{constants.ENDPOINT} answers HTTP {error.code}"
    except (OSError, ValueError) as error:  # no route, refused, DNS, timeout
        return f"{constants.ENDPOINT} is unreachable ({type(error).__name__}: {error})"
    return None


def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """timm's pretrained filter: published files are ``{'model': sd}`` (timm may have
    unwrapped them already); also accepts DDP and dense (``backbone.``) checkpoints and the
    weights of a transformers-layout Hub repo (``model.`` prefix, ``layer_scale1/2``)."""
    state_dict = unwrap_state_dict(state_dict, "pretrained checkpoint")
    if is_hub_layout(state_dict):
        state_dict = from_hub_layout(state_dict)
    if not any(k.startswith("backbone.") for k in model.state_dict()):
        state_dict = strip_prefix(state_dict, "backbone.")
    return state_dict


def _resolve_weights(name: str, pretrained_cfg: Any, overlay: dict[str, Any],
                     cache_dir: str | os.PathLike | None) -> dict[str, Any]:
    """The overlay that points timm at a weight file that exists, or a clear RuntimeError."""
    cfg = resolve_pretrained_cfg(name, pretrained_cfg=pretrained_cfg, pretrained_cfg_overlay=overlay)
    if cfg.state_dict is not None:
        return overlay
    if cfg.file:
        path = os.path.expanduser(os.fspath(cfg.file))
        if not os.path.isfile(path):
            raise RuntimeError(missing_weights_message(name, f"file {path!r} does not exist"))
        return {**overlay, "file": path}
    if cfg.hf_hub_id:
        filename = cfg.hf_hub_filename or f"{name}.pth"
        try:
            if hf_hub_download is None:
                raise ImportError("huggingface_hub is not installed")
            # Served from the cache when present (also offline); downloaded otherwise, once a
            # quick check says the Hub can be reached (hf_hub_download would retry for ~30 s).
            try:
                path = hf_hub_download(cfg.hf_hub_id, filename, cache_dir=cache_dir, local_files_only=True)
            except Exception:  # noqa: BLE001 - not in the cache
                if (why := hub_unreachable()) is not None:
                    raise OSError(why) from None
                path = hf_hub_download(cfg.hf_hub_id, filename, cache_dir=cache_dir)
        except Exception as error:  # offline, no network, missing entry, hub not installed
            raise RuntimeError(missing_weights_message(
                name, f"{filename} could not be fetched from {cfg.hf_hub_id} "
                      f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})")
            ) from error
        # Load the cached file directly, so the checkpoint is read once, by the same path as a local file.
        return {**overlay, "file": path}
    return overlay  # a url: timm downloads it


def _create(name: str, pretrained: bool = False, **kwargs: Any) -> InternImage:
    variant = PUBLISHED[canonical_name(name)][0]
    # features_only: timm's FeatureGetterNet over forward_intermediates, all four levels by default
    feature_cfg = dict(feature_cls="getter", out_indices=tuple(range(len(VARIANTS[variant]["depths"]))))
    pretrained_cfg = kwargs.pop("pretrained_cfg", None)
    overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {})
    cache_dir = kwargs.pop("cache_dir", None)
    device = kwargs.pop("device", None)
    dtype = kwargs.pop("dtype", None)
    model_kwargs = {**VARIANTS[variant], "drop_path_rate": DEFAULT_DROP_PATH[variant], **kwargs}
    if pretrained:
        overlay = _resolve_weights(name, pretrained_cfg, overlay, cache_dir)
    # timm reads the weight file with torch.load: routed through read_checkpoint
    with (torch.device(device) if device is not None else contextlib.nullcontext()), routed_torch_load():
        model = build_model_with_cfg(
            InternImage, name, pretrained, pretrained_cfg=pretrained_cfg, pretrained_cfg_overlay=overlay,
            pretrained_filter_fn=checkpoint_filter_fn, cache_dir=cache_dir, feature_cfg=feature_cfg,
            **model_kwargs)
    return model.to(dtype=dtype) if dtype is not None else model


@register_model
def internimage_t_1k_224(pretrained: bool = False, **kwargs: Any) -> InternImage:
    """InternImage-T, ImageNet-1K, 224 (83.5 top-1)."""
    return _create("internimage_t_1k_224", pretrained, **kwargs)


@register_model
def internimage_s_1k_224(pretrained: bool = False, **kwargs: Any) -> InternImage:
    """InternImage-S, ImageNet-1K, 224 (84.2 top-1)."""
    return _create("internimage_s_1k_224", pretrained, **kwargs)


@register_model
def internimage_b_1k_224(pretrained: bool = False, **kwargs: Any) -> InternImage:
    """InternImage-B, ImageNet-1K, 224 (84.9 top-1)."""
    return _create("internimage_b_1k_224", pretrained, **kwargs)


@register_model
def internimage_l_22kto1k_384(pretrained: bool = False, **kwargs: Any) -> InternImage:
    """InternImage-L, ImageNet-22K pretrained, 1K fine-tuned at 384 (87.7 top-1)."""
    return _create("internimage_l_22kto1k_384", pretrained, **kwargs)


@register_model
def internimage_xl_22kto1k_384(pretrained: bool = False, **kwargs: Any) -> InternImage:
    """InternImage-XL, ImageNet-22K pretrained, 1K fine-tuned at 384 (88.0 top-1)."""
    return _create("internimage_xl_22kto1k_384", pretrained, **kwargs)


@register_model
def internimage_h_22kto1k_640(pretrained: bool = False, **kwargs: Any) -> InternImage:
    """InternImage-H, 1K fine-tuned at 640 (89.6 top-1)."""
    return _create("internimage_h_22kto1k_640", pretrained, **kwargs)


@register_model
def internimage_g_22kto1k_512(pretrained: bool = False, **kwargs: Any) -> InternImage:
    """InternImage-G, 1K fine-tuned at 512 (90.1 top-1)."""
    return _create("internimage_g_22kto1k_512", pretrained, **kwargs)


@register_model
def internimage_l_22k_192to384(pretrained: bool = False, **kwargs: Any) -> InternImage:
    """InternImage-L ImageNet-22K backbone (21841 classes), 384."""
    return _create("internimage_l_22k_192to384", pretrained, **kwargs)


@register_model
def internimage_xl_22k_192to384(pretrained: bool = False, **kwargs: Any) -> InternImage:
    """InternImage-XL ImageNet-22K backbone (21841 classes), 384."""
    return _create("internimage_xl_22k_192to384", pretrained, **kwargs)


@register_model
def internimage_h_jointto22k_384(pretrained: bool = False, **kwargs: Any) -> InternImage:
    """InternImage-H ImageNet-22K backbone (21841 classes), 384."""
    return _create("internimage_h_jointto22k_384", pretrained, **kwargs)


@register_model
def internimage_g_pretrainto22k_384(pretrained: bool = False, **kwargs: Any) -> InternImage:
    """InternImage-G ImageNet-22K backbone (21841 classes), 384."""
    return _create("internimage_g_pretrainto22k_384", pretrained, **kwargs)


@register_model
def internimage_l_22k_384(pretrained: bool = False, **kwargs: Any) -> InternImage:
    """Hub name (OpenGVLab/internimage_l_22k_384) of internimage_l_22k_192to384."""
    return _create("internimage_l_22k_384", pretrained, **kwargs)


@register_model
def internimage_xl_22k_384(pretrained: bool = False, **kwargs: Any) -> InternImage:
    """Hub name (OpenGVLab/internimage_xl_22k_384) of internimage_xl_22k_192to384."""
    return _create("internimage_xl_22k_384", pretrained, **kwargs)


@register_model
def internimage_g_jointto22k_384(pretrained: bool = False, **kwargs: Any) -> InternImage:
    """Hub name (OpenGVLab/internimage_g_jointto22k_384) of internimage_g_pretrainto22k_384."""
    return _create("internimage_g_jointto22k_384", pretrained, **kwargs)
