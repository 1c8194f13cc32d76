"""An untrusted checkpoint never runs code: a ``.pth`` whose pickle carries a payload (an
object whose ``__reduce__`` calls ``os.system``) goes through every entry point that reads
checkpoints, and each one refuses it with ``UntrustedCheckpointError`` (naming the file,
the types and the opt-in) while the file the payload would create stays absent. The
allowlisted types (what our trainers, mmengine and DeepSpeed write) load without the
opt-in; the opt-in loads a legitimate old-style checkpoint holding other objects; broken
files give a one-line error naming the file. Scripts run by their command line."""

from __future__ import annotations

import argparse
import datetime
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from classification.models import InternImage
from classification.models.checkpoint import (
    TRUST_ENV,
    CheckpointReadError,
    UntrustedCheckpointError,
    load_pretrained,
    read_checkpoint,
    read_state_dict,
    routed_torch_load,
)

REPO = Path(__file__).resolve().parents[2]
TINY = dict(channels=16, depths=(1, 1, 1, 1), groups=(1, 2, 4, 8), core_op="DCNv3_pytorch", num_classes=3)
TINY_YAML = """\
DATA:
  IMG_SIZE: 32
  BATCH_SIZE: 4
  NUM_WORKERS: 0
MODEL:
  NUM_CLASSES: 3
  DROP_PATH_RATE: 0.0
  INTERN_IMAGE:
    CHANNELS: 16
    DEPTHS: [1, 1, 1, 1]
    GROUPS: [1, 2, 4, 8]
    CORE_OP: DCNv3_pytorch
TRAIN:
  EPOCHS: 1
  WARMUP_EPOCHS: 0
AUG:
  MIXUP: 0.0
  CUTMIX: 0.0
  REPROB: 0.0
  AUTO_AUGMENT: none
"""


class ShellPayload:
    """Unpickling this runs ``touch <marker>`` through os.system: what a hostile file does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def tiny_model(seed: int = 0) -> InternImage:
    torch.manual_seed(seed)
    return InternImage(**TINY)


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "PAYLOAD_RAN"


def write_payload(path: Path, marker: Path, state_dict: dict | None = None, legacy: bool = False) -> Path:
    """A checkpoint that looks like ours ({'model': weights, 'config': ...}) with the payload."""
    state_dict = state_dict if state_dict is not None else tiny_model().state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state_dict, "epoch": 0, "config": ShellPayload(marker)}, path,
               _use_new_zipfile_serialization=not legacy)
    return path


def assert_refused(message: str, path: Path | str, marker: Path) -> None:
    assert not marker.exists(), "the payload ran"
    assert "refusing to unpickle" in message and "posix.system" in message, message
    assert str(path) in message and f"{TRUST_ENV}=1" in message and "--trust-checkpoint" in message


def script_env(**extra: str) -> dict[str, str]:
    # earlier in-process runs of the suite leave launcher variables (LOCAL_RANK, ...) behind;
    # a script seeing them would try to join a process group
    launcher_vars = {TRUST_ENV, "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                     "MASTER_PORT"}
    env = {k: v for k, v in os.environ.items() if k not in launcher_vars}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def run_script(script: str, *args: object, env: dict | None = None, timeout: int = 300,
               cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / script), *map(str, args)], env=env or script_env(),
                          capture_output=True, text=True, timeout=timeout, cwd=cwd or REPO)


def assert_script_refused(proc: subprocess.CompletedProcess, path: Path | str, marker: Path) -> None:
    assert proc.returncode != 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "UntrustedCheckpointError" in proc.stderr, proc.stderr[-3000:]
    assert_refused(proc.stderr, path, marker)


@pytest.fixture(scope="module")
def tiny_cfg(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(TINY_YAML)
    return path


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """ImageFolder layout, 3 classes x 2 noise images per split (only the loaders need it)."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for label in ("a", "b", "c"):
            (root / split / label).mkdir(parents=True)
            for k in range(2):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / label / f"{k}.png")
    return root


# ----------------------------------------------------------------------------- the reader
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_payload_is_refused_without_running(tmp_path, marker, legacy):
    path = write_payload(tmp_path / "internimage_t_1k_224.pth", marker, legacy=legacy)
    with pytest.raises(UntrustedCheckpointError) as error:
        read_checkpoint(path)
    assert_refused(str(error.value), path, marker)
    assert error.value.types == ["posix.system"] and error.value.path == str(path)
    # not torch's UnpicklingError: code catching that to retry with weights_only=False (or to
    # re-word it, as timm does) must not swallow this one
    assert isinstance(error.value, RuntimeError) and not isinstance(error.value, pickle.UnpicklingError)
    assert "\n" not in str(error.value)


