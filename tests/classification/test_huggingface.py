"""Hugging Face repos, natively: Hub-layout folders (config.json, preprocessor_config.json,
model.safetensors / pytorch_model.bin with the published names) written by our exporter and
by hand from the spec's key rules, loaded through transformers' Auto classes (no remote
code) and through timm, against our InternImage with the same weights; save_pretrained
writes the published names again; convert.py's command line. Tiny models only; nothing
touches the network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers / huggingface_hub read it

import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification

import classification.huggingface as hf
from classification.config import get_default_config
from classification.data import build_transform
from classification.huggingface import convert as converter
from classification.models import InternImage
from classification.models.registry import HUB_ALIASES, PUBLISHED

ROOT = Path(__file__).resolve().parents[2]
# post-norm + layer scale (so layer_scale1/2 exist) and a T-like and an H-like head
TINY_S = dict(channels=16, depths=(1, 1, 2, 1), groups=(1, 2, 4, 8), layer_scale=1e-5, post_norm=True,
              core_op="DCNv3_pytorch")
TINY_H = dict(channels=16, depths=(1, 1, 2, 1), groups=(1, 2, 4, 8), core_op="DCNv3_pytorch",
              dw_kernel_size=5, res_post_norm=True, level2_post_norm=True, level2_post_norm_block_ids=(1,),
              center_feature_scale=True, use_clip_projector=True)
NUM_CLASSES = 5
# Weights loaded from a safetensors file are not 64-byte aligned, and MKL's sgemm (ATen's
# addmm, e.g. DCNv3's mask logits) rounds differently at another alignment on some CPUs
# (AMD EPYC: up to 1.5e-6 here). A tensor loaded into the wrong place moves these outputs
# by orders of magnitude more (_trained_like perturbs every weight by 0.1-0.3).
SAME_COMPUTATION = dict(rtol=1e-5, atol=1e-5)
SIZE = 64
# model.md's state_dict sizes of the published classifiers (1000-class head)
STATE_DICT_KEYS = {"t": 633, "s": 751, "b": 751, "l": 839, "xl": 883, "h": 1357, "g": 1295}


def _trained_like(arch: dict) -> InternImage:
    """An InternImage whose weights are all far from their initial values (layer scales,
    offsets, norms), so a tensor that fails to load shows in the logits."""
    model = InternImage(**arch, num_classes=NUM_CLASSES).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("gamma1", "gamma2")) or ".dcn.offset." in name or ".dcn.mask." in name:
                p.normal_(0, 0.3)
            elif p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.1)
        for name, b in model.named_buffers():
            if name.endswith("running_var"):
                b.uniform_(0.5, 2.0)
    return model


def _spec_hub_names(state_dict: dict) -> dict:
    """fidelity.md's rule, written out independently: a ``model.`` prefix and
    gamma1/gamma2 renamed layer_scale1/layer_scale2."""
    out = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        parts[-1] = {"gamma1": "layer_scale1", "gamma2": "layer_scale2"}.get(parts[-1], parts[-1])
        out["model." + ".".join(parts)] = value.contiguous()
    return out


def _hand_written_folder(folder: Path, model: InternImage, arch: dict,
                         weights: str = "model.safetensors") -> Path:
    """A Hub-layout repo as published, from the spec alone (not through our exporter)."""
    folder.mkdir(parents=True)
    config = {"architectures": ["InternImageModelForImageClassification"], "model_type": "internimage",
              "auto_map": {"AutoConfig": "configuration_internimage.InternImageConfig",
                           "AutoModel": "modeling_internimage.InternImageModel",
                           "AutoModelForImageClassification":
                               "modeling_internimage.InternImageModelForImageClassification"},
              "cls_scale": 1.5, "num_classes": NUM_CLASSES, "norm_layer": "LN", "act_layer": "GELU",
              "drop_path_rate": 0.1, "offset_scale": 1.0, "mlp_ratio": 4.0, "remove_center": False,
              **{k: list(v) if isinstance(v, tuple) else v for k, v in arch.items()}}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "preprocessor_config.json").write_text(json.dumps(converter.preprocessor_config(SIZE)))
    tensors = _spec_hub_names(model.state_dict())
    if weights == "model.safetensors":
        save_file(tensors, str(folder / weights), metadata={"format": "pt"})
    else:
        torch.save(tensors, folder / weights)
    return folder


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """No network, also when huggingface_hub was imported (and read the environment) before."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(2, 3, SIZE, SIZE)


