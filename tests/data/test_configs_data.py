"""Every shipped data config: its keys are exactly arguments of its `_target_` (style rule), and it composes."""

import importlib
import inspect
from pathlib import Path

import pytest
import yaml

CONF = Path(__file__).resolve().parents[2] / "xmod_lab" / "conf" / "data"


@pytest.mark.parametrize("path", sorted(CONF.glob("*.yaml")), ids=lambda p: p.stem)
def test_keys_are_constructor_arguments(path):
    cfg = yaml.safe_load(path.read_text())
    for parent in cfg.pop("defaults", []):  # a config extending another (synthetic_mlm: synthetic_nli)
        if isinstance(parent, dict):  # another group chosen by the preset (its task), not a data key
            continue
        if parent != "_self_":
            cfg = {**yaml.safe_load((CONF / f"{parent}.yaml").read_text()), **cfg}
    module, _, name = cfg.pop("_target_").rpartition(".")
    target = getattr(importlib.import_module(module), name)
    params = inspect.signature(target).parameters
    assert set(cfg) <= set(params), f"{path.name}: not arguments of {name}: {set(cfg) - set(params)}"
    # `languages` is the built backbone's adapter list, passed by xmod-train (never read from the config)
    assert "languages" not in cfg, f"{path.name}: the adapter list comes from the built model, not the config"
    required = {n for n, p in params.items() if p.default is inspect.Parameter.empty and n not in ("self", "languages")}
    assert required <= set(cfg), f"{path.name}: missing required {required - set(cfg)}"
    if "source" in cfg:
        assert set(cfg["source"]) <= {"path", "name", "splits", "lang_column"}
