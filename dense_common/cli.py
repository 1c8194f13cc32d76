"""Small pieces shared by the detection and segmentation command-line scripts: config
loading with clear errors for bad paths, and the checkpoint-path check."""

from __future__ import annotations

import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction

from classification.output_root import default_output


def fail(message: str) -> SystemExit:
    """A ``SystemExit`` carrying ``message`` (argparse-style: ``raise fail(...)`` prints it
    without a traceback and exits with status 1)."""
    return SystemExit(f"error: {message}")


def load_config(path: str, cfg_options: dict | None = None) -> Config:
    """``Config.fromfile`` after checking the path, with ``--cfg-options`` merged."""
    if not osp.isfile(path):
        what = "is a directory" if osp.isdir(path) else "does not exist"
        raise fail(f"config file {path!r} {what}")
    try:
        cfg = Config.fromfile(path)
    except Exception as error:  # noqa: BLE001 - report any parse/import problem in one line
        raise fail(f"could not load config {path!r}: {type(error).__name__}: {error}") from error
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def check_checkpoint(path: str) -> str:
    """``path`` unchanged when it is a URL or an existing file; otherwise exits with a
    message naming it."""
    if "://" in path or osp.isfile(path):
        return path
    what = "is a directory, not a file" if osp.isdir(path) else "does not exist"
    raise fail(f"checkpoint {path!r} {what}")


def default_work_dir(cfg: Config, config_path: str, work_dir: str | None) -> str:
    """``--work-dir``, else the config's ``work_dir``, else ``$INTERNIMAGE_OUTPUT/work_dirs/<config
    name>`` (outside the checkout, see classification/output_root.py)."""
    if work_dir:
        return work_dir
    if cfg.get("work_dir"):
        return cfg.work_dir
    return default_output("work_dirs", osp.splitext(osp.basename(config_path))[0])


def set_local_rank(local_rank: int) -> None:
    """torch.distributed.launch passes ``--local-rank``; mmengine reads ``LOCAL_RANK``."""
    os.environ.setdefault("LOCAL_RANK", str(local_rank))


# --------------------------------------------------------------------------- published flags
# The command lines of the published (mmdet 2 / mmseg 0.x) scripts, mapped onto mmengine's
# mechanisms: each flag changes the config (or the process) the way the old one behaved.

def one_of(new: object, old: object, new_flag: str, old_flag: str) -> object:
    """The value of ``new_flag`` or of its published alias ``old_flag``; both given is an
    error naming them."""
    if new is not None and old is not None:
        raise fail(f"give {new_flag} or {old_flag} (its published alias), not both")
    return new if new is not None else old


def add_published_train_flags(parser: argparse.ArgumentParser, framework: str, *,
                               load_from: bool = False) -> None:
    """The published training flags both trees share (``--load-from`` only where the
    published script had it), in one argument group named after ``framework``."""
    published = parser.add_argument_group(f"published ({framework}) flags")
    if load_from:
        published.add_argument("--load-from", metavar="CKPT", help="start from these weights (a fresh run)")
    published.add_argument("--resume-from", metavar="CKPT", help="resume from CKPT (= --resume CKPT)")
    published.add_argument("--auto-resume", action="store_true",
                           help="resume from the newest checkpoint of the work dir (= --resume)")
    published.add_argument("--no-validate", action="store_true", help="no validation during training")
    published.add_argument("--seed", type=int, help="random seed")
    published.add_argument("--diff-seed", action="store_true", help="a different seed on each rank")
    published.add_argument("--deterministic", action="store_true", help="deterministic cuDNN algorithms")
    published.add_argument("--gpu-id", type=int, help="the GPU of a non-distributed run")
    published.add_argument("--gpu-ids", type=int, nargs="+", help="published form of --gpu-id (the first)")
    published.add_argument("--options", nargs="+", action=DictAction, metavar="KEY=VALUE",
                           help="published alias of --cfg-options")


def resolve_resume(args: argparse.Namespace) -> None:
    """Folds ``--resume-from`` / ``--auto-resume`` into ``args.resume`` (a path or ``'auto'``);
    more than one of them, or ``--load-from`` beside one, is an error naming the flags."""
    resume_sources = [flag for flag, given in (("--resume", args.resume is not None),
                                               ("--resume-from", args.resume_from is not None),
                                               ("--auto-resume", args.auto_resume)) if given]
    if len(resume_sources) > 1:
        raise fail(f"give one of {', '.join(resume_sources)}")
    if getattr(args, "load_from", None) is not None and resume_sources:
        raise fail(f"give --load-from (a fresh run from weights) or {resume_sources[0]}, not both")
    if args.resume_from is not None:
        args.resume = args.resume_from
    elif args.auto_resume:
        args.resume = "auto"


def apply_train_flags(cfg: Config, args: argparse.Namespace) -> None:
    """Resume / load-from, ``--no-validate`` and the randomness flags onto ``cfg``."""
    if args.resume == "auto":
        cfg.resume, cfg.load_from = True, None  # mmengine: resume without a path = newest in work_dir
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, check_checkpoint(args.resume)
    if getattr(args, "load_from", None) is not None:
        cfg.resume, cfg.load_from = False, check_checkpoint(args.load_from)
    if args.no_validate:
        disable_validation(cfg)
    apply_randomness(cfg, seed=args.seed, diff_seed=args.diff_seed, deterministic=args.deterministic)
    per_run_visualizer(cfg)