def test_plain_pickle_with_a_payload_is_refused(tmp_path, marker):
    """Not a torch.save file at all (protocol 5 STACK_GLOBAL): still refused, still named."""
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"model": {}, "x": ShellPayload(marker)}, protocol=5))
    with pytest.raises(UntrustedCheckpointError) as error:
        read_checkpoint(path)
    assert_refused(str(error.value), path, marker)


def test_env_var_false_values_do_not_trust(tmp_path, marker, monkeypatch):
    path = write_payload(tmp_path / "x.pth", marker)
    for value in ("0", "", "no"):
        monkeypatch.setenv(TRUST_ENV, value)
        with pytest.raises(UntrustedCheckpointError):
            read_checkpoint(path)
    monkeypatch.setenv(TRUST_ENV, "1")
    with pytest.raises(UntrustedCheckpointError):  # trust=False wins over the environment
        read_checkpoint(path, trust=False)
    assert not marker.exists()


def test_every_python_reader_refuses_the_payload(tmp_path, marker):
    from classification.utils import load_checkpoint_file, load_latest_valid

    path = write_payload(tmp_path / "ckpt_epoch_3.pth", marker)
    for read in (read_state_dict, lambda p: load_pretrained(tiny_model(), p), load_checkpoint_file):
        with pytest.raises(UntrustedCheckpointError) as error:
            read(path)
        assert_refused(str(error.value), path, marker)
    # auto-resume skips the file (it cannot be read) and takes the older legitimate one
    torch.save({"model": tiny_model().state_dict(), "epoch": 2}, tmp_path / "ckpt_epoch_2.pth")
    found_path, found = load_latest_valid(str(tmp_path))
    assert found_path.endswith("ckpt_epoch_2.pth") and found["epoch"] == 2
    assert not marker.exists()


def test_timm_pretrained_file_refuses_the_payload(tmp_path, marker):
    import timm

    import classification.models  # noqa: F401  (registers the names)

    # refused from the pickle's globals, before any tensor is read: the weights need not match
    path = write_payload(tmp_path / "internimage_t_1k_224.pth", marker)
    with pytest.raises(UntrustedCheckpointError) as error:
        timm.create_model("internimage_t_1k_224", pretrained=True,
                          pretrained_cfg_overlay=dict(file=str(path)))
    assert_refused(str(error.value), path, marker)


