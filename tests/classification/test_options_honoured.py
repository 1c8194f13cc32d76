"""No option is accepted and then ignored: DATA.CACHE_MODE preloads zip members as
published (full: all, part: this rank's share), DATA.IMG_ON_MEMORY / AUG.RANDOM_RESIZED_CROP /
TEST.SEQUENTIAL and main_deepspeed's --offload-param refuse what is not implemented, a
failing memory-benchmark setting exits non-zero, a broken TensorBoard is said once, and a
dense backbone checkpoint that does not fit is an error unless init_cfg says strict=False."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch
from test_trainer import make_dataset, tiny_config, write_cfg

from classification import main as trainer
from classification.data import build_loader


@pytest.fixture(scope="module")
def zip_data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("zip_data"), "zip", n_train=4, n_val=2)


@pytest.mark.parametrize("key, value, message", [
    ("AUG.RANDOM_RESIZED_CROP", "True", "AUG.RANDOM_RESIZED_CROP=True is not implemented"),
    ("TEST.SEQUENTIAL", "True", "TEST.SEQUENTIAL=True"),
    ("DATA.CACHE_MODE", "sometimes", "DATA.CACHE_MODE must be one of"),
])
def test_unimplemented_settings_are_refused(tmp_path, zip_data, key, value, message):
    cfg = write_cfg(tmp_path)
    with pytest.raises(ValueError, match=message):
        trainer.main(["--cfg", cfg, "--data-path", zip_data, "--zip", "--output", str(tmp_path / "out"),
                      "--opts", key, value])


@pytest.mark.parametrize("mode, rank, world_size, held", [
    ("no", 0, 1, 0), ("full", 1, 2, 12), ("part", 0, 1, 12), ("part", 1, 2, 6), ("part", 2, 3, 4)])
def test_cache_mode_preloads_the_zip_members(zip_data, mode, rank, world_size, held):
    config = tiny_config(**{"DATA.DATA_PATH": zip_data, "DATA.ZIP_MODE": True, "DATA.CACHE_MODE": mode,
                            "DATA.BATCH_SIZE": 2})
    ds_train, ds_val, loader_train, _, _ = build_loader(config, rank=rank, world_size=world_size)
    assert len(ds_train.zip_reader._cache) == held  # 12 train images
    assert len(ds_val.zip_reader._cache) == {0: 0, 12: 6, 6: 3, 4: 2}[held]
    if held:
        cached = set(ds_train.zip_reader._cache)
        expected = [p for p, _ in ds_train.samples[(0 if mode == "full" else rank)::(1 if mode == "full" else
                                                                                     world_size)]]
        assert cached == set(expected)
    # cached or not, the images are the archive's
    plain = tiny_config(**{"DATA.DATA_PATH": zip_data, "DATA.ZIP_MODE": True, "DATA.CACHE_MODE": "no"})
    reference, *_ = build_loader(plain, rank=0, world_size=1)
    for index in range(len(ds_train)):
        assert ds_train.load_image(index).tobytes() == reference.load_image(index).tobytes()
    images, _ = next(iter(loader_train))
    assert images.shape == (2, 3, 32, 32)


@pytest.mark.parametrize("layout", ["folder", "zip"])
def test_img_on_memory_holds_this_ranks_share(tmp_path, layout):
    data = make_dataset(tmp_path / layout, layout, n_train=4, n_val=2)
    config = tiny_config(**{"DATA.DATA_PATH": data, "DATA.ZIP_MODE": layout == "zip", "DATA.CACHE_MODE": "no",
                            "DATA.IMG_ON_MEMORY": True, "DATA.BATCH_SIZE": 2})
    ds_train, ds_val, loader_train, _, _ = build_loader(config, rank=1, world_size=2)
    held = ds_train.zip_reader._cache if layout == "zip" else ds_train._held
    assert set(held) == {p for p, _ in ds_train.samples[1::2]}  # 6 of the 12 images
    if layout == "folder":  # the held bytes are what is read, not the files
        path = ds_train.samples[1][0]
        before = ds_train.load_image(1).tobytes()
        (Path(ds_train.root) / path).write_bytes(b"gone")
        assert ds_train.load_image(1).tobytes() == before
    images, _ = next(iter(loader_train))
    assert images.shape == (2, 3, 32, 32)


def test_offload_param_is_refused(capsys):
    pytest.importorskip("deepspeed")
    from classification import main_deepspeed as ds_main

    with pytest.raises(SystemExit) as exit_info:
        ds_main.main(["--cfg", "x.yaml", "--offload-param", "cpu"])
    assert exit_info.value.code == 2
    assert "--offload-param cpu: parameter offload needs ZeRO-3" in capsys.readouterr().err


def test_a_failing_memory_benchmark_setting_exits_non_zero(tmp_path, capsys):
    from classification.tools import memory_benchmark

    with pytest.raises(SystemExit, match="1 setting"):
        memory_benchmark.main(["--cfg", str(tmp_path / "missing.yaml"), "--settings", "plain"])
    assert "plain: failed" in capsys.readouterr().err


def test_a_broken_tensorboard_is_said_once(tmp_path, monkeypatch):
    from classification.utils import metrics

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import raises ImportError
    monkeypatch.setattr(metrics, "_TENSORBOARD_WARNED", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for k in range(3):
            logger = metrics.MetricsLogger(str(tmp_path / f"run{k}"))
            assert logger.writer is None
            logger.log("epoch", 0, loss=1.0)
            logger.close()
    said = [w for w in caught if "TensorBoard logging is off" in str(w.message)]
    assert len(said) == 1 and "ModuleNotFoundError" in str(said[0].message)


def _dense_backbone(**kwargs):
    from dense_common import InternImageBackbone

    return InternImageBackbone(core_op="DCNv3_pytorch", channels=16, depths=[1, 1, 1, 1],
                               groups=[1, 2, 4, 8], **kwargs)


def test_a_dense_checkpoint_that_does_not_fit_is_an_error(tmp_path):
    weights = _dense_backbone().state_dict()
    good = {**weights, "head.weight": torch.zeros(10, 16 * 8)}  # classifier tensors: expected
    bad = {k: v for k, v in weights.items() if "levels.3" not in k}
    bad["levels.9.blocks.0.mlp.fc1.weight"] = torch.zeros(1)
    torch.save({"model": good}, tmp_path / "good.pth")
    torch.save({"model": bad}, tmp_path / "bad.pth")
    _dense_backbone(init_cfg=dict(type="Pretrained", checkpoint=str(tmp_path / "good.pth"))).init_weights()
    pattern = r"missing.*levels\.3[\s\S]*unexpected.*levels\.9[\s\S]*strict=False"
    with pytest.raises(RuntimeError, match=pattern):
        _dense_backbone(init_cfg=dict(type="Pretrained", checkpoint=str(tmp_path / "bad.pth"))).init_weights()
    lenient = _dense_backbone(init_cfg=dict(type="Pretrained", checkpoint=str(tmp_path / "bad.pth"),
                                            strict=False))
    lenient.init_weights()  # loads what fits, reports the rest
    torch.testing.assert_close(lenient.state_dict()["levels.0.blocks.0.mlp.fc1.weight"],
                               weights["levels.0.blocks.0.mlp.fc1.weight"])


def test_a_cb_trunk_takes_a_classification_checkpoint(tmp_path):
    """The lead CB trunk has no stem and zero-initialised fusion gammas: expected differences."""
    from classification.models.checkpoint import LoadReport
    from dense_common.backbone import unexpected_load_differences

    trunk = _dense_backbone()
    del trunk.patch_embed
    report = LoadReport(source="x", missing=["gamma0", "levels.0.blocks.0.gamma1"],
                        unexpected=["patch_embed.conv1.weight", "head.weight"])
    assert unexpected_load_differences(report, trunk) == []
    assert unexpected_load_differences(report, _dense_backbone()) == ["patch_embed.conv1.weight"]
