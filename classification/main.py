"""InternImage classification trainer.

    python classification/main.py --cfg CONFIG.yaml --data-path DIR [flags]       # one process
    torchrun --nproc_per_node N classification/main.py --cfg CONFIG.yaml ...     # DDP

Also callable in-process: ``main(["--cfg", ..., ...])`` returns the final metrics."""

from __future__ import annotations

import os
import sys

# Runnable as a script from anywhere: the repository root must be importable, and this
# folder must not be (its `data`, `utils`, `config` would shadow top-level modules).
_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE or p == ""]
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import argparse  # noqa: E402
import contextlib  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterable  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy  # noqa: E402
from timm.utils import ModelEmaV3, accuracy  # noqa: E402
from torch import nn  # noqa: E402
from torch.distributed.optim import ZeroRedundancyOptimizer  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402
from tqdm import tqdm  # noqa: E402
from yacs.config import CfgNode  # noqa: E402

from classification.config import adopt_legacy_output, get_config  # noqa: E402
from classification.data import build_loader, map22kto1k_index  # noqa: E402
from classification.lr_scheduler import build_scheduler  # noqa: E402
from classification.models import build_model, is_meta_model  # noqa: E402
from classification.models.checkpoint import add_trust_argument, apply_trust_argument  # noqa: E402
from classification.optimizer import build_optimizer, freeze_backbone  # noqa: E402
from classification.option_checks import unsupported_option_problems  # noqa: E402
from classification.utils import (  # noqa: E402
    BEST_NAME,
    EMA_BEST_NAME,
    MetricsLogger,
    all_reduce_sum,
    atomic_save,
    barrier,
    build_state,
    close_logger,
    create_logger,
    init_distributed,
    load_checkpoint_file,
    load_latest_valid,
    plot_curves,
    remove_stale_temp_files,
    resume_training,
    save_epoch_checkpoint,
)

AMP_LEVELS = ("", "O0", "O1", "O2")
AMP_TYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


# ----------------------------------------------------------------------------- arguments
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("InternImage training and evaluation", add_help=True)
    p.add_argument("--cfg", type=str, metavar="FILE", help="path to a config yaml")
    p.add_argument(
        "--opts",
        nargs="+",
        default=None,
        metavar="KEY VALUE",
        help="override config keys: KEY VALUE pairs, e.g. TRAIN.EPOCHS 10",
    )
    p.add_argument("--batch-size", type=int, help="batch size per process")
    p.add_argument("--dataset", type=str, help="imagenet | imagenet22K | inat18")
    p.add_argument("--data-path", type=str, help="dataset root")
    p.add_argument("--zip", action="store_true", help="read images from train.zip / val.zip")
    p.add_argument(
        "--cache-mode",
        type=str,
        choices=["no", "full", "part"],
        help="zip mode: preload every image into memory (full), each rank's share (part) or none (no)",
    )
    p.add_argument("--pretrained", type=str, help="initial weights (fine-tuning)")
    p.add_argument("--resume", type=str, help="training checkpoint to resume from")
    add_trust_argument(p)  # --trust-checkpoint
    p.add_argument("--accumulation-steps", type=int, help="gradient accumulation steps")
    p.add_argument("--use-checkpoint", action="store_true", help="gradient checkpointing to save memory")
    p.add_argument(
        "--amp-opt-level",
        type=str,
        default="O1",
        choices=list(AMP_LEVELS[1:]),
        help="mixed precision (default O1, as published, overriding the yaml): O0 off, O1/O2 "
        "autocast in AMP_TYPE on GPU, bf16 autocast on CPU",
    )
    p.add_argument(
        "--use-zero",
        action="store_true",
        help="shard the optimizer state over the DDP ranks (TRAIN.OPTIMIZER.USE_ZERO)",
    )
    p.add_argument("--output", type=str, metavar="PATH", help="root of output folders")
    p.add_argument("--tag", type=str, help="experiment tag (output sub-folder)")
    p.add_argument("--eval", action="store_true", help="only evaluate")
    p.add_argument("--throughput", action="store_true", help="only measure throughput")
    p.add_argument("--save-ckpt-num", type=int, help="number of epoch checkpoints kept")
    p.add_argument("--epochs", type=int, help="TRAIN.EPOCHS")
    p.add_argument("--num-workers", type=int, help="DataLoader workers per process")
    # Old launchers pass --local_rank; torchrun sets LOCAL_RANK instead.
    p.add_argument(
        "--local-rank", "--local_rank", dest="local_rank", type=int, default=None, help=argparse.SUPPRESS
    )
    return p