@pytest.fixture(scope="module", params=["s-like", "h-like"])
def exported(request, tmp_path_factory):
    """(our model, its arch, a folder written by our exporter)."""
    arch = TINY_S if request.param == "s-like" else TINY_H
    model = _trained_like(arch)
    config = converter.hub_config(arch, NUM_CLASSES)
    folder = converter.write_hub_folder(tmp_path_factory.mktemp("exported") / "repo", model.state_dict(),
                                        config, SIZE, log=lambda *_: None)
    return model, arch, folder


# ----------------------------------------------------------------------------- registration
def test_auto_classes_know_internimage():
    config = AutoConfig.for_model("internimage", channels=16, depths=[1, 1, 1, 1], groups=[1, 2, 4, 8])
    assert isinstance(config, hf.InternImageConfig) and config.model_type == "internimage"
    assert isinstance(AutoModel.from_config(config), hf.InternImageModel)
    model = AutoModelForImageClassification.from_config(config)
    assert isinstance(model, hf.InternImageForImageClassification)
    assert isinstance(model.model, InternImage)  # the one backbone, as self.model
    model.gradient_checkpointing_enable()
    assert model.is_gradient_checkpointing and all(b.with_cp for lv in model.model.levels for b in lv.blocks)
    model.gradient_checkpointing_disable()
    assert not model.is_gradient_checkpointing
    assert hf.InternImageModelForImageClassification is hf.InternImageForImageClassification


# ----------------------------------------------------------------------------- the folder layout
def test_exporter_writes_the_published_layout(exported):
    model, arch, folder = exported
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors",
                                                        "preprocessor_config.json"]
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "internimage" and set(config["auto_map"]) == {
        "AutoConfig", "AutoModel", "AutoModelForImageClassification"}
    assert set(hf.HUB_CONFIG_FIELDS) <= set(config) and config["num_classes"] == NUM_CLASSES
    assert config["cls_scale"] == 1.5 and config["depths"] == list(arch["depths"])
    weights = load_file(str(folder / "model.safetensors"))
    spec = _spec_hub_names(model.state_dict())
    assert weights.keys() == spec.keys()  # the names the published remote code reads
    assert any(k.endswith(".layer_scale1") for k in weights) == ("layer_scale" in arch)
    assert not any("gamma" in k for k in weights)
    assert all(torch.equal(weights[k], spec[k]) for k in spec)
    processor = json.loads((folder / "preprocessor_config.json").read_text())
    assert processor["image_processor_type"] == "CLIPImageProcessor" and processor["resample"] == 3
    assert processor["size"] == {"shortest_edge": SIZE}
    assert processor["crop_size"] == {"height": SIZE, "width": SIZE}
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no staging left over


def test_published_configs_describe_the_published_models():
    """config.json of every published name (and Hub alias) builds the model.md state_dict."""
    for name in [*PUBLISHED, *HUB_ALIASES]:
        config = converter.published_config(name)
        variant, classes, _ = PUBLISHED[HUB_ALIASES.get(name, name)]
        assert config["num_classes"] == classes and config["core_op"] == "DCNv3"
        fields = {k: v for k, v in config.items() if k != "auto_map"}
        kwargs = hf.InternImageConfig(**fields).internimage_kwargs()
        with torch.device("meta"):
            ours = InternImage(**kwargs).state_dict()
        assert len(ours) == STATE_DICT_KEYS[variant] and ours["head.weight"].shape[0] == classes, name


# ----------------------------------------------------------------------------- transformers
@pytest.mark.parametrize("source", ["exporter", "by-hand", "by-hand-bin"])
def test_auto_model_for_image_classification_gives_our_logits(exported, source, tmp_path, x):
    model, arch, folder = exported
    if source != "exporter":
        weights = "pytorch_model.bin" if source == "by-hand-bin" else "model.safetensors"
        folder = _hand_written_folder(tmp_path / "repo", model, arch, weights)
    loaded = AutoModelForImageClassification.from_pretrained(folder).eval()  # no trust_remote_code
    assert type(loaded) is hf.InternImageForImageClassification
    labels = torch.tensor([1, 4])
    with torch.no_grad():
        expected = model(x)
        out = loaded(pixel_values=x, labels=labels, output_hidden_states=True)
        stages = model.forward_multiscale(x)
    torch.testing.assert_close(out.logits, expected, **SAME_COMPUTATION)
    torch.testing.assert_close(out.loss, F.cross_entropy(expected, labels))
    assert len(out.hidden_states) == 4
    for a, b in zip(out.hidden_states, stages, strict=True):
        torch.testing.assert_close(a, b, **SAME_COMPUTATION)
    assert loaded(pixel_values=x).loss is None


