"""The detection and segmentation entry points refuse a payload checkpoint (see
test_untrusted_checkpoints.py): mmengine's checkpoint loader (local files and URLs) and
each script by its command line — detection/image_demo.py in a subprocess (the error on
stderr), the others (image_demo.py, train.py --resume, test.py, deploy.py) through their
``main(argv)`` — on the published
InternImage-T configs with tiny datasets. The payload is refused from the
pickle's globals before any tensor is read, so the file need not match the model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("mmdet", reason="mmdet 3 is not installed (tools/bootstrap.sh installs it)")
pytest.importorskip("mmseg", reason="mmseg 1.x is not installed (tools/bootstrap.sh installs it)")

from classification.models.checkpoint import TRUST_ENV, UntrustedCheckpointError  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DET_CFG = REPO / "detection/configs/coco/mask_rcnn_internimage_t_fpn_1x_coco.py"
SEG_CFG = REPO / "segmentation/configs/ade20k/upernet_internimage_t_512_160k_ade20k.py"
DET_DEPLOY = REPO / "detection/deploy/configs/mmdet/instance-seg/instance-seg_onnxruntime_dynamic.py"
SEG_DEPLOY = REPO / "segmentation/deploy/configs/mmseg/segmentation_onnxruntime_static-512x512.py"
SIZE = 64


class ShellPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def write_payload(path: Path, marker: Path) -> Path:
    """An mmengine-looking checkpoint with the payload in its meta."""
    torch.save({"state_dict": {"backbone.patch_embed.conv1.weight": torch.zeros(1)},
                "meta": {"epoch": 1, "hook": ShellPayload(marker)}}, path)
    return path


def run(tree: str, script: str, *args: object) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != TRUST_ENV}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / tree), str(REPO), env.get("PYTHONPATH")) if p)
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([sys.executable, str(REPO / tree / script), *map(str, args)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=600)


def assert_refused(proc: subprocess.CompletedProcess, path: Path, marker: Path) -> None:
    assert proc.returncode != 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert not marker.exists(), "the payload ran"
    text = proc.stderr
    assert "UntrustedCheckpointError" in text and "refusing to unpickle posix.system" in text, text[-3000:]
    assert str(path) in text and f"{TRUST_ENV}=1" in text and "--trust-checkpoint" in text


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "PAYLOAD_RAN"


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def seg_cfg(tmp_path_factory, photo) -> Path:
    """The published UperNet-T config on a one-image dataset, narrow heads."""
    root = tmp_path_factory.mktemp("seg")
    (root / "img").mkdir()
    (root / "ann").mkdir()
    shutil.copy(photo, root / "img" / "a.png")
    Image.fromarray(np.zeros((SIZE, SIZE), dtype=np.uint8)).save(root / "ann" / "a.png")
    path = root / "tiny_upernet_t.py"
    path.write_text(f"""_base_ = [{str(SEG_CFG)!r}]
model = dict(data_preprocessor=dict(size=({SIZE}, {SIZE})), backbone=dict(init_cfg=None),
             decode_head=dict(num_classes=2, channels=32), auxiliary_head=dict(num_classes=2, channels=16))
pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'), dict(type='PackSegInputs')]
dataset = dict(_delete_=True, type='BaseSegDataset', data_root={str(root)!r},
               metainfo=dict(classes=('a', 'b'), palette=[[0, 0, 0], [255, 255, 255]]),
               img_suffix='.png', seg_map_suffix='.png', data_prefix=dict(img_path='img', seg_map_path='ann'),
               pipeline=pipeline)
train_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False, dataset=dataset)
test_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False, dataset=dataset)
val_cfg = None
val_dataloader = None
val_evaluator = None
train_cfg = dict(max_iters=2, val_interval=1000)
""")
    return path


@pytest.fixture(scope="module")
def det_cfg(tmp_path_factory, photo) -> Path:
    """The published Mask R-CNN-T config on a one-image COCO set."""
    root = tmp_path_factory.mktemp("det")
    (root / "images").mkdir()
    shutil.copy(photo, root / "images" / "a.png")
    ann = root / "annotations.json"
    ann.write_text(json.dumps(dict(
        images=[dict(id=1, file_name="a.png", width=SIZE, height=SIZE)],
        annotations=[dict(id=1, image_id=1, category_id=1, iscrowd=0, bbox=[8, 8, 32, 32], area=1024,
                          segmentation=[[8, 8, 40, 8, 40, 40, 8, 40]])],
        categories=[dict(id=1, name="thing")])))
    path = root / "tiny_mask_rcnn_t.py"
    path.write_text(f"""_base_ = [{str(DET_CFG)!r}]
model = dict(backbone=dict(init_cfg=None), roi_head=dict(bbox_head=dict(num_classes=1),
             mask_head=dict(num_classes=1)))
dataset = dict(data_root={str(root)!r}, metainfo=dict(classes=('thing',)), ann_file='annotations.json',
               data_prefix=dict(img='images/'))
