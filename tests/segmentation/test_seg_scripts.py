"""The segmentation scripts end to end on a tiny real-photo dataset: UperNet InternImage-T
(the real ADE20K config, random init) trains, saves, resumes, is evaluated (single-scale,
multi-scale + flip, with predictions and overlays written), drives the demo, and is
FLOP-counted; bad input gives clear errors."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image
from seg_testutils import CLASSES, PHOTOS, SEG, SIZE, T_ADE, run_script, tiny_config

FIRST_RUN_ITERS = 4
TOTAL_ITERS = 8


def _losses(work_dir: Path) -> dict[int, float]:
    """iteration -> total loss, from every run's vis_data/scalars.json in the work dir."""
    losses = {}
    for scalars in sorted(work_dir.glob("*/vis_data/scalars.json")):
        for line in scalars.read_text().splitlines():
            record = json.loads(line)
            if "loss" in record:
                losses[int(record["iter"])] = float(record["loss"])
    return losses


@pytest.fixture(scope="module")
def trained(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Train 4 iterations, then resume to 8 with ``--resume``: the work dir, config and
    both runs' output."""
    tmp = tmp_path_factory.mktemp("train")
    config = tiny_config(tiny_dataset, tmp / "tiny_upernet_t.py", max_iters=FIRST_RUN_ITERS)
    work_dir = tmp / "work"
    first = run_script("train.py", config, "--work-dir", work_dir)
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_script("train.py", config, "--work-dir", work_dir, "--resume",
                        "--cfg-options", f"train_cfg.max_iters={TOTAL_ITERS}")
    assert second.returncode == 0, second.stderr[-3000:]
    return dict(config=config, work_dir=work_dir, first=first, second=second)


def test_train_loss_goes_down_and_resume_continues(trained: dict) -> None:
    work_dir = trained["work_dir"]
    assert (work_dir / f"iter_{FIRST_RUN_ITERS}.pth").is_file()
    assert (work_dir / f"iter_{TOTAL_ITERS}.pth").is_file()
    log = trained["second"].stdout + trained["second"].stderr
    assert f"resumed epoch: 0, iter: {FIRST_RUN_ITERS}" in log
    losses = _losses(work_dir)
    assert sorted(losses) == list(range(1, TOTAL_ITERS + 1))  # the resumed run starts at 5
    first, last = np.mean([losses[i] for i in (1, 2)]), np.mean([losses[i] for i in (7, 8)])
    assert last < 0.95 * first and losses[TOTAL_ITERS] < losses[1], losses


def test_test_reports_miou_and_writes_predictions(trained: dict, tmp_path: Path) -> None:
    out, show = tmp_path / "pred", tmp_path / "show"
    result = run_script("test.py", trained["config"], trained["work_dir"] / f"iter_{TOTAL_ITERS}.pth",
                        "--work-dir", tmp_path / "eval", "--out", out, "--show-dir", show)
    assert result.returncode == 0, result.stderr[-3000:]
    miou = float(re.search(r"results: .*mIoU=([0-9.]+)", result.stdout).group(1))
    assert 0.0 <= miou <= 100.0
    for name in PHOTOS:  # label maps at the input size, values among the classes
        pred = np.asarray(Image.open(out / f"{name}.png"))
        assert pred.shape == (SIZE, SIZE) and set(np.unique(pred)) <= set(range(len(CLASSES)))
    assert len(list(show.rglob("*.png"))) == len(PHOTOS)


def test_aug_test_runs_multi_scale_flip(trained: dict, tmp_path: Path) -> None:
    # one image is enough to exercise the 6 scales x 2 flips (12 forward passes)
    result = run_script("test.py", trained["config"], trained["work_dir"] / f"iter_{TOTAL_ITERS}.pth",
                        "--work-dir", tmp_path, "--aug-test",
                        "--cfg-options", "test_dataloader.dataset.indices=1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"results: .*mIoU=[0-9.]+", result.stdout)
    # the runner dumps the config it ran
    config_dump = re.sub(r"\s", "", "".join(p.read_text() for p in tmp_path.rglob("*.py")))
    assert "SegTTAModel" in config_dump and "TestTimeAug" in config_dump
    for side in (24, 36, 48, 60, 72, 84):  # 0.5..1.75 x 48
        assert re.search(rf"scale=[(\[]{side},{side},?[)\]]", config_dump), side


def test_image_demo_file_and_folder(trained: dict, tiny_dataset: Path, tmp_path: Path) -> None:
    ckpt = trained["work_dir"] / f"iter_{TOTAL_ITERS}.pth"
    one = run_script("image_demo.py", tiny_dataset / "img" / "chelsea.png", trained["config"], ckpt,
                     "--out", tmp_path / "one", "--palette", "cityscapes", "--opacity", "0.7")
    assert one.returncode == 0, one.stderr[-3000:]
    overlay = np.asarray(Image.open(tmp_path / "one" / "chelsea.png").convert("RGB"))
    source = np.asarray(Image.open(tiny_dataset / "img" / "chelsea.png").convert("RGB"))
    assert overlay.shape == source.shape and np.abs(overlay.astype(int) - source).mean() > 5
    # what was drawn is the segmentation: most pixels are the 0.7 blend of the photo with one
    # palette colour (class-name labels cover the rest)
    from mmseg_custom import palette_meta

    colours = np.asarray(palette_meta("cityscapes")["palette"], dtype=float)
    blends = 0.3 * source[None].astype(float) + 0.7 * colours[:, None, None, :]  # (K, H, W, 3)
    error = np.abs(blends - overlay[None]).max(-1).min(0)
    assert (error <= 2).mean() > 0.8, f"{(error <= 2).mean():.2%} of the pixels are palette blends"
    folder = run_script("image_demo.py", tiny_dataset / "img", trained["config"], ckpt,
                        "--out", tmp_path / "all")
    assert folder.returncode == 0, folder.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == sorted(f"{n}.png" for n in PHOTOS)


def test_get_flops_counts_the_dcnv3_core() -> None:
    result = run_script("get_flops.py", T_ADE, "--shape", "64", "64")
    assert result.returncode == 0, result.stderr[-3000:]
    total, layers, core = map(float, re.search(
        r"flops: ([0-9.]+) G \(layers ([0-9.]+) G \+ DCNv3 core ([0-9.]+) G\)", result.stdout).groups())
    assert core > 0 and total == pytest.approx(layers + core, abs=0.011)
    params = float(re.search(r"params: ([0-9.]+) M", result.stdout).group(1))
    assert 45 < params < 65  # UperNet-T without its auxiliary head (published: 59M with it)


def _load_script(name: str) -> ModuleType:
    # by path: detection/ has scripts of the same names
    spec = importlib.util.spec_from_file_location(f"seg_script_{Path(name).stem}", SEG / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script, args, message", [
    ("train.py", ["missing_config.py"], "config file 'missing_config.py' does not exist"),
    ("test.py", [str(T_ADE), "missing.pth"], "checkpoint 'missing.pth' does not exist"),
    ("image_demo.py", ["missing.png", str(T_ADE), "x.pth"], "image or folder 'missing.png' does not exist"),
    ("image_demo.py", [".", str(T_ADE), "x.pth", "--palette", "voc"], "invalid choice: 'voc'"),
    ("image_demo.py", [".", str(T_ADE), "x.pth", "--opacity", "0"], "--opacity must be in (0, 1]"),
])
def test_bad_input_is_reported(script: str, args: list[str], message: str, capsys: pytest.CaptureFixture
                               ) -> None:
    # in-process (a subprocess per case would mostly time imports); the checks run before
    # any model or runner is built. argparse exits 2 after printing; the scripts' own checks
    # exit with the message (printed by the interpreter, status 1).
    with pytest.raises(SystemExit) as exit_info:
        _load_script(script).main(args)
    code = exit_info.value.code
    assert code not in (0, None)
    assert message in capsys.readouterr().err + (code if isinstance(code, str) else "")


def test_format_only_writes_label_maps_without_evaluating(trained: dict, tmp_path: Path) -> None:
    out = tmp_path / "submission"
    result = run_script("test.py", trained["config"], trained["work_dir"] / f"iter_{TOTAL_ITERS}.pth",
                        "--work-dir", tmp_path / "eval", "--format-only", "--eval-options",
                        f"imgfile_prefix={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "results: \n" in result.stdout and "mIoU=" not in result.stdout  # nothing evaluated
    written = sorted(p.name for p in out.rglob("*.png"))
    assert written == sorted(f"{name}.png" for name in PHOTOS)
    assert set(np.unique(np.asarray(Image.open(next(out.rglob("chelsea.png")))))) <= {0, 1, 2}


def _published_commands() -> list[list[str]]:
    """The ``# tested`` lines of segmentation/README.md's published-commands block."""
    import shlex

    text = (SEG / "README.md").read_text()
    block = text.split("<!-- published-commands -->")[1].split("<!-- /published-commands -->")[0]
    return [shlex.split(line.split("  #")[0]) for line in block.splitlines() if line.endswith("# tested")]


def test_readme_commands_run_as_written(trained: dict, tiny_dataset: Path, tmp_path: Path) -> None:
    """The published README's evaluation and demo commands as segmentation/README.md prints
    them, with the tiny config, checkpoint and image in place of the ADE20K ones."""
    import os
    import subprocess
    import sys

    ckpt = str(trained["work_dir"] / f"iter_{TOTAL_ITERS}.pth")
    substitutions = {
        "segmentation/configs/ade20k/upernet_internimage_t_512_160k_ade20k.py": str(trained["config"]),
        "checkpoint_dir/seg/upernet_internimage_t_512_160k_ade20k.pth": ckpt,
        "data/ade/ADEChallengeData2016/images/validation/ADE_val_00000591.jpg":
            str(tiny_dataset / "img" / "chelsea.png"),
    }
    commands = _published_commands()
    assert len(commands) == 2
    for words in commands:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(SEG), os.environ.get("PYTHONPATH"))
                                                          if p),
                   INTERNIMAGE_OUTPUT=str(tmp_path / "output"), OMP_NUM_THREADS="2")
        while "=" in words[0]:  # VAR=value prefixes, as the shell reads them
            name, _, value = words.pop(0).partition("=")
            env[name] = value
        assert words[0] == "python"
        args = [substitutions.get(w, w) for w in words[1:]]
        proc = subprocess.run([sys.executable, *args], cwd=SEG.parent, env=env, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        if args[0].endswith("test.py"):
            assert args[-2:] == ["--eval", "mIoU"] and "mIoU" in proc.stdout
        else:
            assert args[-2:] == ["--palette", "ade20k"]
            assert (tmp_path / "output" / "demo" / "chelsea.png").is_file()
