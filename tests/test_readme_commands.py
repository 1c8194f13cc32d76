"""Every command in the ```bash blocks of the READMEs in ``READMES`` (the repository's,
detection/, segmentation/, sam/ and the autonomous-driving baselines'), checked on generated
data; a README command that breaks (or a new one nobody accounted for) fails here.

How a README line becomes a check, explicitly and in this order:

1. Commands: one per line of a ```bash block; lines ending in ``\\`` are joined; ``# ...``
   comments are dropped; ``VAR=value`` prefixes (``GPUS=8``) are kept aside. A ``cd DIR``
   line makes the following commands of its block run from ``DIR`` (relative paths,
   ``./tools/x.sh`` and ``python tools/x.py`` resolve there); ``cd`` itself is checked to
   name a folder of the repository.
2. ``{a,b}`` expands to one command per alternative (as the shell would).
3. Optional parts ``[...]`` (nested too): an optional *option* (``[--amp]``,
   ``[--shape H W]``, ``[--form portable|plugin]``) is included, its first alternative
   taken, so options are checked too; optional descriptive parts (``[train.py options]``,
   ``[PARTITION JOB_NAME]``, ``[...]``) are dropped.
4. Placeholders: the tokens of ``PLACEHOLDERS`` (``CONFIG``, ``CKPT``, ``IMG``,
   ``/data/imagenet``, ``ckpt.pth``, ``photo.jpg``, ``N``, ``DET_CKPT``, ``/PATH``,
   ``data/argoverse2/...``, ...) become generated files or small values, whole words, the
   value of ``key=TOKEN`` and the head of ``DIR/...`` alike; ``--cfg ...`` becomes the tiny
   classification config generated here;
   ``CONFIG`` is the tree's tiny config for a run and its published config for a parse.
5. Every path into the repository that remains (``classification/configs/...yaml``,
   ``detection/configs/...py``, scripts) must exist.
6. How the command is checked depends on its program (``MODES``):
   - ``run``: executed as written (after 1-5) in a subprocess from the repository root
     with ``INTERNIMAGE_OUTPUT`` in a temporary folder; it must exit 0, print what it
     promises, and leave the checkout clean (no ``output/``, ``work_dirs/``, ... appear).
   - ``parse``: the script's own argument parser accepts the line (the script runs
     in-process as ``__main__`` (``python -m``: the module), from the command's folder, and
     is stopped right after its outermost ``parse_args`` / ``parse_known_args``, however its
     ``main`` reaches it). Used where running costs minutes and another test runs the
     command for real; ``MODES`` names that test.
   - ``make``: ``make -n`` accepts the target and its variables (``make help`` runs).
   - ``shell``: launcher scripts (torchrun / srun / GPU counts): ``bash -n`` and, for the
     python part, ``parse``; a script that calls ``torchrun`` itself runs as written (with
     its interpreter, or directly: it must be executable) against a stand-in ``torchrun``
     that records its arguments, and the python command it built is ``parse``-d; the
     multi-process runs are tested elsewhere (named).
   - ``pin``: ``pip install`` lines are not run: every requirement they name must be a line
     of ``requirements/nodeps.txt`` (the bootstrap's ``--no-deps`` pins), with ``--no-deps``.
   - ``cd``: the folder exists.
   A program without a ``MODES`` entry fails the test.
"""

from __future__ import annotations

import argparse
import os
import re
import runpy
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest

ROOT = Path(__file__).resolve().parents[1]
READMES = ("README.md", "detection/README.md", "segmentation/README.md", "sam/README.md",
           "autonomous_driving/README.md", "autonomous_driving/openlane-v2/README.md",
           "autonomous_driving/Online-HD-Map-Construction/README.md")
REPO_DIRS = ("classification", "detection", "segmentation", "dense_common", "ops_dcnv3", "tensorrt", "tools",
             "sam", "autonomous_driving")
OCC = "autonomous_driving/occupancy_prediction"
OPENLANE = "autonomous_driving/openlane-v2"
HDMAP = "autonomous_driving/Online-HD-Map-Construction"
# Published config a placeholder CONFIG / DET_CFG stands for, per folder of the command
CONFIGS = {"detection": "detection/configs/coco/mask_rcnn_internimage_t_fpn_1x_coco.py",
           "segmentation": "segmentation/configs/ade20k/upernet_internimage_t_512_160k_ade20k.py",
           OPENLANE: "plugin/mmdet3d/configs/internimage-s.py"}
