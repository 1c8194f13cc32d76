"""yacs configuration of the classification trainer: every key of the published
trainer (``shared/spec/classification.md``) with its default, ``BASE`` inheritance of
yaml files, and command-line overrides."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import yaml
from yacs.config import CfgNode as CN

from classification.output_root import default_output

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def get_default_config() -> CN:
    """A fresh, mutable config holding every default."""
    c = CN()
    c.BASE = [""]

    c.DATA = CN()
    c.DATA.BATCH_SIZE = 128
    c.DATA.DATA_PATH = ""
    c.DATA.DATASET = "imagenet"
    c.DATA.IMG_SIZE = 224
    c.DATA.INTERPOLATION = "bicubic"
    c.DATA.ZIP_MODE = False
    c.DATA.CACHE_MODE = "part"
    c.DATA.PIN_MEMORY = True
    c.DATA.NUM_WORKERS = 8
    c.DATA.IMG_ON_MEMORY = False
    # Our key: the 22K->1K class-index map used when a 21841-class head meets a 1000-class
    # model and by EVAL_22K_TO_1K; '' = the map shipped in the package (the published table).
    c.DATA.MAP22KTO1K_PATH = ""

    c.MODEL = CN()
    c.MODEL.TYPE = "intern_image"
    c.MODEL.NAME = "intern_image"
    c.MODEL.PRETRAINED = ""
    c.MODEL.RESUME = ""
    c.MODEL.NUM_CLASSES = 1000
    c.MODEL.DROP_RATE = 0.0
    c.MODEL.DROP_PATH_RATE = 0.1
    c.MODEL.DROP_PATH_TYPE = "linear"
    c.MODEL.LABEL_SMOOTHING = 0.1

    c.MODEL.INTERN_IMAGE = CN()
    c.MODEL.INTERN_IMAGE.DEPTHS = [4, 4, 18, 4]
    c.MODEL.INTERN_IMAGE.GROUPS = [4, 8, 16, 32]
    c.MODEL.INTERN_IMAGE.CHANNELS = 64
    c.MODEL.INTERN_IMAGE.LAYER_SCALE = None
    c.MODEL.INTERN_IMAGE.OFFSET_SCALE = 1.0
    c.MODEL.INTERN_IMAGE.MLP_RATIO = 4.0
    c.MODEL.INTERN_IMAGE.CORE_OP = "DCNv3"
    c.MODEL.INTERN_IMAGE.POST_NORM = False
    c.MODEL.INTERN_IMAGE.RES_POST_NORM = False
    c.MODEL.INTERN_IMAGE.DW_KERNEL_SIZE = None
    c.MODEL.INTERN_IMAGE.USE_CLIP_PROJECTOR = False
    c.MODEL.INTERN_IMAGE.LEVEL2_POST_NORM = False
    c.MODEL.INTERN_IMAGE.LEVEL2_POST_NORM_BLOCK_IDS = None
    c.MODEL.INTERN_IMAGE.CENTER_FEATURE_SCALE = False
    c.MODEL.INTERN_IMAGE.REMOVE_CENTER = False

    # MODEL.TYPE intern_image_meta: the metadata (location/date) embedding of InternImageMeta.
    c.MODEL.META = CN()
    c.MODEL.META.DIM = 0  # hidden width of the metadata MLP; 0 = the embedding width

    c.TRAIN = CN()
    c.TRAIN.START_EPOCH = 0
    c.TRAIN.EPOCHS = 300
    c.TRAIN.WARMUP_EPOCHS = 20
    c.TRAIN.WEIGHT_DECAY = 0.05
    c.TRAIN.BASE_LR = 5e-4
    c.TRAIN.WARMUP_LR = 5e-7
    c.TRAIN.MIN_LR = 5e-6
    c.TRAIN.CLIP_GRAD = 5.0
    c.TRAIN.AUTO_RESUME = True
    c.TRAIN.ACCUMULATION_STEPS = 1  # 0 (the published default) means none too: read as 1
    c.TRAIN.USE_CHECKPOINT = False
    c.TRAIN.LR_SCHEDULER = CN()
    c.TRAIN.LR_SCHEDULER.NAME = "cosine"
    c.TRAIN.LR_SCHEDULER.DECAY_EPOCHS = 30
    c.TRAIN.LR_SCHEDULER.DECAY_RATE = 0.1
    c.TRAIN.OPTIMIZER = CN()
    c.TRAIN.OPTIMIZER.NAME = "adamw"
    c.TRAIN.OPTIMIZER.EPS = 1e-8
    c.TRAIN.OPTIMIZER.BETAS = (0.9, 0.999)
    c.TRAIN.OPTIMIZER.MOMENTUM = 0.9
    # Shard the optimizer state over the data-parallel ranks (ZeroRedundancyOptimizer).
    c.TRAIN.OPTIMIZER.USE_ZERO = False
    c.TRAIN.OPTIMIZER.FREEZE_BACKBONE = None
    c.TRAIN.OPTIMIZER.DCN_LR_MUL = None
    c.TRAIN.EMA = CN()
    c.TRAIN.EMA.ENABLE = False
    c.TRAIN.EMA.DECAY = 0.9999
    c.TRAIN.LR_LAYER_DECAY = False
    c.TRAIN.LR_LAYER_DECAY_RATIO = 0.875
    c.TRAIN.RAND_INIT_FT_HEAD = False

    c.AUG = CN()
    c.AUG.COLOR_JITTER = 0.4
    c.AUG.AUTO_AUGMENT = "rand-m9-mstd0.5-inc1"
    c.AUG.REPROB = 0.25
    c.AUG.REMODE = "pixel"
    c.AUG.RECOUNT = 1
    c.AUG.MIXUP = 0.8
    c.AUG.CUTMIX = 1.0
    c.AUG.CUTMIX_MINMAX = None
    c.AUG.MIXUP_PROB = 1.0
    c.AUG.MIXUP_SWITCH_PROB = 0.5
    c.AUG.MIXUP_MODE = "batch"
    c.AUG.RANDOM_RESIZED_CROP = False
    c.AUG.HFLIP = 0.5  # horizontal-flip probability of the training transform
    c.AUG.MEAN = IMAGENET_MEAN
    c.AUG.STD = IMAGENET_STD

    c.TEST = CN()
    c.TEST.CROP = True
    c.TEST.SEQUENTIAL = False

    # '' or 'O0': off; anything else: autocast in AMP_TYPE. main.py's --amp-opt-level
    # (default O1, as published) always overrides the yaml value.
    c.AMP_OPT_LEVEL = ""
    c.AMP_TYPE = "float16"
    c.OUTPUT = ""
    c.TAG = "default"
    c.SAVE_FREQ = 1
    c.SAVE_CKPT_NUM = 1
    c.PRINT_FREQ = 10
    c.EVAL_FREQ = 1
    c.SEED = 0
    c.EVAL_MODE = False
    c.THROUGHPUT_MODE = False
    c.LOCAL_RANK = 0
    # Evaluate a 21841-class model on ImageNet-1K through the 1000 rows of DATA.MAP22KTO1K_PATH.
    c.EVAL_22K_TO_1K = False
    return c


def _normalise(config: CN) -> None:
    """Published spellings with one meaning: ACCUMULATION_STEPS 0 (the published default)
    and 1 both mean no accumulation."""
    if config.TRAIN.ACCUMULATION_STEPS == 0:
        config.TRAIN.ACCUMULATION_STEPS = 1


def _merge_yaml(config: CN, path: str, seen: tuple[str, ...] = ()) -> None:
    """Merges a yaml file into ``config``, its ``BASE`` files first (paths relative to it)."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file not found: {path}")
    if path in seen:
        raise ValueError(f"config BASE cycle: {' -> '.join(seen + (path,))}")
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config must be a yaml mapping, got {type(data).__name__}")
    for base in data.get("BASE", [""]) or [""]:
        if base:
            _merge_yaml(config, os.path.join(os.path.dirname(path), base), seen + (path,))
    config.defrost()
    try:
        config.merge_from_file(path)
    except KeyError as error:  # yacs names the unknown key; say which file had it
        raise KeyError(f"{path}: {error}") from None
    config.freeze()


