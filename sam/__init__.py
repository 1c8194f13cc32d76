"""Zero-shot instance segmentation: a box detector of ``detection/`` prompts Segment Anything
(Meta's ``segment-anything`` package) with its boxes, and the masks are evaluated with
COCO mask AP.

- :mod:`sam.sam_model`: builds a SAM of a published type and loads its weights through the
  repository's safe checkpoint reader, refusing a checkpoint of another type in one line.
- :mod:`sam.prompted_detector`: ``SamPromptedDetector``, an mmdet model that runs any
  detector and gives each predicted box the mask SAM draws for it.
- ``sam/main_zero_shot_instance_seg.py``: the command line (see ``sam/README.md``).
"""

from sam.sam_model import SAM_BUILDERS, ZeroShotSetupError, build_sam, load_sam_weights

__all__ = ["SAM_BUILDERS", "ZeroShotSetupError", "build_sam", "load_sam_weights"]
