"""InternImage classification with HuggingFace Accelerate (DDP, DeepSpeed ZeRO through the
launcher config).

    python classification/main_accelerate.py --cfg CONFIG.yaml --data-path DIR        # one process
    accelerate launch --config_file classification/configs/accelerate/dist_8gpus_zero1.yaml \\
        classification/main_accelerate.py --cfg CONFIG.yaml --data-path DIR [--logger none|wandb]

The published launcher files are ``configs/accelerate/dist_8gpus_{ddp_fp16,zero1,
zero1_wo_loss_scale,zero3_offload,zero3_offload_wo_loss_scale}.yaml`` (their DeepSpeed json
under ``configs/accelerate/deepspeed/``); ``--logger`` defaults to tensorboard and
``--disable-grad-scalar`` trains fp16 without loss scaling, as published.

Data, model, loss, lr schedule and evaluation are those of ``classification/main.py``; the
Accelerator wraps and steps the model and saves/loads the whole training state with
``save_state``/``load_state`` under ``<output>/accelerate/epoch{N}`` (``latest`` names the
newest; a re-run of the same command continues from it)."""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE or p == ""]
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from timm.utils import ModelEmaV3  # noqa: E402
from yacs.config import CfgNode  # noqa: E402

from classification.config import adopt_legacy_output, get_config  # noqa: E402
from classification.data import build_loader  # noqa: E402
from classification.lr_scheduler import build_scheduler  # noqa: E402
from classification.main import atomic_text as _atomic_text  # noqa: E402
from classification.main import (  # noqa: E402
    build_criterion,
    build_parser,
    check_config,
    dump_config,
    forward_model,
    prepare_batch,
    scale_learning_rates,
    seed_everything,
    validate,
)
from classification.main_deepspeed import CastInputs, _evaluate_only, build_client_optimizer  # noqa: E402
from classification.models import build_model  # noqa: E402
from classification.models.checkpoint import apply_trust_argument, routed_torch_load  # noqa: E402
from classification.utils import MetricsLogger, close_logger, create_logger, plot_curves  # noqa: E402

STATE_DIR = "accelerate"
MIXED_PRECISION = {"float16": "fp16", "bfloat16": "bf16"}


def build_accelerate_parser() -> argparse.ArgumentParser:
    p = build_parser()
    p.description = "InternImage training with HuggingFace Accelerate"
    # main.py's published O1 default is its own: the launcher's mixed_precision decides here
    # (a bare run follows the yaml's AMP_OPT_LEVEL unless --amp-opt-level is given)
    p.set_defaults(amp_opt_level=None)
    # As published: tensorboard unless told otherwise ('none' turns tracking off).
    p.add_argument("--logger", choices=["tensorboard", "wandb", "none"], default="tensorboard",
                   help="experiment tracker (default tensorboard)")
    p.add_argument("--disable-grad-scalar", action="store_true",
                   help="fp16 without loss scaling: no GradScaler (DDP), static loss scale 1 (DeepSpeed)")
    return p


def resolve_deepspeed_config_file() -> None:
    """The launcher files name their DeepSpeed json relative to the repository root; the
    published ones are launched from classification/. A relative path that does not exist
    from the working directory is looked up under the repository root and classification/."""
    key = "ACCELERATE_DEEPSPEED_CONFIG_FILE"
    path = os.environ.get(key)
    if not path or os.path.isabs(path) or os.path.isfile(path):
        return
    for base in (_ROOT, _HERE):
        candidate = os.path.join(base, path)
        if os.path.isfile(candidate):
            os.environ[key] = candidate
            return
    raise FileNotFoundError(f"DeepSpeed config {path!r} of the launcher file not found (looked in "
                            f"{os.getcwd()}, {_ROOT} and {_HERE})")


def disable_loss_scaling(ds_config: dict) -> None:
    """--disable-grad-scalar under DeepSpeed: fp16 with the static loss scale 1."""
    fp16 = ds_config.get("fp16")
    if isinstance(fp16, dict) and fp16.get("enabled") in (True, "auto"):
        fp16["loss_scale"] = 1.0


class TrainState:
    """Counters saved with save_state (anything with state_dict/load_state_dict)."""

    def __init__(self) -> None:
        self.epoch, self.updates, self.max_accuracy, self.max_accuracy_ema = -1, 0, 0.0, 0.0

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def check_tracker(name: str | None) -> None:
    """A clear error up front instead of accelerate's deep one when a tracker is missing."""
    package = {"tensorboard": "tensorboard", "wandb": "wandb"}.get(name or "")
    if package and importlib.util.find_spec(package) is None:
        raise RuntimeError(
            f"--logger {name} needs the '{package}' package: pip install {package} (or pass --logger none)"
        )