train_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False, dataset=dataset)
test_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False, dataset=dataset)
val_dataloader = test_dataloader
val_evaluator = dict(ann_file={str(ann)!r})
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=1, val_interval=100)
""")
    return path


def test_mmengine_loader_refuses_local_files_and_urls(tmp_path, marker, monkeypatch):
    from mmengine.runner.checkpoint import CheckpointLoader

    from dense_common import stack_compat

    stack_compat.apply()
    path = write_payload(tmp_path / "epoch_1.pth", marker)
    with pytest.raises(UntrustedCheckpointError, match="posix.system"):
        CheckpointLoader.load_checkpoint(str(path), map_location="cpu")
    cache = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(cache))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda url, dst, *a, **k: shutil.copy(path, dst))
    with pytest.raises(UntrustedCheckpointError, match="posix.system"):  # load_from='https://...'
        CheckpointLoader.load_checkpoint("https://example.org/mask_rcnn_t.pth", map_location="cpu")
    assert not marker.exists()


def test_detection_image_demo_refuses_the_payload(tmp_path, marker, photo, det_cfg):
    """A subprocess, as users run it: the named error reaches stderr."""
    path = write_payload(tmp_path / "model.pth", marker)
    proc = run("detection", "image_demo.py", photo, det_cfg, path, "--device", "cpu",
               "--out", tmp_path / "x.jpg")
    assert_refused(proc, path, marker)


def run_main(tree: str, script: str, *args: object, monkeypatch: pytest.MonkeyPatch):
    """``<tree>/<script>``'s ``main(argv)`` in this process (what its command line runs;
    in-process saves a ~10 s mmdet/mmseg import per script on the 2-core CI machine)."""
    import importlib.util

    from mmengine.registry import init_default_scope

    monkeypatch.syspath_prepend(str(REPO / tree))  # mmdet_custom / mmseg_custom, as the script does
    monkeypatch.delenv(TRUST_ENV, raising=False)
    init_default_scope("mmseg" if tree == "segmentation" else "mmdet")  # process-global in mmengine
    name = f"_security_{tree}_{script.removesuffix('.py')}"
    spec = importlib.util.spec_from_file_location(name, REPO / tree / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main([str(a) for a in args])


def assert_raised(error: pytest.ExceptionInfo, path: Path, marker: Path) -> None:
    assert not marker.exists(), "the payload ran"
    text = str(error.value)
    assert "refusing to unpickle posix.system" in text and str(path) in text, text
    assert f"{TRUST_ENV}=1" in text and "--trust-checkpoint" in text


def test_segmentation_image_demo_refuses_the_payload(tmp_path, marker, photo, seg_cfg, monkeypatch):
    path = write_payload(tmp_path / "model.pth", marker)
    with pytest.raises(UntrustedCheckpointError) as error:
        run_main("segmentation", "image_demo.py", photo, seg_cfg, path, "--device", "cpu", "--out",
                 tmp_path / "shown", monkeypatch=monkeypatch)
    assert_raised(error, path, marker)


@pytest.mark.parametrize("tree", ["segmentation", "detection"])
def test_test_script_refuses_the_payload(tree, tmp_path, marker, request, monkeypatch):
    cfg = request.getfixturevalue("seg_cfg" if tree == "segmentation" else "det_cfg")
    path = write_payload(tmp_path / "model.pth", marker)
    with pytest.raises(UntrustedCheckpointError) as error:
        run_main(tree, "test.py", cfg, path, "--work-dir", tmp_path / "work", monkeypatch=monkeypatch)
    assert_raised(error, path, marker)


@pytest.mark.parametrize("tree", ["segmentation", "detection"])
def test_train_resume_refuses_the_payload(tree, tmp_path, marker, request, monkeypatch):
    cfg = request.getfixturevalue("seg_cfg" if tree == "segmentation" else "det_cfg")
    path = write_payload(tmp_path / "iter_1.pth", marker)
    with pytest.raises(UntrustedCheckpointError) as error:
        run_main(tree, "train.py", cfg, "--resume", path, "--work-dir", tmp_path / "work",
                 monkeypatch=monkeypatch)
    assert_raised(error, path, marker)


@pytest.mark.parametrize("tree", ["segmentation", "detection"])
def test_deploy_refuses_the_payload(tree, tmp_path, marker, photo, request, monkeypatch):
    pytest.importorskip("mmdeploy")
    cfg = request.getfixturevalue("seg_cfg" if tree == "segmentation" else "det_cfg")
    deploy_cfg = SEG_DEPLOY if tree == "segmentation" else DET_DEPLOY
    path = write_payload(tmp_path / "model.pth", marker)
    with pytest.raises(UntrustedCheckpointError) as error:
        run_main(tree, "deploy.py", deploy_cfg, cfg, path, photo, "--work-dir", tmp_path / "work",
                 "--runs", "0", monkeypatch=monkeypatch)
    assert_raised(error, path, marker)
    assert not list((tmp_path / "work").glob("*.onnx"))