def check_config(config: CfgNode) -> None:
    """Clear errors for settings the trainer cannot run with."""
    problems = []
    if config.AMP_OPT_LEVEL not in AMP_LEVELS:
        problems.append(f"AMP_OPT_LEVEL must be one of {AMP_LEVELS}, got {config.AMP_OPT_LEVEL!r}")
    if config.AMP_TYPE not in AMP_TYPES:
        problems.append(f"AMP_TYPE must be one of {sorted(AMP_TYPES)}, got {config.AMP_TYPE!r}")
    for key, value, low in (
        ("TRAIN.EPOCHS", config.TRAIN.EPOCHS, 1),
        ("TRAIN.ACCUMULATION_STEPS", config.TRAIN.ACCUMULATION_STEPS, 1),
        ("DATA.BATCH_SIZE", config.DATA.BATCH_SIZE, 1),
        ("MODEL.NUM_CLASSES", config.MODEL.NUM_CLASSES, 1),
        ("PRINT_FREQ", config.PRINT_FREQ, 1),
        ("SAVE_FREQ", config.SAVE_FREQ, 1),
        ("EVAL_FREQ", config.EVAL_FREQ, 1),
        ("TRAIN.WARMUP_EPOCHS", config.TRAIN.WARMUP_EPOCHS, 0),
        ("DATA.NUM_WORKERS", config.DATA.NUM_WORKERS, 0),
    ):
        if not isinstance(value, (int, float)) or value < low:
            problems.append(f"{key} must be >= {low}, got {value!r}")
    if config.TRAIN.START_EPOCH < 0:
        problems.append(f"TRAIN.START_EPOCH must be >= 0, got {config.TRAIN.START_EPOCH}")
    if config.EVAL_22K_TO_1K and not (config.EVAL_MODE or config.THROUGHPUT_MODE):
        problems.append("EVAL_22K_TO_1K evaluates a 21841-class model on ImageNet-1K: use it with --eval")
    if config.TRAIN.CLIP_GRAD is not None and config.TRAIN.CLIP_GRAD < 0:
        problems.append(f"TRAIN.CLIP_GRAD must be >= 0 or None, got {config.TRAIN.CLIP_GRAD}")
    problems += unsupported_option_problems(config)
    if problems:
        raise ValueError("invalid config:\n  " + "\n  ".join(problems))


def scale_learning_rates(config: CfgNode, world_size: int) -> None:
    """Linear scaling: the config's lrs are per 512 images of total batch."""
    factor = config.DATA.BATCH_SIZE * world_size * config.TRAIN.ACCUMULATION_STEPS / 512.0
    config.defrost()
    config.TRAIN.BASE_LR *= factor
    config.TRAIN.WARMUP_LR *= factor
    config.TRAIN.MIN_LR *= factor
    config.freeze()


def _config_to_dict(node):
    if isinstance(node, CfgNode):
        return {k: _config_to_dict(v) for k, v in node.items()}
    if isinstance(node, tuple):
        return list(node)
    return node


def dump_config(config: CfgNode, folder: str) -> None:
    atomic_text(os.path.join(folder, "config.yaml"), config.dump())
    atomic_text(
        os.path.join(folder, "config.json"), json.dumps(_config_to_dict(config), indent=2, default=str)
    )


def atomic_text(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- pieces
def build_criterion(config: CfgNode, mixup_fn) -> nn.Module:
    """Soft-target CE with mixup/cutmix, label-smoothing CE otherwise, plain CE when both are off."""
    if mixup_fn is not None:
        return SoftTargetCrossEntropy()
    if config.MODEL.LABEL_SMOOTHING > 0:
        return LabelSmoothingCrossEntropy(smoothing=config.MODEL.LABEL_SMOOTHING)
    return nn.CrossEntropyLoss()


class Amp:
    """Autocast settings: bf16 on CPU (fp16 autocast there is slow and needs no scaler),
    fp16 with a GradScaler or bf16 without one on GPU."""

    def __init__(self, config: CfgNode, device: torch.device):
        self.enabled = config.AMP_OPT_LEVEL not in ("", "O0")
        self.device_type = device.type
        self.dtype = AMP_TYPES[config.AMP_TYPE] if device.type == "cuda" else torch.bfloat16
        self.scaler = (
            torch.amp.GradScaler("cuda")
            if self.enabled and device.type == "cuda" and self.dtype == torch.float16
            else None
        )

    def autocast(self):
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def split_batch(batch) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...] | None]:
    """(images, targets, meta): loaders yield (images, targets); for iNat18 the images are
    [images, temporal, spatial] (the meta-former's input) and meta is (temporal, spatial)."""
    samples, targets = batch
    if isinstance(samples, (list, tuple)):
        return samples[0], targets, tuple(samples[1:])
    return samples, targets, None


