"""InternImage classification with DeepSpeed ZeRO (stages 1 and 2, optional CPU offload).

    python classification/main_deepspeed.py --cfg CONFIG.yaml --data-path DIR [flags]    # one process
    deepspeed --num_gpus N classification/main_deepspeed.py --cfg CONFIG.yaml ...      # several
    torchrun --nproc_per_node N classification/main_deepspeed.py --cfg CONFIG.yaml ...
    python classification/main_deepspeed.py --consolidate OUT/epoch9 --out model.pth   # ZeRO -> plain

Data, model, loss, lr schedule and evaluation are the ones of ``classification/main.py``;
only wrapping (``deepspeed.initialize``), stepping (``engine.backward``/``engine.step``)
and checkpointing (``engine.save_checkpoint`` under ``<output>/epoch{N}`` and ``best``,
auto-resume from ``<output>/latest``) differ."""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)
# Same import hygiene as main.py: repo root importable, this folder not (it shadows `data`, `utils`).
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE or p == ""]
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import argparse  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterable  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from timm.utils import ModelEmaV3  # noqa: E402
from torch import nn  # noqa: E402
from yacs.config import CfgNode  # noqa: E402

from classification.config import adopt_legacy_output, get_config  # noqa: E402
from classification.data import build_loader  # noqa: E402
from classification.lr_scheduler import build_scheduler  # noqa: E402
from classification.main import (  # noqa: E402
    Amp,
    _read_resume_file,
    build_criterion,
    build_parser,
    check_config,
    dump_config,
    evaluate_only,
    forward_model,
    log_train_step,
    prepare_batch,
    scale_learning_rates,
    seed_everything,
    synthetic_batches,
    throughput_without_data,
    validate,
)
from classification.models import build_model, is_meta_model  # noqa: E402
from classification.models.checkpoint import (  # noqa: E402
    apply_trust_argument,
    read_checkpoint,
    routed_torch_load,
)
from classification.optimizer import build_optimizer  # noqa: E402
from classification.utils import (  # noqa: E402
    MetricsLogger,
    atomic_save,
    barrier,
    close_logger,
    create_logger,
    leave_process_group_at_exit,
    plot_curves,
    resume_training,
)

BEST_TAG = "best"
EMA_BEST_TAG = "ema_best"


def epoch_tag(epoch: int) -> str:
    return f"epoch{epoch}"


# ----------------------------------------------------------------------------- arguments
def build_ds_parser() -> argparse.ArgumentParser:
    """main.py's flags plus the ZeRO ones and the consolidation tool."""
    p = build_parser()
    p.description = "InternImage training with DeepSpeed ZeRO"
    # main.py's published O1 default is its own: here the yaml's AMP_OPT_LEVEL decides unless given
    p.set_defaults(amp_opt_level=None)
    p.add_argument("--zero-stage", type=int, choices=[1, 2], default=1, help="ZeRO stage")
    p.add_argument("--offload-optimizer", choices=["cpu", "none"], default="none", help="optimizer state")
    p.add_argument(
        "--offload-param", choices=["cpu", "none"], default="none",
        help="parameter offload: needs ZeRO-3, which this trainer does not run (cpu is refused)"
    )
    p.add_argument(
        "--disable-grad-scalar", action="store_true", help="fp16 without loss scaling (static scale 1)"
    )
    p.add_argument("--consolidate", metavar="CKPT_DIR", help="turn a ZeRO checkpoint into a plain file")
    p.add_argument("--out", metavar="FILE", help="output file of --consolidate")
    p.add_argument("--ckpt-tag", help="--consolidate: tag inside CKPT_DIR (default: its 'latest')")
    p.add_argument("--ema", action="store_true", help="--consolidate: export the EMA weights instead")
    return p


def precision(config: CfgNode, device: torch.device) -> torch.dtype:
    """Parameter dtype of the engine: AMP_TYPE (fp16 or bf16 weights, DeepSpeed's own mixed
    precision) on GPU with AMP on, else fp32. On CPU, AMP means bf16 autocast over fp32
    weights (DeepSpeed's ``torch_autocast``), as main.Amp does; its fp16 path needs CUDA."""
    amp = Amp(config, device)
    return amp.dtype if amp.enabled and device.type == "cuda" else torch.float32