DET_CFG = "detection/configs/coco/dino_4scale_internimage_h_objects365_coco_ss.py"
NODEPS = ROOT / "requirements" / "nodeps.txt"
T_AD, T_SAM = "tests/autonomous_driving", "tests/sam/test_zero_shot_instance_seg.py"  # for MODES' notes
# What a command must never leave in the checkout (the defaults of the published scripts).
FORBIDDEN_OUTPUTS = ("output", "work_dirs", "demo_out", "runs", "features")

TINY_CLS_YAML = """\
DATA:
  IMG_SIZE: 32
  BATCH_SIZE: 2
  NUM_WORKERS: 0
MODEL:
  NUM_CLASSES: 3
  DROP_PATH_RATE: 0.0
  INTERN_IMAGE:
    CHANNELS: 16
    DEPTHS: [1, 1, 1, 1]
    GROUPS: [1, 2, 4, 8]
TRAIN:
  EPOCHS: 1
  WARMUP_EPOCHS: 0
AUG:
  MIXUP: 0.0
  CUTMIX: 0.0
  REPROB: 0.0
  AUTO_AUGMENT: none
"""


@dataclass(frozen=True)
class Mode:
    kind: str  # run | parse | make | shell | pin | cd
    why: str = ""  # for parse / shell: the test that runs it for real
    expect: str = ""  # for run: text the output must contain


