"""Every command in the ```bash blocks of README.md, detection/README.md and
segmentation/README.md, checked on generated data; a README command that breaks (or a new
one nobody accounted for) fails here.

How a README line becomes a check, explicitly and in this order:

1. Commands: one per line of a ```bash block; lines ending in ``\\`` are joined; ``# ...``
   comments are dropped; ``VAR=value`` prefixes (``GPUS=8``) are kept aside.
2. ``{a,b}`` expands to one command per alternative (as the shell would).
3. Optional parts ``[...]`` (nested too): an optional *option* (``[--amp]``,
   ``[--shape H W]``, ``[--form portable|plugin]``) is included, its first alternative
   taken, so options are checked too; optional descriptive parts (``[train.py options]``,
   ``[PARTITION JOB_NAME]``, ``[...]``) are dropped.
4. Placeholders: the tokens of ``PLACEHOLDERS`` (``CONFIG``, ``CKPT``, ``IMG``,
   ``/data/imagenet``, ``ckpt.pth``, ``photo.jpg``, ``N``, ...) become generated files or
   small values; ``--cfg ...`` becomes the tiny classification config generated here;
   ``CONFIG`` is the tree's tiny config for a run and its published config for a parse.
5. Every path into the repository that remains (``classification/configs/...yaml``,
   ``detection/configs/...py``, scripts) must exist.
6. How the command is checked depends on its program (``MODES``):
   - ``run``: executed as written (after 1-5) in a subprocess from the repository root
     with ``INTERNIMAGE_OUTPUT`` in a temporary folder; it must exit 0, print what it
     promises, and leave the checkout clean (no ``output/``, ``work_dirs/``, ... appear).
   - ``parse``: the script's own argument parser accepts the line (its ``main(argv)`` is
     called in-process and stopped right after ``parse_args``). Used where running costs
     minutes and another test runs the command for real; ``MODES`` names that test.
   - ``make``: ``make -n`` accepts the target and its variables (``make help`` runs).
   - ``shell``: launcher scripts (torchrun / srun / GPU counts): ``bash -n`` and, for the
     python part, ``parse``; the multi-process runs are tested elsewhere (named).
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
READMES = ("README.md", "detection/README.md", "segmentation/README.md")
REPO_DIRS = ("classification", "detection", "segmentation", "dense_common", "ops_dcnv3", "tensorrt", "tools")
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
    kind: str  # run | parse | make | shell
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
}
# main.py lines with these flags and the placeholder config (`--cfg ...`) are run on the tiny
# config; lines naming a published config need its dataset and are parsed.
RUN_FLAGS = ("--throughput", "--eval")


# ----------------------------------------------------------------------------- parsing
def bash_commands(text: str) -> list[str]:
    """The command lines of the ```bash blocks of a markdown text (rule 1)."""
    commands, block, pending = [], False, ""
    for line in text.splitlines():
        if line.startswith("```"):
            block = line.strip() == "```bash"
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
    return commands


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


def program(words: list[str]) -> str:
    """The MODES key of a command."""
    rest = [w for w in words if not re.match(r"^[A-Z_]+=", w)]
    if rest[0] in ("sh", "bash"):
        rest = rest[1:]
    first = rest[0]
    if first in ("python", "python3"):
        script = rest[1] if rest[1] != "-m" else rest[2].replace(".", "/") + ".py"
        if script == "classification/main.py" and "--cfg ..." in " ".join(rest):
            for flag in RUN_FLAGS:
                if flag in rest:
                    return f"{script} {flag}"
        return script
    return first


def readme_commands() -> list[tuple[str, str]]:
    found = []
    for name in READMES:
        for line in bash_commands((ROOT / name).read_text()):
            for command in expand_braces(line):
                found.append((name, command))
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
    return {"root": str(root), "cfg": str(cfg), "photo": str(root / "photo.jpg"),
            "imagenet": str(root / "imagenet"), "ckpt": str(root / "ckpt.pth"), "out": str(root / "out")}


def placeholders(data: dict[str, str], tree: str, run: bool) -> dict[str, str]:
    """README token -> what the check uses instead (rule 4)."""
    out = data["out"]
    configs = {"detection": "detection/configs/coco/mask_rcnn_internimage_t_fpn_1x_coco.py",
               "segmentation": "segmentation/configs/ade20k/upernet_internimage_t_512_160k_ade20k.py"}
    return {
        "CONFIG": configs.get(tree, data["cfg"]), "CKPT": data["ckpt"], "IMG": data["photo"],
        "IMG_OR_DIR": data["photo"], "MORE.jpg": data["photo"], "photo.jpg": data["photo"],
        "/data/imagenet": data["imagenet"], "data/imagenet": data["imagenet"], "ckpt.pth": data["ckpt"],
        "OUT": f"{out}/work", "DIR": f"{out}/dir", "PRED_DIR": f"{out}/pred", "VIS_DIR": f"{out}/vis",
        "WORK_DIR": f"{out}/work", "OUT/epoch9": f"{out}/epoch9", "model.pth": f"{out}/model.pth",
        "result.jpg": f"{out}/result.jpg", "demo_out": f"{out}/demo_out", "preds.pkl": f"{out}/preds.pkl",
        "ckpt": f"{out}/ckpt", "N": "2", "S": "64", "H": "64", "W": "64", "GPUS": "2",
        "KEY": "TRAIN.EPOCHS", "VALUE": "1", "KEY=VALUE": "train_cfg.max_iters=1",
        "K=V": "train_cfg.max_iters=1",
    }


