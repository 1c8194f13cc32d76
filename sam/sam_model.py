"""Segment Anything models of the published types, with their weights read safely.

The architectures are the ``segment-anything`` package's own builders (so the published
``sam_vit_{b,l,h}_*.pth`` files fit them unchanged); the package's builders would read a
checkpoint with a bare ``torch.load``, so they are called without one and the weights are
read here by ``classification.models.checkpoint.read_state_dict`` (weights-only, or a full
unpickle only with ``--trust-checkpoint`` / ``INTERNIMAGE_TRUST_CHECKPOINTS=1``)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping

import torch
from segment_anything import sam_model_registry
from segment_anything.modeling import Sam

from classification.models.checkpoint import read_state_dict

# --sam_type -> builder returning an untrained Sam ('default' is the package's alias of vit_h)
SAM_BUILDERS: dict[str, Callable[[], Sam]] = {
    name: builder for name, builder in sam_model_registry.items() if name != "default"}
# Published image encoders, (embed dim, depth) -> type: names the type a checkpoint holds.
PUBLISHED_ENCODERS = {(768, 12): "vit_b", (1024, 24): "vit_l", (1280, 32): "vit_h"}
_PATCH_EMBED = "image_encoder.patch_embed.proj.weight"
_BLOCK = re.compile(r"^image_encoder\.blocks\.(\d+)\.")
_LISTED = 5


class ZeroShotSetupError(ValueError):
    """Input the zero-shot pipeline cannot run on (a SAM checkpoint of another type, a
    detector that predicts no boxes, an image it cannot read); the message says which and
    what was expected."""


def encoder_shape(state_dict: Mapping[str, torch.Tensor], source: str) -> tuple[int, int]:
    """(embed dim, number of blocks) of the SAM image encoder in ``state_dict``."""
    if _PATCH_EMBED not in state_dict:
        raise ZeroShotSetupError(f"{source} is not a Segment Anything checkpoint: it has no {_PATCH_EMBED!r}")
    blocks = {int(m.group(1)) for key in state_dict if (m := _BLOCK.match(key))}
    return int(state_dict[_PATCH_EMBED].shape[0]), (max(blocks) + 1 if blocks else 0)


def _describe(shape: tuple[int, int]) -> str:
    name = PUBLISHED_ENCODERS.get(shape)
    return f"{name} (embed dim {shape[0]}, {shape[1]} blocks)" if name else \
        f"an encoder of embed dim {shape[0]} with {shape[1]} blocks (no published SAM type)"


def load_sam_weights(sam: Sam, checkpoint: str | os.PathLike, sam_type: str) -> None:
    """Loads a SAM checkpoint (a published ``sam_vit_*.pth``: a plain state_dict; wrapped ones
    too) into ``sam``, built as ``sam_type``. A checkpoint of another type is one
    ``ZeroShotSetupError`` naming both types; any other mismatch lists the keys."""
    source = os.fspath(checkpoint)
    state_dict = read_state_dict(source)
    have, want = encoder_shape(state_dict, source), encoder_shape(sam.state_dict(), f"--sam_type {sam_type}")
    if have != want:
        raise ZeroShotSetupError(f"SAM checkpoint {source} holds {_describe(have)}, but --sam_type "
                                 f"{sam_type} is {_describe(want)}: pass the --sam_type of the checkpoint")
    model_state = sam.state_dict()
    problems = [("missing", sorted(set(model_state) - set(state_dict))),
                ("unexpected", sorted(set(state_dict) - set(model_state))),
                ("of another shape", sorted(k for k in set(state_dict) & set(model_state)
                                            if state_dict[k].shape != model_state[k].shape))]
    problems = [(what, keys) for what, keys in problems if keys]
    if problems:
        listed = "; ".join(f"{len(keys)} {what} ({', '.join(keys[:_LISTED])}"
                           f"{', ...' if len(keys) > _LISTED else ''})" for what, keys in problems)
        raise ZeroShotSetupError(f"SAM checkpoint {source} does not fit --sam_type {sam_type}: keys {listed}")
    sam.load_state_dict(state_dict)


def build_sam(sam_type: str, checkpoint: str | os.PathLike | None = None) -> Sam:
    """A SAM of ``sam_type`` (a key of ``SAM_BUILDERS``) in eval mode, with the weights of
    ``checkpoint`` (``None``: untrained, as built)."""
    if sam_type not in SAM_BUILDERS:
        raise ZeroShotSetupError(f"--sam_type must be one of {', '.join(SAM_BUILDERS)}, got {sam_type!r}")
    sam = SAM_BUILDERS[sam_type]()
    if checkpoint is not None:
        load_sam_weights(sam, checkpoint, sam_type)
    return sam.eval()