def latest_state(folder: str) -> str | None:
    """The newest saved state folder under ``<output>/accelerate`` (None when none)."""
    marker = os.path.join(folder, STATE_DIR, "latest")
    if not os.path.isfile(marker):
        return None
    with open(marker) as f:
        path = os.path.join(folder, STATE_DIR, f.read().strip())
    return path if os.path.isdir(path) else None


def _prune(folder: str, keep: int) -> None:
    root = os.path.join(folder, STATE_DIR)
    tags = sorted(int(n[5:]) for n in os.listdir(root) if n.startswith("epoch") and n[5:].isdigit())
    for epoch in tags[: max(len(tags) - max(keep, 1), 0)]:
        shutil.rmtree(os.path.join(root, f"epoch{epoch}"), ignore_errors=True)


def launched_world_size() -> int:
    """The process count the launcher announced (torchrun's WORLD_SIZE, mpirun's PMI/OMPI sizes)."""
    keys = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
    return max(int(os.environ.get(key, "1")) for key in keys)


def refuse_single_process_launch() -> None:
    """``accelerate launch --cpu --num_processes N`` starts one process (accelerate runs
    several CPU processes only through mpirun) and says nothing: refuse instead of training
    one process while the user believes N share the work. The launcher gives itself away by
    setting MASTER_ADDR for N > 1 without any world size."""
    if "ACCELERATE_USE_CPU" in os.environ and "MASTER_ADDR" in os.environ and launched_world_size() == 1:
        raise SystemExit(
            "error: accelerate launch started a single process for --num_processes > 1 on CPU (accelerate "
            "runs multi-process CPU jobs only through mpirun: --mpirun_hostfile). For data-parallel CPU "
            "training use: torchrun --nproc_per_node N classification/main_accelerate.py ..."
        )


def _cpu_data_parallel() -> bool:
    """Without CUDA the Accelerator runs on CPU, and under torchrun it must be told so to join
    the process group (gloo) instead of training every process on its own; DeepSpeed
    launches bring their own CPU accelerator."""
    return not torch.cuda.is_available() and os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() != "true"


def check_world_size(num_processes: int) -> None:
    """Two launched processes are one data-parallel run, never two trainings racing into one
    output folder."""
    if (launched := launched_world_size()) != num_processes:
        raise RuntimeError(
            f"the launcher started {launched} processes but the Accelerator sees {num_processes}: each "
            "would train alone and write the same output folder; launch with torchrun or accelerate "
            "launch so that the processes form one group"
        )


def _mixed_precision(config: CfgNode) -> str | None:
    """The launcher's choice wins; a bare python run follows AMP_OPT_LEVEL / AMP_TYPE (bf16 on CPU)."""
    if os.environ.get("ACCELERATE_MIXED_PRECISION"):
        return None
    if config.AMP_OPT_LEVEL in ("", "O0"):
        return "no"
    return MIXED_PRECISION[config.AMP_TYPE] if torch.cuda.is_available() else "bf16"


def main(argv: list[str] | None = None) -> dict:
    """Training (or --eval / --throughput) under an Accelerator; returns the final metrics."""
    from accelerate import Accelerator

    args = build_accelerate_parser().parse_args(argv)
    apply_trust_argument(args.trust_checkpoint)
    if args.logger == "none":
        args.logger = None
    check_tracker(args.logger)
    resolve_deepspeed_config_file()
    try:
        config = get_config(args)
    except AssertionError as error:
        raise KeyError(f"bad --opts: {error}") from None
    check_config(config)
    legacy_note = adopt_legacy_output(config)  # a run in the old <stem>/<tag> layout continues
    kwargs = {}
    if (mp := _mixed_precision(config)) is not None:
        kwargs["mixed_precision"] = mp
    if args.disable_grad_scalar:
        from accelerate.utils import GradScalerKwargs

        kwargs["kwargs_handlers"] = [GradScalerKwargs(enabled=False)]
    refuse_single_process_launch()
    acc = Accelerator(
        gradient_accumulation_steps=config.TRAIN.ACCUMULATION_STEPS,
        log_with=args.logger,
        project_dir=config.OUTPUT,
        cpu=_cpu_data_parallel(),
        **kwargs,
    )
    check_world_size(acc.num_processes)
    rank, world_size = acc.process_index, acc.num_processes
    seed_everything(config.SEED + rank)
    scale_learning_rates(config, world_size)
    os.makedirs(config.OUTPUT, exist_ok=True)
    logger = create_logger(config.OUTPUT, rank)
    try:
        if acc.is_main_process:
            dump_config(config, config.OUTPUT)
        if legacy_note:
            logger.warning(legacy_note)
        logger.info(
            f"output {config.OUTPUT}; {world_size} process(es); {acc.distributed_type}; "
            f"mixed precision {acc.mixed_precision}"
        )
        if config.EVAL_MODE or config.THROUGHPUT_MODE:
            return _evaluate_only(config, acc.device, logger)
        return _train(config, acc, args, logger)
    finally:
        close_logger(logger)
        acc.end_training()