def substitute(words: list[str], data: dict[str, str], tree: str, run: bool) -> list[str]:
    table = placeholders(data, tree, run)
    result = []
    for i, word in enumerate(words):
        if i > 0 and words[i - 1] == "--cfg" and (word == "..." or run):
            result.append(data["cfg"])  # the tiny config (rule 4)
        elif word == "...":
            continue
        else:
            result.append(table.get(word, word))
    return result


def repo_paths(words: list[str]) -> list[str]:
    return [w for w in words if w.split("/")[0] in REPO_DIRS and re.search(r"\.(py|yaml|json|sh)$", w)]


# ----------------------------------------------------------------------------- checks
class _Parsed(Exception):
    pass


def parse_only(script: str, argv: list[str]) -> argparse.Namespace:
    """Runs ``script`` as ``python script argv...`` would (in-process, as ``__main__``) and
    stops it right after its argument parser accepted the line."""
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise _Parsed(original(self, args, namespace))

    saved_env, saved_path = dict(os.environ), list(sys.path)
    try:
        with mock.patch.object(argparse.ArgumentParser, "parse_args", parse_then_stop), \
                mock.patch.object(sys, "argv", [str(ROOT / script), *argv]):
            try:
                runpy.run_path(str(ROOT / script), run_name="__main__")
            except _Parsed as parsed:
                return parsed.args[0]
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        sys.path[:] = saved_path
    raise AssertionError(f"{script} finished without parsing arguments")


def _script_and_args(words: list[str]) -> tuple[str, list[str]]:
    """The python script of a launcher line and its arguments."""
    for i, word in enumerate(words):
        if word.endswith(".py") and word.split("/")[0] in REPO_DIRS:
            return word, words[i + 1:]
    raise AssertionError(f"no repository script in {' '.join(words)}")


def _outputs_in_checkout() -> set[str]:
    return {name for name in FORBIDDEN_OUTPUTS if (ROOT / name).exists()}


@pytest.mark.parametrize("readme,command", COMMANDS, ids=[c for _, c in COMMANDS])
def test_readme_command(readme: str, command: str, data: dict[str, str], tmp_path: Path) -> None:
    resolved = resolve_optional(command)
    words = shlex.split(resolved)
    key = program(words)
    assert key in MODES, (f"{readme}: `{command}` is not accounted for: add its program {key!r} to "
                          "MODES in tests/test_readme_commands.py")
    mode = MODES[key]
    tree = next((w.split("/")[0] for w in words if w.split("/")[0] in ("detection", "segmentation")), "")
    words = substitute(words, data, tree, run=mode.kind == "run")
    missing = [p for p in repo_paths(words) if not (ROOT / p).exists()]
    assert not missing, f"{readme}: `{command}` names files that do not exist: {missing}"

    if mode.kind == "make":
        target = words[1]
        flags = ["help"] if target == "help" else ["-n", *words[1:]]
        proc = subprocess.run(["make", "-s", *flags], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"`{command}`: {proc.stdout}{proc.stderr}"
        if target != "help":
            assert "bootstrap" in proc.stdout or target in ("shell",), proc.stdout
        return
    if mode.kind == "shell":
        scripts = [p for p in repo_paths(words) if p.endswith(".sh")]
        for script in scripts:
            check = subprocess.run(["bash", "-n", str(ROOT / script)], capture_output=True, text=True)
            assert check.returncode == 0, check.stderr
        if key in ("torchrun", "accelerate"):
            script, args = _script_and_args(words)
            parse_only(script, args)
        return
    if mode.kind == "parse":
        script, args = _script_and_args(words)
        parse_only(script, args)
        return

    # run
    before = _outputs_in_checkout()
    env = dict(os.environ, INTERNIMAGE_OUTPUT=str(tmp_path / "default_output"), OMP_NUM_THREADS="1")
    argv = [sys.executable if w in ("python", "python3") else w for w in words]
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"`{command}` ->\n{out[-3000:]}"
    assert mode.expect in out, f"`{command}`: expected {mode.expect!r} in\n{out[-3000:]}"
    assert _outputs_in_checkout() == before, f"`{command}` wrote into the checkout"


def test_every_readme_has_commands() -> None:
    counts = {name: sum(1 for n, _ in COMMANDS if n == name) for name in READMES}
    assert all(counts.values()), counts
    assert sum(1 for _, c in COMMANDS if MODES.get(program(shlex.split(resolve_optional(c))), Mode("")).kind
               == "run") >= 3


def test_rules_on_examples() -> None:
    """The rules of the module docstring, on the shapes of line they were written for."""
    assert bash_commands("```bash\npython a.py --x \\\n    --y  # note\n```\n") == ["python a.py --x --y"]
    assert expand_braces("python {detection,segmentation}/get_flops.py C") == [
        "python detection/get_flops.py C", "python segmentation/get_flops.py C"]
    assert resolve_optional("t.py C [--resume [CKPT]] [--form a|b] [train.py options] [...]") == \
        "t.py C --resume --form a"