# program (first word, or the script path after python/torchrun/accelerate launch) -> check
MODES: dict[str, Mode] = {
    "make": Mode("make", "make demo: tests/classification/test_demo_digits.py; make test: CI itself"),
    "classification/main.py": Mode("parse", "tests/classification/test_trainer.py: train, resume, eval"),
    "classification/main.py --throughput": Mode("run", expect="throughput"),
    "classification/main.py --eval": Mode("run", expect="Accuracy of the network"),
    "classification/extract_feature.py": Mode("run", expect="patch_embed: (1,"),
    "classification/main_deepspeed.py": Mode("parse", "tests/classification/test_deepspeed.py"),
    "classification/main_accelerate.py": Mode("parse", "tests/classification/test_accelerate_launchers.py"),
    "classification/tools/memory_benchmark.py": Mode("parse", "memory per setting: minutes on CPU"),
    "classification/export.py": Mode("parse", "tests/deploy/test_onnx_export.py"),
    "classification/huggingface/convert.py": Mode("parse", "tests/classification (Hub-layout tests)"),
    "detection/train.py": Mode("parse", "tests/detection/test_det_train_pipeline.py"),
    "detection/test.py": Mode("parse", "tests/detection/test_det_train_pipeline.py"),
    "detection/image_demo.py": Mode("parse", "tests/detection/test_det_scripts.py"),
    "detection/get_flops.py": Mode("parse", "tests/detection/test_det_scripts.py (get_flops)"),
    "detection/tools/convert_checkpoint.py": Mode("parse", "tests on the published checkpoint key maps"),
    "detection/benchmark.py": Mode("parse", "make bench"),
    "detection/deploy.py": Mode("parse", "tests/deploy/test_mmdeploy_export.py"),
    "segmentation/train.py": Mode("parse", "tests/segmentation/test_seg_scripts.py"),
    "segmentation/test.py": Mode("parse", "tests/segmentation/test_seg_scripts.py"),
    "segmentation/image_demo.py": Mode("parse", "tests/segmentation/test_seg_scripts.py"),
    "segmentation/get_flops.py": Mode("parse", "tests/segmentation/test_seg_scripts.py"),
    "segmentation/benchmark.py": Mode("parse", "make bench"),
    "segmentation/deploy.py": Mode("parse", "tests/deploy/test_mmdeploy_export.py"),
    "torchrun": Mode("shell", "tests/classification/test_trainer.py (torchrun, two processes)"),
    "accelerate": Mode("shell", "tests/classification/test_accelerate_launchers.py"),
    "classification/train_in1k.sh": Mode("shell", "SLURM srun / 8 GPUs"),
    "classification/train_in1k_deepspeed.sh": Mode("shell", "SLURM srun / 8 GPUs"),
    "classification/train_inat18.sh": Mode("shell", "SLURM srun / 8 GPUs"),
    "detection/dist_train.sh": Mode("shell", "tests/segmentation/test_seg_cpu_training.py (same script)"),
    "detection/dist_test.sh": Mode("shell", "GPUs"),
    "detection/slurm_train.sh": Mode("shell", "SLURM"),
    "detection/slurm_test.sh": Mode("shell", "SLURM"),
    "segmentation/dist_train.sh": Mode("shell", "tests/segmentation/test_seg_cpu_training.py"),
    "segmentation/dist_test.sh": Mode("shell", "GPUs"),
    "segmentation/slurm_train.sh": Mode("shell", "SLURM"),
    "segmentation/slurm_test.sh": Mode("shell", "SLURM"),
    "cd": Mode("cd"),
    "pip": Mode("pin", "tools/bootstrap.sh installs requirements/nodeps.txt with --no-deps"),
    # sam/
    "sam/main_zero_shot_instance_seg.py": Mode(
        "parse", f"{T_SAM}: tiny detector prompts a tiny SAM, box and mask AP"),
    "torchrun sam/main_zero_shot_instance_seg.py": Mode(
        "shell", f"{T_SAM}::test_two_processes_give_the_single_process_predictions"
                 " (2 gloo processes, slow)"),
    # occupancy (run from autonomous_driving/occupancy_prediction)
    f"{OCC}/tools/create_data.py": Mode(
        "parse", f"{T_AD}/test_occ_tools.py::test_create_data_occ_writes_the_info_files"),
    f"{OCC}/tools/train.py": Mode("parse", f"{T_AD}/test_occ_tools.py: trains and resumes"),
    f"{OCC}/tools/test.py": Mode("parse", f"{T_AD}/test_occ_tools.py: mIoU, F-score, --show-dir"),
    f"{OCC}/tools/dist_train.sh": Mode(
        "shell", "the command line: test_occ_tools.py (stand-in torchrun); the 8-GPU run: GPUs"),
    f"{OCC}/tools/dist_test.sh": Mode(
        "shell", f"{T_AD}/test_occ_tools.py::test_dist_test_on_cpu_matches_the_single_process_run"),
    # OpenLane-V2 (run from autonomous_driving/openlane-v2)
    "autonomous_driving/openlane_v2/collection.py": Mode(
        "parse", f"{T_AD}/openlane/test_openlane_data.py (preprocess, what main calls)"),
    f"{OPENLANE}/tools/train.py": Mode("parse", f"{T_AD}/openlane/test_openlane_tools.py: loss falls"),
    f"{OPENLANE}/tools/test.py": Mode(
        "parse", f"{T_AD}/openlane/test_openlane_tools.py: OLS, dump, pictures"),
    f"{OPENLANE}/tools/dist_train.sh": Mode("shell", "GPUs (test_openlane_tools.py: the flags)"),
    f"{OPENLANE}/tools/dist_test.sh": Mode("shell", "GPUs (test_openlane_tools.py: the flags)"),
    # online HD map (run from autonomous_driving/Online-HD-Map-Construction)
    f"{HDMAP}/tools/train.py": Mode("parse", f"{T_AD}/hdmap/test_hdmap_tools.py: loss falls"),
    f"{HDMAP}/tools/test.py": Mode(
        "parse", f"{T_AD}/hdmap/test_hdmap_tools.py: --eval table, --format-only submissions"),
    f"{HDMAP}/tools/evaluate_submission.py": Mode(
        "parse", f"{T_AD}/hdmap/test_hdmap_tools.py::test_evaluate_submission_cli"),
    f"{HDMAP}/tools/visualization/visualize.py": Mode(
        "parse", f"{T_AD}/hdmap/test_hdmap_tools.py::test_visualize_writes_pictures"),
    f"{HDMAP}/tools/dist_train.sh": Mode("shell", "GPUs (test_hdmap_tools.py: bash -n, usage)"),
    f"{HDMAP}/tools/dist_test.sh": Mode("shell", "GPUs (test_hdmap_tools.py: bash -n, usage)"),
}
# main.py lines with these flags and the placeholder config (`--cfg ...`) are run on the tiny
# config; lines naming a published config need its dataset and are parsed.
RUN_FLAGS = ("--throughput", "--eval")