def move_meta(meta: tuple[torch.Tensor, ...] | None, device: torch.device) -> tuple[torch.Tensor, ...] | None:
    return None if meta is None else tuple(m.to(device, non_blocking=True) for m in meta)


def forward_model(model: nn.Module, images: torch.Tensor,
                  meta: tuple[torch.Tensor, ...] | None) -> torch.Tensor:
    """``model([images, temporal, spatial])`` for models that take metadata
    (InternImageMetaFormer), else ``model(images)`` (metadata, if any, is ignored)."""
    if meta is not None and is_meta_model(model):
        return model([images, *meta])
    return model(images)


def prepare_batch(batch, device: torch.device, mixup_fn=None):
    """(samples, targets, meta) of a loader batch on ``device``; mixup mixes images and
    targets only, metadata stays per image."""
    samples, targets, meta = split_batch(batch)
    samples = samples.to(device, non_blocking=True)
    targets = targets.to(device, non_blocking=True)
    meta = move_meta(meta, device)
    if mixup_fn is not None:
        samples, targets = mixup_fn(samples, targets)
    return samples, targets, meta


def log_train_step(config: CfgNode, logger: logging.Logger | None, metrics: MetricsLogger | None,
                   epoch: int, idx: int, n_iters: int, loss: float, mean_loss: float, lr: float,
                   grad_norm: float) -> None:
    """The periodic training log line (every PRINT_FREQ iterations and the last) and its
    metrics.jsonl record."""
    if logger is None or not (idx % config.PRINT_FREQ == 0 or idx == n_iters - 1):
        return
    logger.info(
        f"Train: [{epoch}/{config.TRAIN.EPOCHS}][{idx}/{n_iters}] lr {lr:.6f} "
        f"loss {loss:.4f} ({mean_loss:.4f}) grad_norm {grad_norm:.4f}"
    )
    if metrics is not None:
        metrics.log("step", epoch * n_iters + idx, epoch=epoch, iter=idx, loss=loss, lr=lr,
                    grad_norm=grad_norm)


def optimizer_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, amp: Amp, clip_grad: float | None
) -> float:
    """Unscales, clips (when CLIP_GRAD is set) and applies the accumulated gradients; returns
    the total gradient norm before clipping."""
    if amp.scaler is not None:
        amp.scaler.unscale_(optimizer)
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    max_norm = clip_grad if clip_grad else float("inf")  # inf: measure without clipping
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm) if params else torch.tensor(0.0)
    if amp.scaler is not None:
        amp.scaler.step(optimizer)
        amp.scaler.update()
    else:
        optimizer.step()
    return float(grad_norm)