def per_run_visualizer(cfg: Config) -> None:
    """The mmdet/mmseg runtimes name the visualizer ``'visualizer'``, a process-wide
    singleton: a second run in the same process (a notebook, a test session) would log its
    scalars into the first run's work dir. Without the name mmengine names it per run."""
    if isinstance(cfg.get("visualizer"), dict) and cfg.visualizer.get("name") == "visualizer":
        cfg.visualizer.pop("name")


def apply_randomness(cfg: Config, *, seed: int | None, diff_seed: bool, deterministic: bool) -> None:
    """``--seed`` / ``--diff-seed`` / ``--deterministic`` -> ``cfg.randomness`` (mmengine's
    ``set_random_seed``: ``seed``, ``diff_rank_seed``, ``deterministic``)."""
    if seed is None and not diff_seed and not deterministic:
        return
    randomness = dict(cfg.get("randomness") or {})
    if seed is not None:
        randomness["seed"] = seed
    if diff_seed:
        randomness["diff_rank_seed"] = True
    if deterministic:
        randomness["deterministic"] = True
    randomness.setdefault("seed", None)  # mmengine's set_randomness requires the key (None: random)
    cfg.randomness = randomness


def disable_validation(cfg: Config) -> None:
    """``--no-validate``: mmengine trains without a validation loop when ``val_dataloader``,
    ``val_cfg`` and ``val_evaluator`` are all None."""
    cfg.val_dataloader = None
    cfg.val_cfg = None
    cfg.val_evaluator = None
    hooks = cfg.get("default_hooks") or {}
    if hooks.get("checkpoint") and hooks["checkpoint"].get("save_best"):
        hooks["checkpoint"]["save_best"] = None  # there is no metric to pick a best checkpoint by


def select_gpu(gpu_id: int | None, gpu_ids: list[int] | None) -> int | None:
    """``--gpu-id N`` / ``--gpu-ids N ...`` (non-distributed runs use one GPU; the published
    scripts took the first of ``--gpu-ids``): only that GPU is made visible to this process.
    Returns the GPU chosen (None: unchanged)."""
    chosen = one_of(gpu_id, gpu_ids[0] if gpu_ids else None, "--gpu-id", "--gpu-ids")
    if chosen is None:
        return None
    if chosen < 0:
        raise fail(f"--gpu-id must be >= 0, got {chosen}")
    if gpu_ids and len(gpu_ids) > 1:
        print(f"--gpu-ids: a non-distributed run uses one GPU; using the first, {chosen}")
    import torch

    if torch.cuda.is_initialized():
        raise fail("--gpu-id must be applied before CUDA is initialised")
    os.environ["CUDA_VISIBLE_DEVICES"] = str(chosen)
    return chosen


def _evaluators(cfg: Config) -> list:
    evaluator = cfg.get("test_evaluator")
    if evaluator is None:
        raise fail("the config has no test_evaluator")
    return list(evaluator) if isinstance(evaluator, (list, tuple)) else [evaluator]


def _metric_parameters(evaluator, scope: str) -> set[str]:
    import importlib
    import inspect

    importlib.import_module(f"{scope}.evaluation")  # registers the tree's metrics
    metric_class = importlib.import_module(f"{scope}.registry").METRICS.get(evaluator["type"])
    if metric_class is None:
        raise fail(f"unknown test_evaluator type {evaluator['type']!r}")
    return set(inspect.signature(metric_class).parameters)


def set_eval_metrics(cfg: Config, metrics: list[str], *, scope: str, names: tuple[str, ...]) -> None:
    """``--eval M [M ...]``: the metrics each test evaluator computes (the parameter of the
    evaluator class among ``names``, e.g. CocoMetric ``metric``, IoUMetric ``iou_metrics``)."""
    applied = False
    for evaluator in _evaluators(cfg):
        parameters = _metric_parameters(evaluator, scope)
        name = next((n for n in names if n in parameters), None)
        if name is not None:
            evaluator[name] = list(metrics) if len(metrics) > 1 or name == "iou_metrics" else metrics[0]
            applied = True
    if not applied:
        types = ", ".join(str(e["type"]) for e in _evaluators(cfg))
        raise fail(f"--eval: the test evaluator ({types}) takes no choice of metrics")


def apply_eval_options(cfg: Config, options: dict, *, scope: str, renames: dict[str, str]) -> None:
    """``--eval-options K=V ...``: keyword arguments of the test evaluator (the published
    ``dataset.evaluate(**kwargs)``); published names are translated (``renames``, e.g.
    ``jsonfile_prefix`` -> CocoMetric's ``outfile_prefix``). A key no evaluator takes is an
    error naming it."""
    for key, value in options.items():
        name = renames.get(key, key)
        taken = False
        for evaluator in _evaluators(cfg):
            if name in _metric_parameters(evaluator, scope):
                evaluator[name] = value
                taken = True
        if not taken:
            types = ", ".join(str(e["type"]) for e in _evaluators(cfg))
            raise fail(f"--eval-options {key}: the test evaluator ({types}) has no argument {name!r}")


def add_custom_hook(cfg: Config, hook: dict) -> None:
    hooks = list(cfg.get("custom_hooks") or [])
    hooks.append(hook)
    cfg.custom_hooks = hooks


def parse_shape(values: list[int], flag: str = "--shape") -> tuple[int, int]:
    """``--shape H [W]``: one value is a square input."""
    if len(values) == 1:
        return values[0], values[0]
    if len(values) == 2:
        return values[0], values[1]
    raise fail(f"{flag} takes one or two values (H [W]), got {len(values)}")