# ----------------------------------------------------------------------------- parsing
def bash_blocks(text: str) -> list[list[str]]:
    """The command lines of each ```bash block of a markdown text (rule 1)."""
    blocks: list[list[str]] = []
    commands, block, pending = [], False, ""
    for line in text.splitlines():
        if line.startswith("```"):
            block = line.strip() == "```bash"
            commands = []
            if block:
                blocks.append(commands)
            continue
        if not block:
            continue
        line = pending + line.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if line:
            commands.append(" ".join(line.split()))
    return blocks


def bash_commands(text: str) -> list[str]:
    """The command lines of the ```bash blocks of a markdown text (rule 1)."""
    return [command for block in bash_blocks(text) for command in block]


def expand_braces(command: str) -> list[str]:
    """``{a,b}`` -> one command per alternative (rule 2)."""
    match = re.search(r"\{([^{}]*,[^{}]*)\}", command)
    if not match:
        return [command]
    return [c for alt in match.group(1).split(",")
            for c in expand_braces(command[:match.start()] + alt + command[match.end():])]


def resolve_optional(command: str) -> str:
    """Optional options included with their first alternative, other optional parts
    dropped (rule 3); innermost brackets first."""
    while (match := re.search(r"\[([^\[\]]*)\]", command)):
        inner = match.group(1).strip()
        if inner.startswith("-"):
            words = [w.split("|")[0] for w in inner.split() if w != "..."]
            replacement = " ".join(words)
        else:
            replacement = ""
        command = command[:match.start()] + replacement + command[match.end():]
    return " ".join(command.split())


def in_repo(word: str, cwd: str) -> str:
    """``word`` as a repository-relative path when run from ``cwd`` (rule 1)."""
    return os.path.normpath(os.path.join(cwd, word)) if cwd and not os.path.isabs(word) else word


def program(words: list[str], cwd: str = "") -> str:
    """The MODES key of a command run from ``cwd``."""
    rest = [w for w in words if not re.match(r"^[A-Z_]+=", w)]
    if rest[0] in ("sh", "bash"):
        rest = rest[1:]
    first = rest[0]
    if first in ("python", "python3"):
        # python -m: a module on the path (the repository root), not under cwd
        script = in_repo(rest[1], cwd) if rest[1] != "-m" else rest[2].replace(".", "/") + ".py"
        if script == "classification/main.py" and "--cfg ..." in " ".join(rest):
            for flag in RUN_FLAGS:
                if flag in rest:
                    return f"{script} {flag}"
        return script
    if first == "torchrun":
        script = next((in_repo(w, cwd) for w in rest if w.endswith(".py")), "")
        return f"torchrun {script}" if f"torchrun {script}" in MODES else first
    return in_repo(first, cwd) if "/" in first else first


def readme_commands() -> list[tuple[str, str, str]]:
    """(README, folder the command runs from, command)."""
    found = []
    for name in READMES:
        for block in bash_blocks((ROOT / name).read_text()):
            cwd = ""
            for line in block:
                for command in expand_braces(line):
                    found.append((name, cwd, command))
                words = line.split()
                if words[0] == "cd" and len(words) == 2:
                    cwd = in_repo(words[1], cwd)
    return found


COMMANDS = readme_commands()


# ----------------------------------------------------------------------------- generated data
@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    """A tiny classification config, dataset, checkpoint and photo; output folders."""
    import torch
    from PIL import Image
    from skimage import data as skdata

    from classification.config import load_config_file
    from classification.models import build_model

    root = tmp_path_factory.mktemp("readme")
    cfg = root / "tiny.yaml"
    cfg.write_text(TINY_CLS_YAML)
    photo = Image.fromarray(skdata.astronaut()).resize((64, 64))
    photo.save(root / "photo.jpg")
    for split in ("train", "val"):
        for k, name in enumerate(("coffee", "chelsea", "astronaut")):
            folder = root / "imagenet" / split / f"class{k}"
            folder.mkdir(parents=True)
            Image.fromarray(getattr(skdata, name)()).convert("RGB").resize((40, 40)).save(folder / "0.png")
    model = build_model(load_config_file(str(cfg)))
    torch.save({"model": model.state_dict()}, root / "ckpt.pth")
    (root / "out").mkdir()
    # the driving baselines' data folders (parsed, never read) and an annotation file
    for folder in ("occ3d-nus", "OpenLane-V2", "argoverse2"):
        (root / "data" / folder).mkdir(parents=True)
    (root / "data" / "argoverse2" / "val_annotations.json").write_text("{}")
    return {"root": str(root), "cfg": str(cfg), "photo": str(root / "photo.jpg"),
            "imagenet": str(root / "imagenet"), "ckpt": str(root / "ckpt.pth"), "out": str(root / "out")}