def train_one_epoch(
    config: CfgNode,
    model: nn.Module,
    criterion: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    *,
    mixup_fn=None,
    lr_scheduler=None,
    amp: Amp | None = None,
    ema: ModelEmaV3 | None = None,
    device: torch.device | None = None,
    logger: logging.Logger | None = None,
    metrics: MetricsLogger | None = None,
    show_progress: bool = False,
) -> dict:
    """One pass over ``loader``. Gradients of ACCUMULATION_STEPS batches are summed (DDP
    all-reduces only on the last one) and applied in one update; the lr schedule steps after
    each update. Returns {'train_loss', 'grad_norm', 'lr', 'updates', 'time'}."""
    device = device or torch.device("cpu")
    amp = amp or Amp(config, device)
    accum = config.TRAIN.ACCUMULATION_STEPS
    n_iters = len(loader)
    updates_per_epoch = math.ceil(n_iters / accum)
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss_sum, loss_count, norms, start = 0.0, 0, [], time.time()
    progress = tqdm(
        loader,
        total=n_iters,
        desc=f"epoch {epoch}",
        leave=False,
        dynamic_ncols=True,
        disable=not show_progress,
    )
    for idx, batch in enumerate(progress):
        samples, targets, meta = prepare_batch(batch, device, mixup_fn)
        group_start = idx - idx % accum
        group_size = min(accum, n_iters - group_start)  # the last group may be short
        is_update = idx == group_start + group_size - 1
        no_sync = isinstance(model, DistributedDataParallel) and not is_update
        with model.no_sync() if no_sync else contextlib.nullcontext():
            with amp.autocast():
                outputs = forward_model(model, samples, meta)
                loss = criterion(outputs, targets)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch} iteration {idx}; stopping")
            scaled = loss / group_size
            (amp.scaler.scale(scaled) if amp.scaler is not None else scaled).backward()
        if is_update:
            norms.append(optimizer_step(model, optimizer, amp, config.TRAIN.CLIP_GRAD))
            optimizer.zero_grad(set_to_none=True)
            if lr_scheduler is not None:
                lr_scheduler.step_update(epoch * updates_per_epoch + idx // accum + 1)
            if ema is not None:
                ema.update(_unwrap(model))
        loss_sum += loss.item()
        loss_count += 1
        lr = max(group["lr"] for group in optimizer.param_groups)
        progress.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.2e}")
        log_train_step(config, logger, metrics, epoch, idx, n_iters, loss.item(), loss_sum / loss_count, lr,
                       norms[-1] if norms else float("nan"))
    progress.close()
    return {
        "train_loss": loss_sum / max(loss_count, 1),
        "grad_norm": float(np.mean(norms)) if norms else None,
        "lr": max(group["lr"] for group in optimizer.param_groups),
        "updates": len(norms),
        "time": time.time() - start,
    }


@torch.no_grad()
def validate(
    config: CfgNode, loader: Iterable, model: nn.Module, device: torch.device, amp: Amp | None = None
) -> dict:
    """Top-1 / top-5 accuracy (%) and mean CE loss over the whole validation set (exact
    under DDP: each rank sees a disjoint shard and the counts are summed)."""
    amp = amp or Amp(config, device)
    model.eval()
    criterion = nn.CrossEntropyLoss(reduction="sum")
    # EVAL_22K_TO_1K: the 1000 ImageNet-1K logits of a 21841-class model, as published
    index_1k = map22kto1k_index(config.DATA.MAP22KTO1K_PATH).to(device) if config.EVAL_22K_TO_1K else None
    maxk = min(5, config.MODEL.NUM_CLASSES if index_1k is None else len(index_1k))
    correct1 = correct5 = loss_sum = count = 0.0
    for batch in loader:
        images, targets, meta = split_batch(batch)
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        meta = move_meta(meta, device)
        with amp.autocast():
            outputs = forward_model(model, images, meta)
        outputs = outputs.float()
        if index_1k is not None:
            outputs = outputs[:, index_1k]
        acc1, acc5 = accuracy(outputs, targets, topk=(1, maxk))
        batch = targets.shape[0]
        correct1 += float(acc1) * batch / 100.0
        correct5 += float(acc5) * batch / 100.0
        loss_sum += float(criterion(outputs, targets))
        count += batch
    correct1, correct5, loss_sum, count = all_reduce_sum([correct1, correct5, loss_sum, count], device)
    count = max(count, 1.0)
    return {
        "acc1": 100.0 * correct1 / count,
        "acc5": 100.0 * correct5 / count,
        "loss": loss_sum / count,
        "count": int(count),
    }


@torch.no_grad()
def throughput(
    loader: Iterable,
    model: nn.Module,
    device: torch.device,
    logger: logging.Logger,
    warmup: int | None = None,
    iters: int | None = None,
) -> float:
    """Images per second of the forward pass on one validation batch, after warm-up."""
    model.eval()
    images, _, meta = split_batch(next(iter(loader)))
    images = images.to(device)
    meta = move_meta(meta, device)
    on_gpu = device.type == "cuda"
    warmup = warmup if warmup is not None else (50 if on_gpu else 3)
    iters = iters if iters is not None else (30 if on_gpu else 5)
    for _ in range(warmup):
        forward_model(model, images, meta)
    if on_gpu:
        torch.cuda.synchronize()
    start = time.time()
    for _ in range(iters):
        forward_model(model, images, meta)
    if on_gpu:
        torch.cuda.synchronize()
    value = iters * images.shape[0] / (time.time() - start)
    logger.info(f"batch_size {images.shape[0]} throughput {value:.1f} images/s")
    return value