def test_remote_code_is_not_needed_even_when_trusted(exported, x):
    """auto_map points at remote code; our registered classes win, so nothing is fetched."""
    model, _, folder = exported
    loaded = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
    assert type(loaded) is hf.InternImageForImageClassification
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, model(x), **SAME_COMPUTATION)


def test_auto_model_gives_stage_maps_and_pooled_features(exported, x):
    model, _, folder = exported
    base = AutoModel.from_pretrained(folder).eval()
    assert type(base) is hf.InternImageModel
    with torch.no_grad():
        out = base(x)
        pooled = model.forward_features(x)
        stages = model.forward_multiscale(x)
    torch.testing.assert_close(out.pooler_output, pooled, **SAME_COMPUTATION)
    assert [tuple(h.shape) for h in out.hidden_states] == [tuple(s.shape) for s in stages]
    for a, b in zip(out.hidden_states, stages, strict=True):
        torch.testing.assert_close(a, b, **SAME_COMPUTATION)
    torch.testing.assert_close(out.last_hidden_state, stages[-1], **SAME_COMPUTATION)
    assert not any(k.startswith("model.head.") for k in base.state_dict())


def test_save_pretrained_writes_the_published_names(exported, tmp_path, x):
    model, _, folder = exported
    loaded = AutoModelForImageClassification.from_pretrained(folder)
    loaded.save_pretrained(tmp_path / "again")
    saved = load_file(str(tmp_path / "again" / "model.safetensors"))
    assert saved.keys() == load_file(str(folder / "model.safetensors")).keys()
    # a model built from a config (not loaded) saves the published names too
    fresh = hf.InternImageForImageClassification(loaded.config)
    fresh.save_pretrained(tmp_path / "fresh")
    assert load_file(str(tmp_path / "fresh" / "model.safetensors")).keys() == saved.keys()
    again = AutoModelForImageClassification.from_pretrained(tmp_path / "again").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x).logits, model(x), **SAME_COMPUTATION)


def test_missing_weights_get_internimage_init(exported, tmp_path):
    """A repo without the classifier: transformers initialises it the InternImage way."""
    model, arch, folder = exported
    weights = load_file(str(folder / "model.safetensors"))
    partial = {k: v for k, v in weights.items() if not k.startswith("model.head")}
    target = tmp_path / "headless"
    target.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        (target / name).write_text((folder / name).read_text())
    save_file(partial, str(target / "model.safetensors"), metadata={"format": "pt"})
    loaded = AutoModelForImageClassification.from_pretrained(target)
    head = loaded.model.head
    assert float(head.bias.abs().sum()) == 0.0 and 0.005 < float(head.weight.std()) < 0.03
    torch.testing.assert_close(loaded.model.patch_embed.conv1.weight, model.patch_embed.conv1.weight)


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned_by_pickle",))


def test_pickled_code_in_pytorch_model_bin_is_refused(exported, tmp_path, monkeypatch):
    model, arch, _ = exported
    folder = _hand_written_folder(tmp_path / "evil", model, arch, "pytorch_model.bin")
    weights = torch.load(folder / "pytorch_model.bin", weights_only=True)
    torch.save({**weights, "extra": _Payload()}, folder / "pytorch_model.bin")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Exception, match="(?i)weights.only|unpickl|unsupported global"):
        AutoModelForImageClassification.from_pretrained(folder)
    assert not (tmp_path / "pwned_by_pickle").exists()


def test_image_processor_is_the_published_eval_transform(exported):
    """preprocessor_config.json through AutoImageProcessor equals our eval transform with
    TEST.CROP at that size: exactly with the PIL backend, closely with the default one."""
    import skimage.data

    _, _, folder = exported
    photo = Image.fromarray(skimage.data.astronaut()[:, 60:])  # non-square: the crop matters
    config = get_default_config()
    config.merge_from_list(["DATA.IMG_SIZE", SIZE, "TEST.CROP", True])
    ours = build_transform(is_train=False, config=config)(photo)
    pil = AutoImageProcessor.from_pretrained(folder, backend="pil")(images=photo, return_tensors="pt")
    torch.testing.assert_close(pil["pixel_values"][0], ours, rtol=0, atol=1e-6)
    default = AutoImageProcessor.from_pretrained(folder)(images=photo, return_tensors="pt")["pixel_values"][0]
    assert default.shape == ours.shape
    assert float((default - ours).abs().max()) < 0.05 and float((default - ours).abs().mean()) < 1e-3