def placeholders(data: dict[str, str], tree: str, run: bool) -> dict[str, str]:
    """README token -> what the check uses instead (rule 4)."""
    out, gen = data["out"], f"{data['root']}/data"
    return {
        "CONFIG": CONFIGS.get(tree, data["cfg"]), "CKPT": data["ckpt"], "IMG": data["photo"],
        "IMG_OR_DIR": data["photo"], "MORE.jpg": data["photo"], "photo.jpg": data["photo"],
        "/data/imagenet": data["imagenet"], "data/imagenet": data["imagenet"], "ckpt.pth": data["ckpt"],
        "OUT": f"{out}/work", "DIR": f"{out}/dir", "PRED_DIR": f"{out}/pred", "VIS_DIR": f"{out}/vis",
        "WORK_DIR": f"{out}/work", "OUT/epoch9": f"{out}/epoch9", "model.pth": f"{out}/model.pth",
        "result.jpg": f"{out}/result.jpg", "demo_out": f"{out}/demo_out", "preds.pkl": f"{out}/preds.pkl",
        "ckpt": f"{out}/ckpt", "N": "2", "S": "64", "H": "64", "W": "64", "GPUS": "2",
        "KEY": "TRAIN.EPOCHS", "VALUE": "1", "KEY=VALUE": "train_cfg.max_iters=1",
        "K=V": "train_cfg.max_iters=1",
        # sam/ and the driving baselines
        "DET_CFG": DET_CFG, "DET_CKPT": data["ckpt"], "SAM_CKPT": data["ckpt"],
        "pretrained/dino_4scale_internimage_h_objects365_coco_ss.pth": data["ckpt"],
        "pretrained/sam_vit_h_4b8939.pth": data["ckpt"],
        "work_dirs/bevformer_intern-s_occ/epoch_24.pth": data["ckpt"],
        "./data/occ3d-nus": f"{gen}/occ3d-nus", "./data": gen, "data/OpenLane-V2": f"{gen}/OpenLane-V2",
        "data/argoverse2/val_annotations.json": f"{gen}/argoverse2/val_annotations.json",
        "/PATH": f"{out}/path", "LOG_ID": "log0",
    }


def substitute(words: list[str], data: dict[str, str], tree: str, run: bool) -> list[str]:
    table = placeholders(data, tree, run)
    result = []
    for i, word in enumerate(words):
        if i > 0 and words[i - 1] == "--cfg" and (word == "..." or run):
            result.append(data["cfg"])  # the tiny config (rule 4)
        elif word == "...":
            continue
        elif word in table:
            result.append(table[word])
        elif "=" in word and word.split("=", 1)[1] in table:  # dump_dir=/PATH
            key, value = word.split("=", 1)
            result.append(f"{key}={table[value]}")
        elif "/" in word and word.split("/", 1)[0] in table and word.split("/", 1)[0].isupper():  # DIR/x.json
            head, tail = word.split("/", 1)
            result.append(f"{table[head]}/{tail}")
        else:
            result.append(word)
    return result


def repo_paths(words: list[str], cwd: str = "") -> list[str]:
    """The repository files a command names (rule 5), relative to the repository root."""
    paths = [in_repo(w, cwd) for w in words
             if not w.startswith("-") and re.search(r"\.(py|yaml|json|sh)$", w)]
    return [p for p in paths if p.split("/")[0] in REPO_DIRS]


# ----------------------------------------------------------------------------- checks
class _Parsed(BaseException):
    """Raised once the line is parsed; a BaseException, so no ``except Exception`` of the
    script under test swallows it."""