def throughput_without_data(config: CfgNode) -> bool:
    """--throughput alone needs no dataset: it times random images when DATA.DATA_PATH is unset."""
    return bool(config.THROUGHPUT_MODE and not config.EVAL_MODE and not config.DATA.DATA_PATH)


def synthetic_batches(config: CfgNode) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One batch of DATA.BATCH_SIZE random images at DATA.IMG_SIZE (the timed input of
    --throughput without --data-path; the cost does not depend on the pixels)."""
    size = config.DATA.IMG_SIZE
    images = torch.randn(config.DATA.BATCH_SIZE, 3, size, size, generator=torch.Generator().manual_seed(0))
    return [(images, torch.zeros(config.DATA.BATCH_SIZE, dtype=torch.long))]


def evaluate_only(config: CfgNode, loader_val: Iterable, model: nn.Module, device: torch.device,
                  amp: Amp | None, logger: logging.Logger) -> dict:
    """What --throughput and --eval report, as the result of main()."""
    result = {"output": config.OUTPUT, "epochs_run": 0}
    if config.THROUGHPUT_MODE:
        result["throughput"] = throughput(loader_val, model, device, logger)
    if config.EVAL_MODE:
        stats = validate(config, loader_val, model, device, amp)
        logger.info(
            f"Accuracy of the network on the {stats['count']} test images: "
            f"top-1 {stats['acc1']:.2f}% top-5 {stats['acc5']:.2f}% (loss {stats['loss']:.4f})"
        )
        result.update(
            acc1=stats["acc1"], acc5=stats["acc5"], val_loss=stats["loss"], max_accuracy=stats["acc1"]
        )
    return result


def _read_resume_file(path: str, logger: logging.Logger) -> dict:
    """A user-named checkpoint, read by read_checkpoint: a file holding objects beyond its
    allowlist is refused (UntrustedCheckpointError) unless --trust-checkpoint is given."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"resume checkpoint not found: {path}")
    return load_checkpoint_file(path)


def build_training_optimizer(
    config: CfgNode, model: nn.Module, logger: logging.Logger | None = None
) -> torch.optim.Optimizer:
    """``build_optimizer``'s optimizer; with TRAIN.OPTIMIZER.USE_ZERO under a process group, a
    ``ZeroRedundancyOptimizer`` over the same parameter groups instead: each rank keeps the
    optimizer state of its share of the parameters only (stepping those, then broadcasting
    them), as published. Its ``state_dict()`` (after ``consolidate_state_dict``) has the
    plain optimizer's format, so checkpoints resume either way."""
    if not config.TRAIN.OPTIMIZER.USE_ZERO:
        return build_optimizer(config, model)
    if not (dist.is_available() and dist.is_initialized()):
        if logger is not None:
            logger.info("TRAIN.OPTIMIZER.USE_ZERO with one process: nothing to shard, a plain optimizer")
        return build_optimizer(config, model)
    # Names would go stale in the shards' group dicts (each rank holds part of each group).
    plain = build_optimizer(config, model, keep_param_names=False)
    groups = [dict(group) for group in plain.param_groups]  # every default filled in, plus lr_scale
    # the constructor's own arguments only (AdamW's defaults also hold Adam's decoupled_weight_decay)
    accepted = inspect.signature(type(plain).__init__).parameters
    defaults = {k: v for k, v in plain.defaults.items() if k in accepted}
    optimizer = ZeroRedundancyOptimizer(groups, optimizer_class=type(plain), **defaults)
    if logger is not None:
        local = sum(p.numel() for group in optimizer.optim.param_groups for p in group["params"])
        total = sum(p.numel() for group in optimizer.param_groups for p in group["params"])
        logger.info(f"ZeroRedundancyOptimizer over {dist.get_world_size()} ranks: rank {dist.get_rank()} "
                    f"holds the {type(plain).__name__} state of {local} of {total} parameter values")
    return optimizer


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    """Runs training, --eval or --throughput as the command line says; returns the final
    metrics (max_accuracy, acc1, acc5, epochs_run, output, ...)."""
    args = build_parser().parse_args(argv)
    apply_trust_argument(args.trust_checkpoint)
    rank, world_size, local_rank, initialised = init_distributed()
    logger = None
    try:
        try:
            config = get_config(args)
        except AssertionError as error:  # yacs asserts on unknown --opts keys: say so plainly
            raise KeyError(f"bad --opts: {error}") from None
        check_config(config)
        legacy_note = adopt_legacy_output(config)  # a run in the old <stem>/<tag> layout continues
        device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
        seed_everything(config.SEED + rank)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        scale_learning_rates(config, world_size)
        os.makedirs(config.OUTPUT, exist_ok=True)
        logger = create_logger(config.OUTPUT, rank)
        if rank == 0:
            for path in remove_stale_temp_files(config.OUTPUT):
                logger.info(f"removed a temp file left by a killed run: {path}")
            dump_config(config, config.OUTPUT)
        if legacy_note:
            logger.warning(legacy_note)
        logger.info(f"output folder {config.OUTPUT}; world size {world_size}; device {device}")
        return _run(config, device, rank, world_size, logger)
    finally:
        if logger is not None:
            close_logger(logger)
        if initialised and dist.is_initialized():
            dist.destroy_process_group()