# ----------------------------------------------------------------------------- timm
@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_timm_loads_a_hub_layout_file(exported, weights, tmp_path, x):
    model, arch, folder = exported
    if weights == "pytorch_model.bin":
        folder = _hand_written_folder(tmp_path / "bin", model, arch, weights)
    loaded = timm.create_model("internimage_t_1k_224", pretrained=True, num_classes=NUM_CLASSES,
                               pretrained_cfg_overlay=dict(file=str(folder / weights),
                                                           num_classes=NUM_CLASSES),
                               **arch).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), **SAME_COMPUTATION)


# ----------------------------------------------------------------------------- convert.py
def test_convert_command_line(tmp_path, monkeypatch, capsys):
    """The command line end to end on a tiny checkpoint (its published_config swapped for a
    tiny one), then refusals: an existing folder, a checkpoint of another architecture."""
    model = _trained_like(TINY_S)
    ckpt = tmp_path / "internimage_s_1k_224.pth"
    torch.save({"model": model.state_dict()}, ckpt)
    tiny_config = converter.hub_config(TINY_S, NUM_CLASSES)
    monkeypatch.setattr(converter, "published_config", lambda name: tiny_config)
    out = tmp_path / "hub" / "internimage_s_1k_224"
    args = ["--model_name", "internimage_s_1k_224", "--ckpt", str(ckpt), "--out", str(out)]
    assert converter.main(args) == 0
    loaded = AutoModelForImageClassification.from_pretrained(out).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, model(x), **SAME_COMPUTATION)
    assert json.loads((out / "preprocessor_config.json").read_text())["size"] == {"shortest_edge": 224}
    before = (out / "model.safetensors").stat().st_mtime_ns
    assert converter.main(args) == 2
    assert "exists" in capsys.readouterr().err and (out / "model.safetensors").stat().st_mtime_ns == before
    assert converter.main([*args, "--overwrite"]) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # old copy and staging removed


def test_convert_script_rejects_a_mismatched_checkpoint(tmp_path):
    """As users run it (a fresh process): a checkpoint that is not the named model is refused
    before anything is written (the check builds the named model on the meta device)."""
    ckpt = tmp_path / "tiny.pth"
    torch.save({"model": InternImage(**TINY_S).state_dict()}, ckpt)
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    script = ROOT / "classification/huggingface/convert.py"
    result = subprocess.run([sys.executable, str(script), "--model_name", "internimage_xl_22k_384",
                             "--ckpt", str(ckpt), "--out", str(out)],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 2, result.stderr
    assert "does not match the architecture" in result.stderr and not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_the_folder_appears_only_when_complete(tmp_path, monkeypatch):
    """Written elsewhere and renamed: while the weights are being written ``out`` does not
    exist (or is still the old folder), and a failed write leaves nothing behind."""
    import safetensors.torch

    out = tmp_path / "repo"
    seen = []

    def broken(tensors, path, metadata=None):
        seen.append((out.exists(), sorted(p.name for p in out.iterdir()) if out.exists() else None))
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    model = InternImage(**TINY_S, num_classes=NUM_CLASSES)
    config = converter.hub_config(TINY_S, NUM_CLASSES)
    with pytest.raises(OSError, match="disk full"):
        converter.write_hub_folder(out, model.state_dict(), config, SIZE, log=lambda *_: None)
    assert seen == [(False, None)] and list(tmp_path.iterdir()) == []
    out.mkdir()
    (out / "config.json").write_text("{}")  # an old folder stays as it was when --overwrite fails
    with pytest.raises(OSError, match="disk full"):
        converter.write_hub_folder(out, model.state_dict(), config, SIZE, overwrite=True, log=lambda *_: None)
    assert seen[1] == (True, ["config.json"]) and sorted(p.name for p in tmp_path.iterdir()) == ["repo"]
    assert (out / "config.json").read_text() == "{}"