def parse_only(script: str, argv: list[str], cwd: str = "", module: str = "") -> argparse.Namespace:
    """Runs ``script`` as ``python script argv...`` (or ``python -m module argv...``) would,
    in-process as ``__main__`` from ``cwd``, and stops it right after its outermost
    ``parse_args`` / ``parse_known_args`` accepted the line (however its ``main`` gets there:
    directly, through a helper, at import time, through subparsers)."""
    parser = argparse.ArgumentParser
    depth = [0]  # parse_args calls parse_known_args, subparsers call it again: stop the outermost only

    def stop_after(original):
        def patched(self, *args, **kwargs):
            depth[0] += 1
            try:
                result = original(self, *args, **kwargs)
            finally:
                depth[0] -= 1
            if depth[0]:
                return result
            raise _Parsed(result)
        return patched

    saved_env, saved_path, saved_cwd = dict(os.environ), list(sys.path), os.getcwd()
    path = str(ROOT / script)
    try:
        os.chdir(ROOT / cwd)
        with mock.patch.object(parser, "parse_args", stop_after(parser.parse_args)), \
                mock.patch.object(parser, "parse_known_args", stop_after(parser.parse_known_args)), \
                mock.patch.object(sys, "argv", [path, *argv]):
            try:
                if module:
                    runpy.run_module(module, run_name="__main__", alter_sys=False)
                else:
                    runpy.run_path(path, run_name="__main__")
            except _Parsed as parsed:
                return parsed.args[0]
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        sys.path[:] = saved_path
    raise AssertionError(f"{script} finished without parsing arguments")


def _script_and_args(words: list[str], cwd: str = "") -> tuple[str, list[str], str]:
    """The python script of a launcher line (repository-relative), its arguments and, for
    ``python -m``, the module."""
    for i, word in enumerate(words):
        if word == "-m" and i and words[i - 1] in ("python", "python3", sys.executable):
            return words[i + 1].replace(".", "/") + ".py", words[i + 2:], words[i + 1]
        path = os.path.relpath(word, ROOT) if os.path.isabs(word) else in_repo(word, cwd)
        if word.endswith(".py") and path.split("/")[0] in REPO_DIRS:
            return path, words[i + 1:], ""
    raise AssertionError(f"no repository script in {' '.join(words)}")