def _run(config: CfgNode, device: torch.device, rank: int, world_size: int, logger: logging.Logger) -> dict:
    only_eval = config.EVAL_MODE or config.THROUGHPUT_MODE
    if throughput_without_data(config):
        loader_train, loader_val, mixup_fn = None, synthetic_batches(config), None
        logger.info(f"no --data-path: timing random {config.DATA.IMG_SIZE}x{config.DATA.IMG_SIZE} images")
    else:
        dataset_train, dataset_val, loader_train, loader_val, mixup_fn = build_loader(
            config, train=not only_eval
        )
        logger.info(
            f"val images: {len(dataset_val)}"
            + (f", train images: {len(dataset_train)}" if dataset_train else "")
        )

    model = build_model(config)
    frozen = freeze_backbone(model, config.TRAIN.OPTIMIZER.FREEZE_BACKBONE)
    if frozen:
        logger.info(
            f"froze {len(frozen)} parameters (FREEZE_BACKBONE {config.TRAIN.OPTIMIZER.FREEZE_BACKBONE})"
        )
    model.to(device)
    amp = Amp(config, device)

    # Which checkpoint to start from: when training, an existing checkpoint in the output
    # folder wins (so re-running a killed job's command line continues it); for eval and
    # throughput an explicit --resume wins.
    checkpoint, checkpoint_path = None, None
    if config.MODEL.RESUME and only_eval:
        checkpoint_path, checkpoint = config.MODEL.RESUME, _read_resume_file(config.MODEL.RESUME, logger)
    elif config.TRAIN.AUTO_RESUME and (found := load_latest_valid(config.OUTPUT, logger)) is not None:
        checkpoint_path, checkpoint = found
        if config.MODEL.RESUME and os.path.abspath(config.MODEL.RESUME) != os.path.abspath(checkpoint_path):
            logger.warning(
                f"auto-resume: {checkpoint_path} takes the place of --resume {config.MODEL.RESUME}"
            )
    elif config.MODEL.RESUME:
        checkpoint_path, checkpoint = config.MODEL.RESUME, _read_resume_file(config.MODEL.RESUME, logger)

    pretrained = config.MODEL.PRETRAINED
    if pretrained and config.THROUGHPUT_MODE and not config.EVAL_MODE and not os.path.exists(pretrained):
        # speed does not depend on the weights (the published fine-tune yamls name a 22K file)
        logger.warning(f"MODEL.PRETRAINED {pretrained} not found: --throughput times random weights")
        pretrained = ""
    if checkpoint is None and pretrained:
        from classification.models.checkpoint import load_pretrained  # written beside this trainer
        from classification.models.intern_image_meta_former import load_pretrained_meta

        # a metadata model also loads a plain InternImage checkpoint (its meta_* tensors stay fresh)
        (load_pretrained_meta if is_meta_model(model) else load_pretrained)(
            model,
            config.MODEL.PRETRAINED,
            strict=True,
            map22kto1k_path=config.DATA.MAP22KTO1K_PATH or None,
            reinit_head=config.TRAIN.RAND_INIT_FT_HEAD,
            logger=logger,
        )
        logger.info(f"loaded pretrained weights {config.MODEL.PRETRAINED}")

    n_params = sum(p.numel() for p in model.parameters())
    logger.info(f"model {config.MODEL.NAME}: {n_params / 1e6:.2f}M parameters")

    if only_eval:
        if checkpoint is not None:
            resume_training(checkpoint, model=model)
            logger.info(f"loaded weights from {checkpoint_path}")
        elif not config.MODEL.PRETRAINED:
            logger.warning("no --resume or --pretrained weights: evaluating a randomly initialised model")
        return evaluate_only(config, loader_val, model, device, amp, logger)

    model_without_ddp = model
    optimizer = build_training_optimizer(config, model_without_ddp, logger)
    updates_per_epoch = math.ceil(len(loader_train) / config.TRAIN.ACCUMULATION_STEPS)
    lr_scheduler = build_scheduler(config, optimizer, updates_per_epoch)
    ema = ModelEmaV3(model_without_ddp, decay=config.TRAIN.EMA.DECAY) if config.TRAIN.EMA.ENABLE else None
    criterion = build_criterion(config, mixup_fn)

    start_epoch, max_accuracy, max_accuracy_ema = config.TRAIN.START_EPOCH, 0.0, 0.0
    if checkpoint is not None:
        # The schedule is a pure function of the update count and this run's config (which
        # may have changed, e.g. more epochs), so the stored scheduler state is not loaded.
        info = resume_training(
            checkpoint, model=model_without_ddp, optimizer=optimizer, scaler=amp.scaler, ema=ema
        )
        start_epoch = info["epoch"] + 1
        lr_scheduler.step_update(start_epoch * updates_per_epoch)
        max_accuracy, max_accuracy_ema = info["max_accuracy"], info["max_accuracy_ema"]
        logger.info(
            f"resumed from {checkpoint_path} (epoch {info['epoch']}, max accuracy {max_accuracy:.2f}%)"
        )
    del checkpoint

    if world_size > 1:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    metrics = MetricsLogger(config.OUTPUT) if rank == 0 else None
    last = {"acc1": None, "acc5": None, "train_loss": None}
    epochs_run, show_progress = 0, rank == 0 and sys.stderr.isatty()
    logger.info(
        f"training epochs {start_epoch}..{config.TRAIN.EPOCHS - 1}, {updates_per_epoch} updates/epoch, "
        f"base lr {config.TRAIN.BASE_LR:.3e}"
    )
    try:
        for epoch in range(start_epoch, config.TRAIN.EPOCHS):
            # Reseeding per epoch makes an epoch's augmentation (and worker seeds) the same
            # whether the run went straight through or was resumed before it.
            seed_everything(config.SEED + rank + 100_003 * epoch)
            loader_train.sampler.set_epoch(epoch)
            stats = train_one_epoch(
                config,
                model,
                criterion,
                loader_train,
                optimizer,
                epoch,
                mixup_fn=mixup_fn,
                lr_scheduler=lr_scheduler,
                amp=amp,
                ema=ema,
                device=device,
                logger=logger,
                metrics=metrics,
                show_progress=show_progress,
            )
            record = {"epoch": epoch, **stats}
            last["train_loss"] = stats["train_loss"]
            is_last = epoch == config.TRAIN.EPOCHS - 1
            improved = improved_ema = False
            if epoch % config.EVAL_FREQ == 0 or is_last:
                val = validate(config, loader_val, model, device, amp)
                improved = val["acc1"] > max_accuracy
                max_accuracy = max(max_accuracy, val["acc1"])
                last.update(acc1=val["acc1"], acc5=val["acc5"])
                record.update(acc1=val["acc1"], acc5=val["acc5"], val_loss=val["loss"])
                logger.info(
                    f"Epoch {epoch}: top-1 {val['acc1']:.2f}% top-5 {val['acc5']:.2f}% "
                    f"(max {max_accuracy:.2f}%), train loss {stats['train_loss']:.4f}"
                )
                if ema is not None:
                    val_ema = validate(config, loader_val, ema.module, device, amp)
                    improved_ema = val_ema["acc1"] > max_accuracy_ema
                    max_accuracy_ema = max(max_accuracy_ema, val_ema["acc1"])
                    record.update(ema_acc1=val_ema["acc1"], ema_acc5=val_ema["acc5"])
                    logger.info(
                        f"Epoch {epoch}: EMA top-1 {val_ema['acc1']:.2f}% (max {max_accuracy_ema:.2f}%)"
                    )
            record.update(max_accuracy=max_accuracy, max_accuracy_ema=max_accuracy_ema if ema else None)
            if isinstance(optimizer, ZeroRedundancyOptimizer) and _saves_state(
                config, epoch, is_last, improved
            ):
                optimizer.consolidate_state_dict(to=0)  # collective: rank 0 gathers every shard to save
            if rank == 0:
                # The record first: if the run dies before the checkpoint, the epoch is re-run
                # and its record rewritten (readers keep the last one per epoch).
                metrics.log("epoch", epoch, **record)
                _save(
                    config,
                    epoch,
                    is_last,
                    improved,
                    improved_ema,
                    model_without_ddp,
                    optimizer,
                    lr_scheduler,
                    amp,
                    ema,
                    max_accuracy,
                    max_accuracy_ema,
                    logger,
                )
            barrier()  # nobody starts the next epoch before the checkpoint is on disk
            epochs_run += 1
    finally:
        if metrics is not None:
            metrics.close()
    if last["acc1"] is None:  # nothing left to train (resumed a finished run): report the model
        val = validate(config, loader_val, model, device, amp)
        last.update(acc1=val["acc1"], acc5=val["acc5"])
        max_accuracy = max(max_accuracy, val["acc1"])
    if rank == 0 and plot_curves(
        os.path.join(config.OUTPUT, "metrics.jsonl"), os.path.join(config.OUTPUT, "curves.png")
    ):
        logger.info(f"curves written to {os.path.join(config.OUTPUT, 'curves.png')}")
    logger.info(f"done: max accuracy {max_accuracy:.2f}%")
    result = {
        "max_accuracy": max_accuracy,
        "acc1": last["acc1"],
        "acc5": last["acc5"],
        "train_loss": last["train_loss"],
        "epochs_run": epochs_run,
        "output": config.OUTPUT,
    }
    if ema is not None:
        result["max_accuracy_ema"] = max_accuracy_ema
    return result