def deepspeed_cpu_fp16() -> bool:
    """Whether DeepSpeed's CPU accelerator runs fp16 here (it asks oneDNN for float16
    support: Intel Sapphire Rapids and later; not AMD EPYC Zen 4/5)."""
    from deepspeed.accelerator.cpu_accelerator import CPU_Accelerator

    return bool(CPU_Accelerator().is_fp16_supported())  # None where unsupported


def _train(config: CfgNode, acc, args, logger: logging.Logger) -> dict:
    rank, world_size, device = acc.process_index, acc.num_processes, acc.device
    # Our loaders shard by rank themselves (DistributedSampler), so they are not prepared.
    dataset_train, dataset_val, loader_train, loader_val, mixup_fn = build_loader(
        config, train=True, rank=rank, world_size=world_size
    )
    model = build_model(config)
    if config.MODEL.PRETRAINED:
        from classification.models.checkpoint import load_pretrained

        load_pretrained(
            model,
            config.MODEL.PRETRAINED,
            strict=True,
            reinit_head=config.TRAIN.RAND_INIT_FT_HEAD,
            map22kto1k_path=config.DATA.MAP22KTO1K_PATH or None,
            logger=logger,
        )
    optimizer = build_client_optimizer(config, model)
    updates_per_epoch = math.ceil(len(loader_train) / config.TRAIN.ACCUMULATION_STEPS)
    lr_scheduler = build_scheduler(config, optimizer, updates_per_epoch)
    ema = ModelEmaV3(model, decay=config.TRAIN.EMA.DECAY).to(device) if config.TRAIN.EMA.ENABLE else None
    criterion = build_criterion(config, mixup_fn)
    plugin = acc.state.deepspeed_plugin
    if plugin is not None and plugin.zero_stage == 3 and ema is not None:
        # ZeRO-3 partitions the parameters, so the unwrapped module holds no full weights to average.
        raise ValueError("TRAIN.EMA.ENABLE is not supported with ZeRO-3; use ZeRO-1/2 or turn EMA off")
    if plugin is not None:
        # Loaders are not prepared, so DeepSpeed's "auto" batch entries are filled here.
        ds = plugin.deepspeed_config
        ds["train_micro_batch_size_per_gpu"] = config.DATA.BATCH_SIZE
        ds["train_batch_size"] = config.DATA.BATCH_SIZE * config.TRAIN.ACCUMULATION_STEPS * world_size
        ds["gradient_accumulation_steps"] = config.TRAIN.ACCUMULATION_STEPS
        ds["gradient_clipping"] = float(config.TRAIN.CLIP_GRAD or 0.0)
        half = next((k for k in ("bf16", "fp16") if (ds.get(k) or {}).get("enabled") in (True, "auto")), None)
        if half == "fp16" and device.type == "cpu" and not deepspeed_cpu_fp16():
            raise ValueError(
                "the DeepSpeed config enables fp16, which DeepSpeed's CPU accelerator runs only on "
                "CPUs with float16 arithmetic (AVX512-FP16 or AMX-FP16; "
                "torch.ops.mkldnn._is_mkldnn_fp16_supported() is False here); launch the bf16 "
                "file of the same setup (zero1_bf16.yaml, zero3_offload_bf16.yaml) or use GPUs")
        if half and device.type == "cpu":
            # DeepSpeed casts the weights, not the buffers; CPU batch_norm wants its running
            # statistics in the input's dtype (GPU kernels take float32 ones).
            ds.setdefault("data_types", {}).setdefault("buffer_dtype", half)
        if args.disable_grad_scalar:
            disable_loss_scaling(ds)
    model, optimizer = acc.prepare(model, optimizer)
    # DeepSpeed fp16/bf16 keeps the weights in that dtype and does not autocast: it is fed
    # inputs of its dtype and gives float32 logits back (as in main_deepspeed.py).
    weight_dtype = next(acc.unwrap_model(model).parameters()).dtype
    eval_model = model if weight_dtype == torch.float32 else CastInputs(model, weight_dtype)
    state = TrainState()
    acc.register_for_checkpointing(state)
    if ema is not None:
        acc.register_for_checkpointing(ema)

    resume = latest_state(config.OUTPUT) if config.TRAIN.AUTO_RESUME else None
    resume = resume or (
        config.MODEL.RESUME if config.MODEL.RESUME and os.path.isdir(config.MODEL.RESUME) else None
    )
    if resume:
        with routed_torch_load():  # accelerate reads registered objects with weights_only=False
            acc.load_state(resume)
        logger.info(f"resumed from {resume} (epoch {state.epoch}, {state.updates} updates)")
    # The schedule is a function of the update count, which the saved state carries.
    lr_scheduler.step_update(state.updates)
    start_epoch = max(state.epoch + 1, config.TRAIN.START_EPOCH)

    if args.logger:
        # tensorboard: <output>/tensorboard, the folder classification/main.py writes too
        acc.init_trackers(
            "tensorboard" if args.logger == "tensorboard" else "internimage",
            config={
                "base_lr": config.TRAIN.BASE_LR,
                "epochs": config.TRAIN.EPOCHS,
                "batch_size": config.DATA.BATCH_SIZE,
                "model": config.MODEL.NAME,
            },
        )
    metrics = MetricsLogger(config.OUTPUT, tensorboard=False) if acc.is_main_process else None
    unwrapped = acc.unwrap_model(model)
    last = {"acc1": None, "acc5": None, "train_loss": None}
    epochs_run = 0
    try:
        for epoch in range(start_epoch, config.TRAIN.EPOCHS):
            seed_everything(config.SEED + rank + 100_003 * epoch)
            loader_train.sampler.set_epoch(epoch)
            model.train()
            loss_sum, norms, start = 0.0, [], time.time()
            for idx, batch in enumerate(loader_train):
                samples, targets, meta = prepare_batch(batch, device, mixup_fn)
                with acc.accumulate(model):
                    with acc.autocast():
                        logits = forward_model(model, samples.to(weight_dtype), meta).float()
                        loss = criterion(logits, targets)
                    acc.backward(loss)
                    if acc.sync_gradients:
                        clip = config.TRAIN.CLIP_GRAD or float("inf")
                        norm = acc.clip_grad_norm_(model.parameters(), clip)
                        norms.append(float(norm) if norm is not None else float("nan"))
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                if acc.sync_gradients:
                    state.updates += 1
                    lr_scheduler.step_update(state.updates)
                    if ema is not None:
                        ema.update(unwrapped)
                loss_sum += loss.item()
                if idx % config.PRINT_FREQ == 0:
                    logger.info(
                        f"Train: [{epoch}/{config.TRAIN.EPOCHS}][{idx}/{len(loader_train)}] "
                        f"loss {loss.item():.4f}"
                    )
            train_loss = loss_sum / max(len(loader_train), 1)
            val = validate(config, loader_val, eval_model, device)
            state.epoch = epoch
            state.max_accuracy = max(state.max_accuracy, val["acc1"])
            record = {
                "epoch": epoch,
                "train_loss": train_loss,
                "acc1": val["acc1"],
                "acc5": val["acc5"],
                "val_loss": val["loss"],
                "max_accuracy": state.max_accuracy,
                "time": time.time() - start,
                "grad_norm": float(np.nanmean(norms)) if norms else None,
                "lr": max(g["lr"] for g in optimizer.param_groups),
            }
            if ema is not None:
                val_ema = validate(config, loader_val, ema.module, device)
                state.max_accuracy_ema = max(state.max_accuracy_ema, val_ema["acc1"])
                record.update(ema_acc1=val_ema["acc1"], max_accuracy_ema=state.max_accuracy_ema)
            logger.info(
                f"Epoch {epoch}: top-1 {val['acc1']:.2f}% (max {state.max_accuracy:.2f}%), "
                f"train loss {train_loss:.4f}"
            )
            last.update(acc1=val["acc1"], acc5=val["acc5"], train_loss=train_loss)
            if metrics is not None:
                metrics.log("epoch", epoch, **record)
            if args.logger:
                acc.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=epoch)
            if epoch % config.SAVE_FREQ == 0 or epoch == config.TRAIN.EPOCHS - 1:
                acc.save_state(os.path.join(config.OUTPUT, STATE_DIR, f"epoch{epoch}"))  # collective
                acc.wait_for_everyone()
                if acc.is_main_process:
                    # Written after the state is complete: the commit point for auto-resume.
                    _atomic_text(os.path.join(config.OUTPUT, STATE_DIR, "latest"), f"epoch{epoch}")
                    _prune(config.OUTPUT, config.SAVE_CKPT_NUM)
            acc.wait_for_everyone()
            epochs_run += 1
    finally:
        if metrics is not None:
            metrics.close()
    if last["acc1"] is None:
        val = validate(config, loader_val, eval_model, device)
        last.update(acc1=val["acc1"], acc5=val["acc5"])
    if acc.is_main_process:
        plot_curves(os.path.join(config.OUTPUT, "metrics.jsonl"), os.path.join(config.OUTPUT, "curves.png"))
    result = {
        "max_accuracy": max(state.max_accuracy, last["acc1"]),
        **last,
        "epochs_run": epochs_run,
        "output": config.OUTPUT,
        "updates": state.updates,
    }
    if ema is not None:
        result["max_accuracy_ema"] = state.max_accuracy_ema
    return result


if __name__ == "__main__":
    main()
