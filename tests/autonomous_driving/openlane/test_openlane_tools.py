"""End to end with the published command lines on generated OpenLane-V2 frames: the tiny
config trains a few iterations (loss falls), ``tools/test.py`` reports the OpenLane-V2 score,
``--eval-options dump=True dump_dir=...`` writes a submission ``check_results`` accepts and
``visualization=True visualization_dir=...`` writes pictures. Run from a working directory
holding ``data/OpenLane-V2`` (the configs' relative data paths), as published."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
from synthetic_openlane import make_openlane_dataset

from autonomous_driving.openlane_v2.collection import load_collection, preprocess
from autonomous_driving.openlane_v2.submission import load_submission

ROOT = Path(__file__).resolve().parents[3]
TREE = ROOT / "autonomous_driving" / "openlane-v2"
TINY = str(TREE / "plugin" / "mmdet3d" / "configs" / "internimage-s_tiny.py")


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(f"openlane_v2_tool_{name}", TREE / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Generated data under ``<cwd>/data/OpenLane-V2`` and a tiny model trained on it."""
    cwd = tmp_path_factory.mktemp("openlane_run")
    data = make_openlane_dataset(cwd / "data" / "OpenLane-V2", splits={"train": 1, "val": 1})
    preprocess(data["root"], progress=False)
    old = os.getcwd()
    os.chdir(cwd)
    try:
        work_dir = cwd / "work_dir"
        # 2 frames x 4 epochs; a larger lr than published so 8 steps show the descent; one
        # checkpoint at the end
        _tool("train").main([
            TINY, "--work-dir", str(work_dir), "--no-validate", "--seed", "0",
            "--cfg-options", "train_cfg.max_epochs=4", "optim_wrapper.optimizer.lr=0.004",
            "default_hooks.checkpoint.interval=4",
        ])
        yield {"cwd": cwd, "data": data, "work_dir": work_dir}
    finally:
        os.chdir(old)


def _losses(work_dir: Path) -> list[float]:
    (scalars,) = work_dir.glob("*/vis_data/scalars.json")
    rows = [json.loads(line) for line in scalars.read_text().splitlines()]
    return [row["loss"] for row in rows if "loss" in row]


def test_train_a_few_iterations_and_the_loss_falls(trained):
    losses = _losses(trained["work_dir"])
    assert len(losses) == 8  # logger interval 1
    assert sum(losses[-2:]) / 2 < 0.9 * sum(losses[:2]) / 2, losses
    assert (trained["work_dir"] / "epoch_4.pth").is_file()


def test_test_reports_ols_dumps_a_valid_submission_and_pictures(trained):
    out = trained["cwd"] / "out"
    metrics = _tool("test").main([
        TINY, str(trained["work_dir"] / "epoch_4.pth"), "--eval", "*", "--work-dir", str(out / "logs"),
        "--eval-options", "dump=True", f"dump_dir={out / 'dump'}", "visualization=True",
        f"visualization_dir={out / 'vis'}",
    ])
    for key in ("OLS", "DET_l", "DET_t", "TOP_ll", "TOP_lt", "F-Score"):
        assert 0.0 <= metrics[f"OpenLane-V2/{key}"] <= 1.0, key
    parts = [metrics[f"OpenLane-V2/{k}"] for k in ("DET_l", "DET_t", "TOP_ll", "TOP_lt")]
    assert metrics["OpenLane-V2/OLS"] == pytest.approx(
        (parts[0] + parts[1] + parts[2] ** 0.5 + parts[3] ** 0.5) / 4)
    submission = load_submission(out / "dump" / "result.pkl")  # check_results runs inside
    frames = load_collection(trained["data"]["root"] / "data_dict_subset_A_val.pkl")
    assert list(submission["results"]) == list(frames)
    first = next(iter(submission["results"].values()))["predictions"]
    assert len(first["lane_centerline"]) == 10 and first["lane_centerline"][0]["points"].shape == (11, 3)
    assert first["topology_lclc"].shape == (10, 10) and first["topology_lcte"].shape == (10, 10)
    assert len(list((out / "vis").glob("*_bev.png"))) == len(frames)
    assert len(list((out / "vis").glob("*_front.jpg"))) == len(frames)


def test_tools_refuse_bad_command_lines(trained):
    ckpt = str(trained["work_dir"] / "epoch_4.pth")
    with pytest.raises(SystemExit, match="dump=True dump_dir"):
        _tool("test").build_cfg(_tool("test").parse_args([TINY, ckpt, "--out", "x.pkl"]))
    with pytest.raises(SystemExit, match="no argument 'dumpdir'"):
        _tool("test").build_cfg(_tool("test").parse_args([TINY, ckpt, "--eval-options", "dumpdir=x"]))
    with pytest.raises(SystemExit, match="does not exist"):
        _tool("test").build_cfg(_tool("test").parse_args([TINY, "missing.pth"]))
    with pytest.raises(SystemExit, match="--gpus must be >= 1"):
        _tool("train").build_cfg(_tool("train").parse_args([TINY, "--gpus", "0"]))


def test_dist_scripts_use_torchrun_with_the_published_flags():
    train = (TREE / "tools" / "dist_train.sh").read_text()
    test = (TREE / "tools" / "dist_test.sh").read_text()
    assert "torchrun" in train and "--seed 0 --launcher pytorch" in train
    assert "torchrun" in test and "--launcher pytorch" in test
    for script in ("dist_train.sh", "dist_test.sh"):
        assert os.access(TREE / "tools" / script, os.X_OK), script