def _arg(args, name: str):
    return getattr(args, name, None) if args is not None else None


def update_config(config: CN, args: argparse.Namespace | None) -> CN:
    """Merges ``args.cfg`` (with its BASE chain), then ``args.opts``, then the explicit
    command-line flags; returns the frozen config."""
    if _arg(args, "cfg"):
        _merge_yaml(config, args.cfg)
    config.defrost()
    if _arg(args, "opts"):
        config.merge_from_list(list(args.opts))
    overrides = {
        "batch_size": "DATA.BATCH_SIZE", "dataset": "DATA.DATASET", "data_path": "DATA.DATA_PATH",
        "cache_mode": "DATA.CACHE_MODE", "pretrained": "MODEL.PRETRAINED", "resume": "MODEL.RESUME",
        "accumulation_steps": "TRAIN.ACCUMULATION_STEPS", "amp_opt_level": "AMP_OPT_LEVEL",
        "output": "OUTPUT", "tag": "TAG", "save_ckpt_num": "SAVE_CKPT_NUM",
        "num_workers": "DATA.NUM_WORKERS", "epochs": "TRAIN.EPOCHS",
    }
    for arg_name, key in overrides.items():
        value = _arg(args, arg_name)
        if value is not None:
            node = config
            *parents, leaf = key.split(".")
            for part in parents:
                node = node[part]
            node[leaf] = value
    if _arg(args, "zip"):
        config.DATA.ZIP_MODE = True
    if _arg(args, "use_checkpoint"):
        config.TRAIN.USE_CHECKPOINT = True
    if _arg(args, "use_zero"):
        config.TRAIN.OPTIMIZER.USE_ZERO = True
    if _arg(args, "eval"):
        config.EVAL_MODE = True
    if _arg(args, "throughput"):
        config.THROUGHPUT_MODE = True
    if _arg(args, "local_rank") is not None:
        config.LOCAL_RANK = args.local_rank
    config.LOCAL_RANK = int(os.environ.get("LOCAL_RANK", config.LOCAL_RANK))
    _normalise(config)
    # <output>/<config stem>/ as published (TAG names the run, no folder level); without
    # --output outside the checkout (classification/output_root.py)
    stem = os.path.splitext(os.path.basename(args.cfg))[0] if _arg(args, "cfg") else config.MODEL.NAME
    config.OUTPUT = os.path.join(config.OUTPUT or default_output("classification"), stem)
    config.freeze()
    return config