def _saves_state(config: CfgNode, epoch: int, is_last: bool, improved: bool) -> bool:
    """Whether ``_save`` writes a file holding the training state this epoch."""
    return epoch % config.SAVE_FREQ == 0 or is_last or improved


def _save(
    config: CfgNode,
    epoch: int,
    is_last: bool,
    improved: bool,
    improved_ema: bool,
    model: nn.Module,
    optimizer,
    lr_scheduler,
    amp: Amp,
    ema,
    max_accuracy: float,
    max_accuracy_ema: float,
    logger: logging.Logger,
) -> None:
    """Best and EMA-best files, then the epoch checkpoint (every SAVE_FREQ epochs and the
    last). The epoch checkpoint goes last because it is the commit point: a run killed
    before it re-runs this epoch and rewrites everything."""
    state = None
    if _saves_state(config, epoch, is_last, improved):
        state = build_state(
            model=model,
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            scaler=amp.scaler,
            ema=ema,
            epoch=epoch,
            max_accuracy=max_accuracy,
            max_accuracy_ema=max_accuracy_ema,
            config_yaml=config.dump(),
        )
    if improved:
        atomic_save(state, os.path.join(config.OUTPUT, BEST_NAME))
        logger.info(f"saved {BEST_NAME} (top-1 {max_accuracy:.2f}%)")
    if improved_ema:
        # The EMA weights stored as 'model', so --eval --resume reads them directly.
        atomic_save(
            {
                "model": ema.module.state_dict(),
                "epoch": epoch,
                "max_accuracy": max_accuracy_ema,
                "config": config.dump(),
            },
            os.path.join(config.OUTPUT, EMA_BEST_NAME),
        )
        logger.info(f"saved {EMA_BEST_NAME} (EMA top-1 {max_accuracy_ema:.2f}%)")
    if epoch % config.SAVE_FREQ == 0 or is_last:
        path = save_epoch_checkpoint(config.OUTPUT, epoch, state, config.SAVE_CKPT_NUM)
        logger.info(f"saved {path}")


if __name__ == "__main__":
    main()
