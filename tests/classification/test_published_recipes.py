"""The 16 published classification yamls, merged by our loader, give the published
effective value of every key (../shared/data/seed_effective_configs.json: defaults + yaml
+ BASE chain of the published code, no command-line flags)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from classification.config import get_default_config, load_config_file

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / "classification" / "configs"
EFFECTIVE = ROOT.parent / "shared" / "data" / "seed_effective_configs.json"

# Not part of the recipe: where the data and outputs live, and the run's name.
NOT_COMPARED = {"DATA.DATA_PATH", "OUTPUT", "MODEL.NAME", "TAG"}
# Our own keys, with the defaults that keep the published behaviour:
OUR_KEYS = {
    "BASE": None,  # the inheritance list itself (any value)
    "AUG.HFLIP": 0.5,  # timm's flip probability, which the published transform uses
    "DATA.MAP22KTO1K_PATH": "",  # '' = the published 22K->1K table shipped in the package
    "MODEL.META.DIM": 0,
    "SAVE_CKPT_NUM": 1,  # published: the --save-ckpt-num flag, default 1
}


def _flat(node, prefix: str = "") -> dict:
    out = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = list(value) if isinstance(value, tuple) else value
    return out


def _same(key: str, ours, published) -> bool:
    if key == "TRAIN.ACCUMULATION_STEPS":  # 0 (published default) and 1 both mean none
        return max(ours, 1) == max(published, 1)
    return ours == published and type(ours) is type(published) or (
        isinstance(ours, float) and isinstance(published, (int, float)) and ours == published)


@pytest.fixture(scope="module")
def effective() -> dict:
    assert EFFECTIVE.is_file(), f"{EFFECTIVE} not found: ../shared/data must sit beside the repo"
    return json.loads(EFFECTIVE.read_text())


def test_all_sixteen_published_yamls_are_covered(effective):
    assert len(effective) == 16
    missing = [name for name in effective if not (CONFIG_DIR / name).is_file()]
    assert not missing, f"published yamls missing under classification/configs: {missing}"


@pytest.mark.parametrize("name", sorted(json.loads(EFFECTIVE.read_text())) if EFFECTIVE.is_file() else [])
def test_yaml_merges_to_the_published_values(name, effective):
    ours = _flat(load_config_file(str(CONFIG_DIR / name)))
    published = _flat(effective[name])
    wrong = [f"{key}: ours {ours.get(key, '<missing>')!r}, published {value!r}"
             for key, value in sorted(published.items())
             if key not in NOT_COMPARED and (key not in ours or not _same(key, ours[key], value))]
    assert not wrong, f"{name}:\n  " + "\n  ".join(wrong)
    extra = {key: value for key, value in ours.items() if key not in published}
    assert set(extra) <= set(OUR_KEYS), f"keys the published code lacks: {sorted(set(extra) - set(OUR_KEYS))}"
    changed = {k: v for k, v in extra.items() if OUR_KEYS[k] is not None and v != OUR_KEYS[k]}
    assert not changed, f"{name}: our own keys must keep their published-behaviour defaults: {changed}"


def test_defaults_are_the_published_defaults(effective):
    """Keys no published yaml sets keep the published default (e.g. EMA decay 0.9999)."""
    defaults = _flat(get_default_config())
    per_file = [_flat(cfg) for cfg in effective.values()]
    for key, value in defaults.items():
        if key in NOT_COMPARED or key in OUR_KEYS:
            continue
        values = [cfg[key] for cfg in per_file]
        if all(v == values[0] for v in values):  # the same in every published file: the default
            assert _same(key, value, values[0]), f"{key}: default {value!r}, published {values[0]!r}"
    assert defaults["TRAIN.EMA.DECAY"] == 0.9999 and defaults["EVAL_22K_TO_1K"] is False