def build_ds_config(
    config: CfgNode,
    world_size: int,
    device: torch.device,
    *,
    zero_stage: int = 1,
    offload_optimizer: str = "none",
    disable_grad_scaler: bool = False,
) -> dict:
    """The DeepSpeed config dict derived from the yacs config (batch, accumulation,
    clipping, precision, ZeRO stage and offload)."""
    batch, accum = config.DATA.BATCH_SIZE, config.TRAIN.ACCUMULATION_STEPS
    zero: dict = {"stage": zero_stage, "overlap_comm": False, "contiguous_gradients": True}
    if offload_optimizer == "cpu":
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": device.type == "cuda"}
    ds = {
        "train_micro_batch_size_per_gpu": batch,
        "gradient_accumulation_steps": accum,
        "train_batch_size": batch * accum * world_size,
        "gradient_clipping": float(config.TRAIN.CLIP_GRAD or 0.0),
        "zero_optimization": zero,
        # The client AdamW carries the layer-decay / DCN-lr groups; DeepSpeed must accept it,
        # also with offload (where it would otherwise insist on its compiled CPU Adam).
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    dtype = precision(config, device)
    if Amp(config, device).enabled and device.type != "cuda":
        ds["torch_autocast"] = {"enabled": True, "dtype": "bfloat16"}
    elif dtype == torch.float16:
        ds["fp16"] = {
            "enabled": True,
            "loss_scale": 1.0 if disable_grad_scaler else 0,
            "initial_scale_power": 16,
        }
    elif dtype == torch.bfloat16:
        ds["bf16"] = {"enabled": True}
    return ds


def build_client_optimizer(config: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
    """main.py's optimizer without per-group parameter names (ZeRO flattens the params);
    the timm scheduler later rescales each group by its ``lr_scale``, so layer-wise decay
    survives DeepSpeed, which keeps the group dicts."""
    return build_optimizer(config, model, keep_param_names=False)


def _first_slurm_host() -> str:
    import subprocess

    nodes = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST")
    if not nodes:
        return "127.0.0.1"
    try:
        out = subprocess.run(
            ["scontrol", "show", "hostnames", nodes], capture_output=True, text=True, check=True
        )
        return out.stdout.split()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return nodes.split(",")[0]


def init_deepspeed_distributed(device_type: str) -> tuple[int, int, int]:
    """Joins (or creates, when started without a launcher) the process group; returns
    (rank, world_size, local_rank)."""
    import deepspeed

    env = os.environ
    if "SLURM_PROCID" in env and "RANK" not in env:  # srun: one task per process, no launcher env
        env["RANK"], env["WORLD_SIZE"] = env["SLURM_PROCID"], env.get("SLURM_NTASKS", "1")
        env["LOCAL_RANK"] = env.get("SLURM_LOCALID", "0")
        env.setdefault("MASTER_ADDR", _first_slurm_host())
        env.setdefault("MASTER_PORT", str(20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000))
    # A bare `python main_deepspeed.py` is a world of one; deepspeed still wants the env.
    env.setdefault("MASTER_ADDR", "127.0.0.1")
    env.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    local_rank = int(os.environ["LOCAL_RANK"])
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl" if device_type == "cuda" else "gloo", verbose=False)
        leave_process_group_at_exit()
    return dist.get_rank(), dist.get_world_size(), local_rank


# ----------------------------------------------------------------------------- checkpoints
def _split_ckpt_dir(path: str, tag: str | None = None) -> tuple[str, str | None]:
    """(load_dir, tag) for either a DeepSpeed save dir (with ``latest``) or one tag folder."""
    path = os.path.abspath(path.rstrip("/"))
    if tag is None and not os.path.isfile(os.path.join(path, "latest")):
        if any(name.endswith("model_states.pt") for name in os.listdir(path)):
            return os.path.dirname(path), os.path.basename(path)
    return path, tag


def is_zero_checkpoint(path: str) -> bool:
    return os.path.isdir(path)


def read_zero_weights(ckpt_dir: str, tag: str | None = None, ema: bool = False) -> dict[str, torch.Tensor]:
    """fp32 weights of a ZeRO checkpoint (the partitioned optimizer copy, gathered), or the
    EMA weights from its client state."""
    load_dir, tag = _split_ckpt_dir(ckpt_dir, tag)
    if ema:
        if tag is None:
            with open(os.path.join(load_dir, "latest")) as f:
                tag = f.read().strip()
        states = os.path.join(load_dir, tag, "mp_rank_00_model_states.pt")
        client = read_checkpoint(states, map_location="cpu")
        if client.get("ema") is None:
            raise KeyError(f"{states} holds no EMA weights (trained without TRAIN.EMA.ENABLE)")
        return {k: v.float() if v.is_floating_point() else v for k, v in client["ema"].items()}
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    with routed_torch_load():  # zero_to_fp32 reads with weights_only=False
        state = get_fp32_state_dict_from_zero_checkpoint(load_dir, tag=tag)
    return {k: v.contiguous() for k, v in state.items()}


def consolidate(ckpt_dir: str, out: str, tag: str | None = None, ema: bool = False) -> str:
    """Writes ``{'model': fp32 state_dict}`` from a ZeRO checkpoint to ``out`` (atomically);
    the file loads with main.py --pretrained/--resume and classification.models.load_pretrained."""
    state = read_zero_weights(ckpt_dir, tag, ema=ema)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    atomic_save({"model": state}, out)
    return out


def prune_epoch_tags(folder: str, keep: int) -> list[str]:
    """Deletes all but the newest ``keep`` epoch{N} folders; returns the removed ones."""
    tags = sorted(
        (int(name[5:]), name)
        for name in os.listdir(folder)
        if name.startswith("epoch") and name[5:].isdigit()
    )
    removed = []
    for _, name in tags[: max(len(tags) - max(keep, 1), 0)]:
        shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
        removed.append(name)
    return removed


# ----------------------------------------------------------------------------- model helpers
class CastInputs(nn.Module):
    """Feeds a half-precision module: casts the images to its dtype, returns float32 logits
    (main.validate / throughput then work unchanged)."""

    def __init__(self, module: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.module = module
        self.dtype = dtype

    def forward(self, x: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        # a list is the meta-former's [images, temporal, spatial] (main.forward_model)
        images, meta = (x[0], tuple(x[1:])) if isinstance(x, (list, tuple)) else (x, None)
        return forward_model(self.module, images.to(self.dtype), meta).float()


@torch.no_grad()
def update_ema(ema: ModelEmaV3, module: nn.Module) -> None:
    """EMA step that tolerates an fp16/bf16 engine module next to the fp32 EMA copy."""
    decay = ema.get_decay() if hasattr(ema, "get_decay") else ema.decay
    for e, m in zip(ema.module.state_dict().values(), module.state_dict().values(), strict=True):
        if e.is_floating_point():
            e.lerp_(m.to(e.dtype), 1.0 - decay)
        else:
            e.copy_(m)


def train_one_epoch_ds(
    config: CfgNode,
    engine,
    criterion: nn.Module,
    loader: Iterable,
    epoch: int,
    *,
    mixup_fn=None,
    lr_scheduler=None,
    ema: ModelEmaV3 | None = None,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    logger: logging.Logger | None = None,
    metrics: MetricsLogger | None = None,
) -> dict:
    """main.train_one_epoch with DeepSpeed doing the stepping: engine.backward scales by the
    accumulation, engine.step applies (clips, unscales) on the accumulation boundary."""
    n_iters = len(loader)
    engine.train()
    loss_sum, loss_count, norms, start = 0.0, 0, [], time.time()
    for idx, batch in enumerate(loader):
        samples, targets, meta = prepare_batch(batch, device, mixup_fn)
        if meta is not None and is_meta_model(engine.module):
            outputs = engine([samples.to(dtype), *(m.to(dtype) for m in meta)])
        else:
            outputs = engine(samples.to(dtype))
        loss = criterion(outputs.float(), targets)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch} iteration {idx}; stopping")
        boundary = engine.is_gradient_accumulation_boundary()
        engine.backward(loss)
        engine.step()
        if boundary:
            norm = engine.get_global_grad_norm()
            norms.append(float(norm) if norm is not None else float("nan"))
            if lr_scheduler is not None:
                # global_steps is checkpointed by DeepSpeed, so the schedule resumes exactly.
                lr_scheduler.step_update(engine.global_steps)
            if ema is not None:
                update_ema(ema, engine.module)
        loss_sum += loss.item()
        loss_count += 1
        lr = max(group["lr"] for group in engine.optimizer.param_groups)
        log_train_step(config, logger, metrics, epoch, idx, n_iters, loss.item(), loss_sum / loss_count, lr,
                       norms[-1] if norms else float("nan"))
    return {
        "train_loss": loss_sum / max(loss_count, 1),
        "grad_norm": float(np.nanmean(norms)) if norms and not all(map(math.isnan, norms)) else None,
        "lr": max(group["lr"] for group in engine.optimizer.param_groups),
        "updates": len(norms),
        "time": time.time() - start,
    }


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    """Training, --eval, --throughput or --consolidate as the command line says; returns
    the final metrics like main.main."""
    parser = build_ds_parser()
    args = parser.parse_args(argv)
    if args.offload_param != "none":
        parser.error(f"--offload-param {args.offload_param}: parameter offload needs ZeRO-3, and this "
                     "trainer runs ZeRO stages 1 and 2 (--offload-optimizer cpu offloads the optimizer)")
    apply_trust_argument(args.trust_checkpoint)
    if args.consolidate:
        if not args.out:
            raise SystemExit("--consolidate needs --out FILE")
        path = consolidate(args.consolidate, args.out, tag=args.ckpt_tag, ema=args.ema)
        print(f"wrote {path}")
        return {"output": path}
    try:
        config = get_config(args)
    except AssertionError as error:
        raise KeyError(f"bad --opts: {error}") from None
    check_config(config)
    legacy_note = adopt_legacy_output(config)  # a run in the old <stem>/<tag> layout continues
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    rank, world_size, local_rank = init_deepspeed_distributed(device_type)
    device = torch.device("cuda", local_rank) if device_type == "cuda" else torch.device("cpu")
    logger = None
    try:
        seed_everything(config.SEED + rank)
        scale_learning_rates(config, world_size)
        os.makedirs(config.OUTPUT, exist_ok=True)
        logger = create_logger(config.OUTPUT, rank)
        if rank == 0:
            dump_config(config, config.OUTPUT)
        if legacy_note:
            logger.warning(legacy_note)
        logger.info(
            f"output folder {config.OUTPUT}; world size {world_size}; device {device}; "
            f"ZeRO-{args.zero_stage}, optimizer offload {args.offload_optimizer}"
        )
        if config.EVAL_MODE or config.THROUGHPUT_MODE:
            return _evaluate_only(config, device, logger)
        return _train(config, args, device, rank, world_size, logger)
    finally:
        if logger is not None:
            close_logger(logger)
        # The process group is left up: DeepSpeed caches its groups module-wide, so a second
        # main() in the same process (tests, notebooks) must find the same group alive.


def _load_eval_weights(model: nn.Module, path: str, logger: logging.Logger) -> None:
    if is_zero_checkpoint(path):
        model.load_state_dict(read_zero_weights(path), strict=True)
    else:
        resume_training(_read_resume_file(path, logger), model=model)
    logger.info(f"loaded weights from {path}")


def _evaluate_only(config: CfgNode, device: torch.device, logger: logging.Logger) -> dict:
    """--eval / --throughput: no engine needed; weights from a plain file or a ZeRO dir."""
    if throughput_without_data(config):  # --throughput times random images without a dataset
        loader_val = synthetic_batches(config)
    else:
        _, dataset_val, _, loader_val, _ = build_loader(config, train=False)
    model = build_model(config)
    if config.MODEL.RESUME:
        _load_eval_weights(model, config.MODEL.RESUME, logger)
    elif config.MODEL.PRETRAINED:
        from classification.models.checkpoint import load_pretrained

        load_pretrained(model, config.MODEL.PRETRAINED, strict=True, logger=logger)
    else:
        logger.warning("no --resume or --pretrained weights: evaluating a randomly initialised model")
    model.to(device)
    return evaluate_only(config, loader_val, model, device, Amp(config, device), logger)


def _train(
    config: CfgNode, args, device: torch.device, rank: int, world_size: int, logger: logging.Logger
) -> dict:
    import deepspeed

    dataset_train, dataset_val, loader_train, loader_val, mixup_fn = build_loader(config, train=True)
    logger.info(f"train images {len(dataset_train)}, val images {len(dataset_val)}")
    model = build_model(config)
    if config.MODEL.PRETRAINED and not config.MODEL.RESUME:
        from classification.models.checkpoint import load_pretrained

        load_pretrained(
            model,
            config.MODEL.PRETRAINED,
            strict=True,
            reinit_head=config.TRAIN.RAND_INIT_FT_HEAD,
            map22kto1k_path=config.DATA.MAP22KTO1K_PATH or None,
            logger=logger,
        )
    model.to(device)
    optimizer = build_client_optimizer(config, model)
    updates_per_epoch = math.ceil(len(loader_train) / config.TRAIN.ACCUMULATION_STEPS)
    # Built on the client optimizer: ZeRO keeps its param_group dicts, so lr writes reach it.
    lr_scheduler = build_scheduler(config, optimizer, updates_per_epoch)
    # The EMA copy is made before DeepSpeed casts the module, so it stays fp32.
    ema = ModelEmaV3(model, decay=config.TRAIN.EMA.DECAY) if config.TRAIN.EMA.ENABLE else None
    criterion = build_criterion(config, mixup_fn)
    ds_config = build_ds_config(
        config,
        world_size,
        device,
        zero_stage=args.zero_stage,
        offload_optimizer=args.offload_optimizer,
        disable_grad_scaler=args.disable_grad_scalar,
    )
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)
    dtype = precision(config, device)
    eval_model = engine.module if dtype == torch.float32 else CastInputs(engine.module, dtype)
    eval_amp = Amp(config, device)
    eval_amp.enabled = False  # the engine module already runs in its own precision

    start_epoch, max_accuracy, max_accuracy_ema = config.TRAIN.START_EPOCH, 0.0, 0.0
    resume_dir, resume_tag = None, None
    if config.TRAIN.AUTO_RESUME and os.path.isfile(os.path.join(config.OUTPUT, "latest")):
        resume_dir = config.OUTPUT
    elif config.MODEL.RESUME and is_zero_checkpoint(config.MODEL.RESUME):
        resume_dir, resume_tag = _split_ckpt_dir(config.MODEL.RESUME)
    if resume_dir is not None:
        with routed_torch_load():  # DeepSpeed's checkpoint engine reads with weights_only=False
            path, client = engine.load_checkpoint(resume_dir, tag=resume_tag)
        if path is None:
            raise FileNotFoundError(f"no DeepSpeed checkpoint could be loaded from {resume_dir}")
        start_epoch = int(client["epoch"]) + 1
        max_accuracy = float(client.get("max_accuracy", 0.0))
        max_accuracy_ema = float(client.get("max_accuracy_ema", 0.0))
        if ema is not None:
            ema.module.load_state_dict(client.get("ema") or engine.module.state_dict())
        logger.info(f"resumed from {path} (epoch {client['epoch']}, max accuracy {max_accuracy:.2f}%)")
    elif config.MODEL.RESUME:  # a plain {'model': ...} file: weights (and counters) only
        info = resume_training(_read_resume_file(config.MODEL.RESUME, logger), model=engine.module, ema=ema)
        start_epoch, max_accuracy = info["epoch"] + 1, info["max_accuracy"]
        logger.warning(f"{config.MODEL.RESUME} is not a ZeRO checkpoint: optimizer state starts fresh")
    lr_scheduler.step_update(engine.global_steps if resume_dir else start_epoch * updates_per_epoch)

    metrics = MetricsLogger(config.OUTPUT) if rank == 0 else None
    last = {"acc1": None, "acc5": None, "train_loss": None}
    epochs_run = 0
    try:
        for epoch in range(start_epoch, config.TRAIN.EPOCHS):
            seed_everything(config.SEED + rank + 100_003 * epoch)
            loader_train.sampler.set_epoch(epoch)
            stats = train_one_epoch_ds(
                config,
                engine,
                criterion,
                loader_train,
                epoch,
                mixup_fn=mixup_fn,
                lr_scheduler=lr_scheduler,
                ema=ema,
                device=device,
                dtype=dtype,
                logger=logger,
                metrics=metrics,
            )
            record = {"epoch": epoch, **stats}
            last["train_loss"] = stats["train_loss"]
            is_last = epoch == config.TRAIN.EPOCHS - 1
            improved = improved_ema = False
            if epoch % config.EVAL_FREQ == 0 or is_last:
                val = validate(config, loader_val, eval_model, device, eval_amp)
                improved = val["acc1"] > max_accuracy
                max_accuracy = max(max_accuracy, val["acc1"])
                last.update(acc1=val["acc1"], acc5=val["acc5"])
                record.update(acc1=val["acc1"], acc5=val["acc5"], val_loss=val["loss"])
                logger.info(
                    f"Epoch {epoch}: top-1 {val['acc1']:.2f}% (max {max_accuracy:.2f}%), "
                    f"train loss {stats['train_loss']:.4f}"
                )
                if ema is not None:
                    val_ema = validate(config, loader_val, ema.module, device, Amp(config, device))
                    improved_ema = val_ema["acc1"] > max_accuracy_ema
                    max_accuracy_ema = max(max_accuracy_ema, val_ema["acc1"])
                    record.update(ema_acc1=val_ema["acc1"], ema_acc5=val_ema["acc5"])
            record.update(max_accuracy=max_accuracy, max_accuracy_ema=max_accuracy_ema if ema else None)
            if metrics is not None:
                metrics.log("epoch", epoch, **record)
            client = {
                "epoch": epoch,
                "max_accuracy": max_accuracy,
                "max_accuracy_ema": max_accuracy_ema,
                "lr_scheduler": lr_scheduler.state_dict(),
                "ema": ema.module.state_dict() if ema is not None else None,
                "config": config.dump(),
            }
            # save_checkpoint is collective: every rank calls it (each writes its partition).
            if improved:
                engine.save_checkpoint(config.OUTPUT, tag=BEST_TAG, client_state=client, save_latest=False)
            if improved_ema and rank == 0:
                atomic_save(
                    {"model": ema.module.state_dict(), "epoch": epoch, "max_accuracy": max_accuracy_ema},
                    os.path.join(config.OUTPUT, "ckpt_epoch_ema_best.pth"),
                )
            if epoch % config.SAVE_FREQ == 0 or is_last:
                # The epoch tag goes last and updates `latest`: the commit point for auto-resume.
                engine.save_checkpoint(config.OUTPUT, tag=epoch_tag(epoch), client_state=client)
                if rank == 0:
                    for name in prune_epoch_tags(config.OUTPUT, config.SAVE_CKPT_NUM):
                        logger.info(f"removed old checkpoint {name}")
            barrier()
            epochs_run += 1
    finally:
        if metrics is not None:
            metrics.close()
    if last["acc1"] is None:
        val = validate(config, loader_val, eval_model, device, eval_amp)
        last.update(acc1=val["acc1"], acc5=val["acc5"])
        max_accuracy = max(max_accuracy, val["acc1"])
    if rank == 0:
        plot_curves(os.path.join(config.OUTPUT, "metrics.jsonl"), os.path.join(config.OUTPUT, "curves.png"))
    logger.info(f"done: max accuracy {max_accuracy:.2f}%")
    result = {
        "max_accuracy": max_accuracy,
        "acc1": last["acc1"],
        "acc5": last["acc5"],
        "train_loss": last["train_loss"],
        "epochs_run": epochs_run,
        "output": config.OUTPUT,
        "global_steps": engine.global_steps,
    }
    if ema is not None:
        result["max_accuracy_ema"] = max_accuracy_ema
    return result


if __name__ == "__main__":
    main()