# What a trainer leaves in its output folder to resume from: main.py's epoch files,
# main_deepspeed.py's `latest` tag file, main_accelerate.py's accelerate/latest.
_RUN_STATE_FILES = ("latest", os.path.join("accelerate", "latest"))


def holds_run_state(folder: str) -> bool:
    """True when ``folder`` holds something a trainer auto-resumes from."""
    if not os.path.isdir(folder):
        return False
    if any(os.path.isfile(os.path.join(folder, name)) for name in _RUN_STATE_FILES):
        return True
    return any(name.startswith("ckpt_epoch_") and name.endswith(".pth") for name in os.listdir(folder))


def adopt_legacy_output(config: CN) -> str | None:
    """Runs started before outputs moved to ``<output>/<cfg stem>/`` live in
    ``<output>/<cfg stem>/<TAG>/``. When auto-resume is on, the new folder holds no run and
    the old one does, ``config.OUTPUT`` becomes the old folder (the run continues where its
    checkpoints are); returns the message to log, or None when nothing changed."""
    if not config.TRAIN.AUTO_RESUME or not config.TAG:
        return None
    legacy = os.path.join(config.OUTPUT, config.TAG)
    if holds_run_state(config.OUTPUT) or not holds_run_state(legacy):
        return None
    new = config.OUTPUT
    config.defrost()
    config.OUTPUT = legacy
    config.freeze()
    return (f"found a run in the old output layout <output>/<cfg stem>/<tag>: continuing it in {legacy} "
            f"(new runs go to {new}; move the files there to switch)")


def get_config(args: argparse.Namespace | None = None) -> CN:
    """The default config updated from ``args`` (see ``update_config``)."""
    return update_config(get_default_config(), args)


def load_config_file(path: str, opts: Sequence[str] = ()) -> CN:
    """A config from a yaml file (and KEY VALUE overrides), without touching OUTPUT."""
    config = get_default_config()
    _merge_yaml(config, path)
    config.defrost()
    if opts:
        config.merge_from_list(list(opts))
    _normalise(config)
    config.freeze()
    return config
