"""``tools/evaluate_submission.py`` with the published command line, on a generated val split."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from synthetic_av2 import make_av2_dataset

from autonomous_driving.online_hdmap.annotations import frame_map_lines, iter_frames, load_annotations
from autonomous_driving.online_hdmap.submission import read_submission, write_submission

REPO = Path(__file__).resolve().parents[3]
TREE = REPO / "autonomous_driving" / "Online-HD-Map-Construction"
CATS = ("ped_crossing", "divider", "boundary")


def test_evaluate_submission_cli(tmp_path) -> None:
    data = make_av2_dataset(tmp_path / "data", segments=1, frames_per_segment=2, splits=("val",), seed=1)
    results = {}
    for frame in iter_frames(load_annotations(data["val_ann"])):
        vectors, labels = [], []
        for label, (cat, lines) in enumerate(frame_map_lines(frame).items()):
            # Dividers shifted 0.75 m sideways: Chamfer just under 0.75 (the lines bend a
            # little), so they miss at 0.5 m and hit at 1.0 / 1.5 m -> divider AP = 2/3.
            vectors += [line + ([0, 0.75] if cat == "divider" else 0) for line in lines]
            labels += [label] * len(lines)
        results[frame["timestamp"]] = {"vectors": vectors, "scores": [0.9] * len(labels), "labels": labels}
    sub = write_submission(tmp_path / "work" / "submission_vector.json", results)

    proc = subprocess.run(
        [
            sys.executable,
            "tools/evaluate_submission.py",
            sub,
            data["val_ann"],
            "--out",
            str(tmp_path / "m.json"),
        ],
        cwd=TREE,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "evaluating 3 categories..." in lines
    header = next(i for i, line in enumerate(lines) if "num_preds" in line)
    assert [c.strip() for c in lines[header].strip("|").split("|")] == [
        "category", "num_preds", "num_gts", "AP@0.5", "AP@1.0", "AP@1.5", "AP"
    ]  # fmt: skip
    rows = {
        r.split("|")[1].strip(): [c.strip() for c in r.strip("|").split("|")]
        for r in lines[header + 2 : header + 5]
    }
    assert rows["divider"][3:] == ["0.0", "1.0", "1.0", "0.6667"]
    assert rows["boundary"][3:] == ["1.0", "1.0", "1.0", "1.0"]
    assert "mAP = 0.8889" in lines
    assert ast.literal_eval(lines[-1]) == {"ped_crossing": 1.0, "divider": 2 / 3, "boundary": 1.0}

    saved = json.loads((tmp_path / "m.json").read_text())
    assert np.isclose(saved["mAP"], 8 / 9)
    assert saved["divider"]["num_gts"] == saved["divider"]["num_preds"] == int(rows["divider"][1])


def test_evaluate_submission_cli_errors(tmp_path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(TREE / "tools" / "evaluate_submission.py"),
            str(tmp_path / "nope.json"),
            "x.json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "submission: no such file" in proc.stderr


def test_metric_needs_no_torch() -> None:
    # The evaluator runs where only numpy/scipy/shapely are installed (a leaderboard box).
    code = (
        "import sys; import autonomous_driving.online_hdmap.vector_eval; "
        "import autonomous_driving.online_hdmap.vectorize; "
        "assert 'torch' not in sys.modules and 'mmdet' not in sys.modules"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


# ---- end to end with the tiny config: train, test --eval, --format-only, evaluate -----

CONFIGS = TREE / "src" / "configs"


def _tool(name: str):
    """A tool script as a module (its ``main(argv)`` runs in this process: no second import
    of the stack)."""
    import importlib.util

    path = TREE / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"hdmap_tool_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> dict:
    """Generated train / val / test splits (2 frames each) and 6 training iterations of the tiny config."""
    root = tmp_path_factory.mktemp("hdmap_e2e")
    data = make_av2_dataset(
        root / "data", segments=1, frames_per_segment=2, splits=("train", "val", "test"), seed=2
    )
    data_opts = [
        f"{loader}_dataloader.dataset.data_root={data['root']}" for loader in ("train", "val", "test")
    ]
    work = root / "train"
    _tool("train").main(
        [str(CONFIGS / "vectormapnet_tiny.py"), "--work-dir", str(work), "--seed", "0", "--no-validate",
         "--cfg-options", *data_opts, "train_cfg.max_epochs=6", "default_hooks.logger.interval=1",
         "default_hooks.checkpoint.interval=6"]
    )  # fmt: skip
    return dict(data=data, root=root, work=work, ckpt=work / "epoch_6.pth", data_opts=data_opts)


def _test(run: dict, *args: str) -> dict:
    return _tool("test").main(
        [str(CONFIGS / "vectormapnet_tiny.py"), str(run["ckpt"]), *args, "--cfg-options", *run["data_opts"]]
    )


def test_train_loss_falls(tiny_run) -> None:
    assert tiny_run["ckpt"].is_file()
    (scalars,) = tiny_run["work"].glob("*/vis_data/scalars.json")
    losses = [json.loads(line)["loss"] for line in scalars.read_text().splitlines() if '"loss"' in line]
    assert len(losses) == 6 and all(np.isfinite(losses))
    assert np.mean(losses[-2:]) < np.mean(losses[:2]), losses


def test_test_val_eval_then_format_only_and_evaluate_submission(tiny_run, capsys) -> None:
    eval_dir, fmt_dir = tiny_run["root"] / "eval", tiny_run["root"] / "fmt"
    metrics = _test(tiny_run, "--split", "val", "--eval", "--seed", "1", "--work-dir", str(eval_dir))
    out = capsys.readouterr().out
    assert "evaluating 3 categories..." in out and "mAP = " in out
    header = next(line for line in out.splitlines() if "num_preds" in line)
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "category", "num_preds", "num_gts", "AP@0.5", "AP@1.0", "AP@1.5", "AP"
    ]  # fmt: skip
    assert set(metrics) >= {f"chamfer/{c}" for c in CATS} | {"chamfer/mAP"}
    assert 0.0 <= metrics["chamfer/mAP"] <= 1.0
    sub = read_submission(eval_dir / "submission_vector.json")
    assert list(sub["results"]) == tiny_run["data"]["tokens"]["val"]
    # the same seed samples the same lines: --format-only writes the same file
    assert _test(tiny_run, "--split", "val", "--format-only", "--seed", "1", "--work-dir", str(fmt_dir)) == {}
    assert read_submission(fmt_dir / "submission_vector.json") == sub
    full = _tool("evaluate_submission").main(
        [str(fmt_dir / "submission_vector.json"), tiny_run["data"]["val_ann"]]
    )
    assert full["mAP"] == pytest.approx(metrics["chamfer/mAP"])
    for cat in CATS:
        assert full[cat]["AP"] == pytest.approx(metrics[f"chamfer/{cat}"])


def test_test_split_format_only_writes_a_valid_submission(tiny_run) -> None:
    work = tiny_run["root"] / "test_split"
    assert _test(tiny_run, "--split", "test", "--format-only", "--work-dir", str(work)) == {}
    sub = read_submission(work / "submission_vector.json")
    assert list(sub["results"]) == tiny_run["data"]["tokens"]["test"]
    assert sub["meta"]["output_format"] == "vector" and sub["meta"]["use_camera"] is True
    for pred in sub["results"].values():
        assert len(pred["vectors"]) <= 10  # the tiny detector keeps its top 10
        for vec in pred["vectors"]:
            v = np.asarray(vec)
            # de-normalised from (0, 1): x in [-30, 32], y in [-15, 17] metres
            assert v.shape[1] == 2 and (v[:, 0] >= -30).all() and (v[:, 0] <= 32).all()
            assert (v[:, 1] >= -15).all() and (v[:, 1] <= 17).all()


def test_visualize_writes_pictures(tiny_run, tmp_path) -> None:
    data = tiny_run["data"]
    log_id = next(iter(load_annotations(data["val_ann"])))
    sub = write_submission(
        tmp_path / "sub.json", {t: {"vectors": [], "scores": [], "labels": []} for t in data["tokens"]["val"]}
    )
    paths = _tool("visualization/visualize").main(
        [log_id, data["val_ann"], "--result", sub, "--out-dir", str(tmp_path / "demo")]
    )
    assert [Path(p).stem for p in paths] == data["tokens"]["val"]
    import cv2

    img = cv2.imread(paths[0])
    assert img.shape == (630, 610, 3) and (img < 250).any()  # two panels, lines drawn
    with pytest.raises(SystemExit, match="not in"):
        _tool("visualization/visualize").main(["nope", data["val_ann"]])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--split", "test", "--eval"], "needs ground truth"),
        (["--split", "val"], "nothing to do"),
        (["--split", "val", "--eval", "--format-only"], "not both"),
        (["--split", "val", "--eval", "bbox"], "only metric"),
    ],
)
def test_test_cli_errors(tmp_path, args, message) -> None:
    ckpt = tmp_path / "c.pth"
    ckpt.write_bytes(b"")
    tool = _tool("test")
    with pytest.raises(SystemExit, match=message):
        tool.build_cfg(tool.parse_args([str(CONFIGS / "vectormapnet_tiny.py"), str(ckpt), *args]))


def test_dist_scripts_parse() -> None:
    for script in ("dist_train.sh", "dist_test.sh"):
        proc = subprocess.run(["bash", "-n", str(TREE / "tools" / script)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        proc = subprocess.run(["bash", str(TREE / "tools" / script)], capture_output=True, text=True)
        assert proc.returncode == 2 and "usage" in proc.stderr