def _launched_command(words: list[str], cwd: str, tmp_path: Path) -> list[str] | None:
    """Runs a launcher script that calls torchrun itself, as the README line does, against
    a stand-in torchrun; returns the python command it built (None: no torchrun in it)."""
    script = repo_paths(words, cwd)[0]
    if "torchrun" not in (ROOT / script).read_text():
        return None
    fake = tmp_path / "bin" / "torchrun"
    fake.parent.mkdir()
    record = tmp_path / "torchrun_argv"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\0" "$@" > {shlex.quote(str(record))}\n')
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    argv = list(words)
    while re.match(r"^[A-Z_]+=", argv[0]):  # GPUS=8 ...: the environment
        key, value = argv.pop(0).split("=", 1)
        env[key] = value
    if argv[0] not in ("sh", "bash"):
        assert os.access(ROOT / script, os.X_OK), f"{script} is run directly but is not executable"
    proc = subprocess.run(argv, cwd=ROOT / cwd, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"`{' '.join(words)}` ->\n{proc.stdout}{proc.stderr}"
    recorded = record.read_text().split("\0")[:-1]
    return ["torchrun", *recorded]


def _outputs_in_checkout() -> set[str]:
    return {name for name in FORBIDDEN_OUTPUTS if (ROOT / name).exists()}


@pytest.mark.parametrize("readme,cwd,command", [
    pytest.param(n, d, c, id=f"(cd {d}) {c}" if d else c) for n, d, c in COMMANDS])
def test_readme_command(readme: str, cwd: str, command: str, data: dict[str, str], tmp_path: Path) -> None:
    resolved = resolve_optional(command)
    words = shlex.split(resolved)
    key = program(words, cwd)
    assert key in MODES, (f"{readme}: `{command}` is not accounted for: add its program {key!r} to "
                          "MODES in tests/test_readme_commands.py")
    mode = MODES[key]
    tree = cwd or next((w.split("/")[0] for w in words if w.split("/")[0] in ("detection", "segmentation")),
                       "")
    words = substitute(words, data, tree, run=mode.kind == "run")
    missing = [p for p in repo_paths(words, cwd) if not (ROOT / p).exists()]
    assert not missing, f"{readme}: `{command}` names files that do not exist: {missing}"

    if mode.kind == "cd":
        assert len(words) == 2 and (ROOT / in_repo(words[1], cwd)).is_dir(), \
            f"{readme}: `{command}`: no such folder in the repository"
        return
    if mode.kind == "pin":
        pins = {line.strip() for line in NODEPS.read_text().splitlines() if line.strip() and line[0] != "#"}
        named = [w for w in words[2:] if not w.startswith("-")]
        assert words[1] == "install" and "--no-deps" in words, \
            f"{readme}: `{command}`: not a --no-deps install"
        assert named and set(named) <= pins, f"{readme}: `{command}` names {named}, {NODEPS.name} pins {pins}"
        return

    if mode.kind == "make":
        target = words[1]
        flags = ["help"] if target == "help" else ["-n", *words[1:]]
        proc = subprocess.run(["make", "-s", *flags], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"`{command}`: {proc.stdout}{proc.stderr}"
        if target != "help":
            assert "bootstrap" in proc.stdout or target in ("shell",), proc.stdout
        return
    if mode.kind == "shell":
        scripts = [p for p in repo_paths(words, cwd) if p.endswith(".sh")]
        for script in scripts:
            check = subprocess.run(["bash", "-n", str(ROOT / script)], capture_output=True, text=True)
            assert check.returncode == 0, check.stderr
        launched = _launched_command(words, cwd, tmp_path) if scripts else words
        if launched and launched[0] in ("torchrun", "accelerate"):
            script, args, module = _script_and_args(launched, cwd)
            parse_only(script, args, cwd, module)
        return
    if mode.kind == "parse":
        script, args, module = _script_and_args(words, cwd)
        parse_only(script, args, cwd, module)
        return

    # run
    before = _outputs_in_checkout()
    env = dict(os.environ, INTERNIMAGE_OUTPUT=str(tmp_path / "default_output"), OMP_NUM_THREADS="1")
    argv = [sys.executable if w in ("python", "python3") else w for w in words]
    proc = subprocess.run(argv, cwd=ROOT / cwd, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"`{command}` ->\n{out[-3000:]}"
    assert mode.expect in out, f"`{command}`: expected {mode.expect!r} in\n{out[-3000:]}"
    assert _outputs_in_checkout() == before, f"`{command}` wrote into the checkout"


def test_every_readme_has_commands() -> None:
    counts = {name: sum(1 for n, _, _ in COMMANDS if n == name) for name in READMES}
    assert all(counts.values()), counts
    assert sum(1 for _, d, c in COMMANDS
               if MODES.get(program(shlex.split(resolve_optional(c)), d), Mode("")).kind == "run") >= 3


def test_rules_on_examples() -> None:
    """The rules of the module docstring, on the shapes of line they were written for."""
    assert bash_commands("```bash\npython a.py --x \\\n    --y  # note\n```\n") == ["python a.py --x --y"]
    assert expand_braces("python {detection,segmentation}/get_flops.py C") == [
        "python detection/get_flops.py C", "python segmentation/get_flops.py C"]
    assert resolve_optional("t.py C [--resume [CKPT]] [--form a|b] [train.py options] [...]") == \
        "t.py C --resume --form a"
    assert bash_blocks("```bash\ncd a/b\n./tools/x.sh C\n```\n```bash\npython t.py\n```\n") == [
        ["cd a/b", "./tools/x.sh C"], ["python t.py"]]
    assert program(["./tools/x.sh", "C"], "a/b") == "a/b/tools/x.sh"
    assert program(["python", "-m", "a.b.c", "--x"], "a/b") == "a/b/c.py"  # a module, not under cwd
    assert repo_paths(["projects/c.py", "/tmp/x.py", "--y.py"], "sam") == ["sam/projects/c.py"]
    table = {"root": "/r", "out": "/o", "cfg": "/c", "ckpt": "/k", "photo": "/p", "imagenet": "/i"}
    assert substitute(["t.py", "dump_dir=/PATH", "DIR/s.json", "DIRS/s.json"], table, "", run=False) == [
        "t.py", "dump_dir=/o/path", "/o/dir/s.json", "DIRS/s.json"]