def test_url_is_downloaded_then_refused(tmp_path, marker, monkeypatch):
    payload = write_payload(tmp_path / "src" / "internimage_t_1k_224.pth", marker)
    cache = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(cache))
    fetched = []

    def fake_download(url, dst, *args, **kwargs):
        fetched.append(url)
        shutil.copy(payload, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    url = "https://example.org/weights/internimage_t_1k_224.pth"
    with pytest.raises(UntrustedCheckpointError) as error:
        read_state_dict(url)
    cached = cache / "checkpoints" / "internimage_t_1k_224.pth"
    assert fetched == [url] and cached.is_file()
    assert_refused(str(error.value), cached, marker)


def test_hugging_face_pytorch_model_bin_refuses_the_payload(tmp_path, marker):
    pytest.importorskip("transformers")
    from classification.huggingface.configuration_internimage import InternImageConfig
    from classification.huggingface.modeling_internimage import InternImageForImageClassification

    folder = tmp_path / "repo"
    InternImageConfig(core_op="DCNv3_pytorch", channels=16, depths=[1, 1, 1, 1], groups=[1, 2, 4, 8],
                      num_classes=3).save_pretrained(folder)
    path = write_payload(folder / "pytorch_model.bin", marker)
    with pytest.raises(UntrustedCheckpointError) as error:
        InternImageForImageClassification.from_pretrained(folder)
    assert_refused(str(error.value), path, marker)


def test_routed_torch_load_covers_library_reads_with_weights_only_false(tmp_path, marker):
    """Library code that calls torch.load(weights_only=False) on our files (DeepSpeed's
    checkpoint engine, zero_to_fp32, accelerate's load_custom_state) gets read_checkpoint."""
    path = write_payload(tmp_path / "mp_rank_00_model_states.pt", marker)
    original = torch.load
    with routed_torch_load():
        with routed_torch_load():  # nesting keeps one router
            assert torch.load is not original
        with pytest.raises(UntrustedCheckpointError):
            torch.load(path, map_location="cpu", weights_only=False)
        with open(path, "rb") as f, pytest.raises(pickle.UnpicklingError):  # file objects: torch's error
            torch.load(f, weights_only=False)
        legit = tmp_path / "legit.pt"
        torch.save({"w": torch.ones(2), "args": argparse.Namespace(lr=0.1)}, legit)
        assert torch.load(legit, weights_only=False)["args"].lr == 0.1
    assert torch.load is original and not marker.exists()


# ----------------------------------------------------------------------------- what is accepted
def test_allowlisted_types_load_without_the_opt_in(tmp_path, monkeypatch):
    from mmengine.logging.history_buffer import HistoryBuffer
    from yacs.config import CfgNode

    monkeypatch.delenv(TRUST_ENV, raising=False)
    buffer = HistoryBuffer()
    for value in (3.0, 1.0):
        buffer.update(value)
    config = CfgNode({"MODEL": CfgNode({"NAME": "tiny"}), "TRAIN": CfgNode({"EPOCHS": 3})})
    config.freeze()
    state = {"model": tiny_model().state_dict(), "config": config, "args": argparse.Namespace(lr=0.1),
             "message_hub": {"loss": buffer}, "seed": np.int64(7), "history": np.arange(3.0),
             "dtype": np.dtype("float16"), "shape": torch.Size([2, 3])}
    for legacy in (False, True):
        path = tmp_path / f"old_{legacy}.pth"
        torch.save(state, path, _use_new_zipfile_serialization=not legacy)
        loaded = read_checkpoint(path)
        assert loaded["config"].MODEL.NAME == "tiny" and loaded["config"].is_frozen()
        assert loaded["args"].lr == 0.1 and loaded["message_hub"]["loss"].mean() == 2.0
        assert loaded["seed"] == 7 and loaded["history"].tolist() == [0.0, 1.0, 2.0]
        assert loaded["dtype"] == np.float16 and loaded["shape"] == (2, 3)
        assert read_state_dict(path).keys() == tiny_model().state_dict().keys()


def test_deepspeed_optimizer_state_types_load_without_the_opt_in(tmp_path):
    """What DeepSpeed's ZeRO optimizer-state files pickle besides tensors."""
    pytest.importorskip("deepspeed")
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    path = tmp_path / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    dynamic = DynamicLossScaler(init_scale=2.0 ** 16, scale_window=1000, min_scale=1.0, delayed_shift=1,
                                consecutive_hysteresis=False)
    torch.save({"optimizer_state_dict": {
        "loss_scaler": LossScaler(scale=1.0), "dynamic": dynamic, "zero_stage": ZeroStageEnum.gradients,
        "fragment": fragment_address(numel=4, start=2)}}, path)
    loaded = read_checkpoint(path)["optimizer_state_dict"]
    assert loaded["loss_scaler"].cur_scale == 1.0 and loaded["dynamic"].cur_scale == 2.0 ** 16
    assert loaded["zero_stage"] is ZeroStageEnum.gradients and loaded["fragment"].numel == 4


def test_numpy_1_names_are_accepted(tmp_path):
    """Files written under numpy 1.x name numpy.core.multiarray (numpy 2: numpy._core)."""
    path = tmp_path / "numpy1.pth"
    torch.save({"a": np.arange(4.0), "s": np.float32(2.5)}, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    assert b"numpy._core.multiarray" in data
    path.write_bytes(data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    loaded = read_checkpoint(path)
    assert loaded["a"].tolist() == [0.0, 1.0, 2.0, 3.0] and loaded["s"] == np.float32(2.5)


def test_history_buffer_getattr_stand_in_allows_nothing_else(tmp_path):
    class ReachesForGlobals:
        def __reduce__(self):
            from mmengine.logging.history_buffer import HistoryBuffer

            return getattr, (HistoryBuffer, "__init__")  # both globals are allowlisted

    path = tmp_path / "hostile.pth"
    torch.save({"x": ReachesForGlobals()}, path)
    with pytest.raises(UntrustedCheckpointError, match="refusing getattr"):
        read_checkpoint(path)


def test_opt_in_loads_an_old_style_checkpoint_with_other_objects(tmp_path, monkeypatch):
    monkeypatch.delenv(TRUST_ENV, raising=False)
    model = tiny_model(seed=1)
    path = tmp_path / "old_trainer.pth"
    torch.save({"model": model.state_dict(), "args": argparse.Namespace(lr=0.1),
                "saved_on": datetime.date(2023, 3, 1)}, path)
    with pytest.raises(UntrustedCheckpointError, match="datetime.date"):
        read_checkpoint(path)
    assert read_checkpoint(path, trust=True)["saved_on"] == datetime.date(2023, 3, 1)
    monkeypatch.setenv(TRUST_ENV, "1")
    assert load_pretrained(tiny_model(), path, strict=True).ok


def test_safetensors_is_read_as_tensors(tmp_path):
    from safetensors.torch import save_file

    model = tiny_model(seed=2)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    assert read_state_dict(path).keys() == model.state_dict().keys()
    assert load_pretrained(tiny_model(), path, strict=True).ok
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointReadError, match="model.safetensors is not a readable safetensors file"):
        read_checkpoint(path)


# ----------------------------------------------------------------------------- broken files
def _broken_files(tmp_path: Path) -> list[Path]:
    good = tmp_path / "good.pth"
    torch.save({"model": tiny_model().state_dict()}, good)
    truncated, garbage = tmp_path / "truncated.pth", tmp_path / "random_bytes.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    legacy = tmp_path / "legacy_truncated.pth"
    torch.save({"model": tiny_model().state_dict()}, legacy, _use_new_zipfile_serialization=False)
    legacy.write_bytes(legacy.read_bytes()[:300])
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    return [truncated, garbage, legacy, empty]


def test_broken_files_give_one_line_naming_the_file(tmp_path):
    for path in _broken_files(tmp_path):
        with pytest.raises(CheckpointReadError) as error:
            read_checkpoint(path)
        message = str(error.value)
        assert message.startswith(f"{path} is not a readable PyTorch checkpoint") and "\n" not in message
    for path, what in ((tmp_path / "missing.pth", "does not exist"), (tmp_path, "is a directory")):
        with pytest.raises(FileNotFoundError, match=what) as error:
            read_checkpoint(path)
        assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_main_reports_broken_files_in_one_line(tmp_path, tiny_cfg):
    from classification import main as trainer

    for path in _broken_files(tmp_path)[:2]:
        with pytest.raises(CheckpointReadError) as error:
            trainer.main(["--cfg", str(tiny_cfg), "--throughput", "--resume", str(path),
                          "--output", str(tmp_path / "out")])
        message = str(error.value)
        assert message.startswith(f"{path} is not a readable PyTorch checkpoint") and "\n" not in message


# ----------------------------------------------------------------------------- classification scripts
# Each script by its command line: main.py in a subprocess (the error reaches stderr), the
# others through main(argv) in this process (a subprocess costs ~5 s of imports on CI).
def refused_in_process(main, args: list, path: Path, marker: Path) -> None:
    with pytest.raises(UntrustedCheckpointError) as error:
        main([str(a) for a in args])
    assert_refused(str(error.value), path, marker)


def test_main_refuses_the_payload(tmp_path, marker, tiny_cfg):
    path = write_payload(tmp_path / "ckpt.pth", marker)
    proc = run_script("classification/main.py", "--cfg", tiny_cfg, "--throughput", "--resume", path,
                      "--output", tmp_path / "out")
    assert_script_refused(proc, path, marker)


def test_main_pretrained_refuses_the_payload(tmp_path, marker, tiny_cfg):
    from classification import main as trainer

    path = write_payload(tmp_path / "ckpt.pth", marker)
    refused_in_process(trainer.main, ["--cfg", tiny_cfg, "--throughput", "--pretrained", path,
                                      "--output", tmp_path / "out"], path, marker)


def test_main_trust_flag_loads_an_old_style_checkpoint(tmp_path, tiny_cfg, monkeypatch):
    from classification import main as trainer
    from classification.config import load_config_file
    from classification.models import build_model

    monkeypatch.setenv(TRUST_ENV, "0")  # the flag sets it to 1; monkeypatch removes it afterwards
    path = tmp_path / "old.pth"
    model = build_model(load_config_file(str(tiny_cfg)))
    torch.save({"model": model.state_dict(), "epoch": 4, "args": argparse.Namespace(lr=0.1),
                "saved_on": datetime.date(2023, 3, 1)}, path)
    args = ["--cfg", str(tiny_cfg), "--throughput", "--resume", str(path), "--output", str(tmp_path / "out"),
            "--opts", "DATA.BATCH_SIZE", "1"]
    with pytest.raises(UntrustedCheckpointError, match="datetime.date"):
        trainer.main(args)
    result = trainer.main([*args, "--trust-checkpoint"])
    assert result["throughput"] > 0 and os.environ[TRUST_ENV] == "1"


def test_extract_feature_refuses_the_payload(tmp_path, marker, tiny_cfg, tiny_data):
    from classification import extract_feature

    path = write_payload(tmp_path / "ckpt.pth", marker)
    refused_in_process(extract_feature.main, ["--cfg", tiny_cfg, "--img", tiny_data / "val" / "a" / "0.png",
                                              "--keys", "patch_embed", "--resume", path, "--device", "cpu"],
                       path, marker)


def test_export_refuses_the_payload(tmp_path, marker):
    from classification import export

    path = write_payload(tmp_path / "internimage_t_1k_224.pth", marker)
    args = ["--onnx", "--ckpt_dir", tmp_path, "--output-dir", tmp_path, "--runs", "0"]
    refused_in_process(export.main, args, path, marker)
    assert not list(tmp_path.glob("*.onnx"))


@pytest.mark.parametrize("layout", ["PUBLISHED_DINO", "PUBLISHED_MASK2FORMER"])
def test_dense_converters_refuse_the_payload(tmp_path, marker, layout, monkeypatch):
    """detection/ and segmentation/tools/convert_checkpoint.py are tool_main with a layout."""
    from dense_common import published_keys
    from dense_common.checkpoint_conversion import tool_main

    monkeypatch.delenv(TRUST_ENV, raising=False)
    path = write_payload(tmp_path / "published.pth", marker)
    with pytest.raises(SystemExit) as exit_info:
        tool_main([str(path), str(tmp_path / "out.pth")], expected_layout=getattr(published_keys, layout),
                  prog="convert_checkpoint.py")
    assert_refused(str(exit_info.value), path, marker)
    assert str(exit_info.value).startswith("error: ") and not (tmp_path / "out.pth").exists()


def test_hugging_face_convert_refuses_the_payload(tmp_path, marker):
    pytest.importorskip("transformers")
    from classification.huggingface import convert

    path = write_payload(tmp_path / "internimage_t_1k_224.pth", marker)
    refused_in_process(convert.main, ["--model_name", "internimage_t_1k_224", "--ckpt", path, "--out",
                                      tmp_path / "hub"], path, marker)
    assert not (tmp_path / "hub").exists()


def test_deepspeed_consolidate_refuses_a_payload_client_state(tmp_path, marker):
    pytest.importorskip("deepspeed")
    from classification import main_deepspeed

    tag = tmp_path / "ckpt" / "epoch0"
    path = write_payload(tag / "mp_rank_00_model_states.pt", marker)
    (tmp_path / "ckpt" / "latest").write_text("epoch0")
    refused_in_process(main_deepspeed.main, ["--consolidate", tmp_path / "ckpt", "--ema", "--out",
                                             tmp_path / "out.pth"], path, marker)


def test_deepspeed_resume_refuses_a_payload(tmp_path, marker, tiny_cfg, tiny_data):
    """DeepSpeed's own checkpoint engine reads with weights_only=False: main_deepspeed routes it.
    A subprocess: DeepSpeed caches its process groups module-wide, so an earlier in-process
    DeepSpeed run of the suite would leak into this one."""
    pytest.importorskip("deepspeed")
    tag = tmp_path / "out" / "epoch0"
    path = write_payload(tag / "mp_rank_00_model_states.pt", marker)
    env = script_env()
    env.setdefault("TORCH_EXTENSIONS_DIR", os.path.expanduser("~/.cache/torch_extensions"))
    proc = run_script("classification/main_deepspeed.py", "--cfg", tiny_cfg, "--data-path", tiny_data,
                      "--output", tmp_path / "run", "--resume", tag, env=env)
    assert_script_refused(proc, path, marker)


def test_accelerate_resume_refuses_a_payload(tmp_path, marker, tiny_cfg, tiny_data):
    """accelerate's load_state reads registered objects with weights_only=False. Subprocesses:
    accelerate's state singletons outlive a run in this process."""
    pytest.importorskip("accelerate")
    args = ["--cfg", tiny_cfg, "--data-path", tiny_data, "--output", tmp_path / "out"]
    first = run_script("classification/main_accelerate.py", *args)
    assert first.returncode == 0, first.stderr[-3000:]
    (custom,) = sorted((tmp_path / "out").rglob("custom_checkpoint_0.pkl"))  # the trainer's counters
    torch.save({"epoch": 0, "updates": 3, "x": ShellPayload(marker)}, custom)
    proc = run_script("classification/main_accelerate.py", *args, "--epochs", "2")
    assert_script_refused(proc, custom, marker)
