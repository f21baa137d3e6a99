"""Shared task helpers: model building from plain config, optimizer groups, schedules, metric logging."""

import pytest
import torch

from xmod_lab.models import XmodConfig, XmodForSequenceClassification
from xmod_lab.tasks.common import (
    build_model,
    lr_lambda,
    parameter_groups,
    plain,
)

TINY = {"vocab_size": 100, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 32, "max_position_embeddings": 66}
LANGS = {"adapters": ["en_XX", "de_DE", "fr_XX"], "add": {}, "train": ["en"], "eval": ["en", "de"], "map": {}}


def fresh(**languages):
    return build_model(XmodForSequenceClassification, {"pretrained": None, "config": TINY}, {**LANGS, **languages},
                       head_config={"num_labels": 3})


def test_fresh_model_has_config_languages_and_adapter_options():
    net = build_model(XmodForSequenceClassification, {"pretrained": None, "config": TINY}, LANGS,
                      adapter={"adapter_reduction_factor": 4, "adapter_mode": None}, head_config={"num_labels": 3})
    assert net.config.languages == ["en_XX", "de_DE", "fr_XX"]
    assert net.config.adapter_reduction_factor == 4 and net.config.num_labels == 3
    assert net.roberta.encoder.layer[0].output.adapter_modules["de_DE"].dense1.out_features == 4


def test_unknown_adapter_option_is_rejected():
    with pytest.raises(ValueError, match="unknown adapter option"):
        build_model(XmodForSequenceClassification, {"pretrained": None, "config": TINY}, LANGS, adapter={"factor": 4})


def test_pretrained_dir_prunes_adds_and_matches_backbone_languages(tmp_path):
    fresh().save_pretrained(tmp_path / "ckpt")
    model = {"pretrained": str(tmp_path / "ckpt"), "config": {}}
    languages = {**LANGS, "adapters": ["fr_XX", "en_XX", "sw_KE"], "add": {"sw_KE": "en_XX"}}
    net = build_model(XmodForSequenceClassification, model, languages, head_config={"num_labels": 3})
    # checkpoint order is kept for the survivors; added languages come last
    assert net.config.languages == ["en_XX", "fr_XX", "sw_KE"]
    sw = net.roberta.encoder.layer[1].output.adapter_modules["sw_KE"].dense1.weight
    en = net.roberta.encoder.layer[1].output.adapter_modules["en_XX"].dense1.weight
    torch.testing.assert_close(sw, en)


def test_pretrained_errors_name_the_problem(tmp_path):
    fresh().save_pretrained(tmp_path / "ckpt")
    model = {"pretrained": str(tmp_path / "ckpt"), "config": {}}
    with pytest.raises(ValueError, match=r"\['sw_KE'\] have no adapter"):
        build_model(XmodForSequenceClassification, model, {**LANGS, "adapters": ["en_XX", "sw_KE"]})
    with pytest.raises(ValueError, match="change the architecture"):
        build_model(XmodForSequenceClassification, model, LANGS, adapter={"adapter_mode": "shared"})
    with pytest.raises(FileNotFoundError, match="no such directory"):
        build_model(XmodForSequenceClassification, {"pretrained": str(tmp_path / "nope"), "config": {}}, LANGS)


def test_model_config_rebuilds_the_same_architecture_without_source():
    net = fresh(add={"sw_KE": None})
    again = build_model(XmodForSequenceClassification, {"pretrained": "facebook/never-downloaded"}, LANGS,
                        model_config=net.config.to_dict())
    assert again.config == net.config
    assert set(again.state_dict()) == set(net.state_dict())


def test_parameter_groups_exclude_biases_layernorms_and_frozen():
    net = fresh()
    net.roberta.embeddings.word_embeddings.weight.requires_grad_(False)
    decay, no_decay = parameter_groups(net, 0.01)
    names = {id(p): n for n, p in net.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    undecayed = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert "roberta.embeddings.word_embeddings.weight" not in decayed | undecayed
    assert all(n.endswith("bias") or "LayerNorm" in n or "layer_norm" in n for n in undecayed)
    assert "roberta.encoder.layer.0.output.LayerNorm.weight" in undecayed
    assert "roberta.encoder.layer.0.output.adapter_modules.de_DE.dense1.weight" in decayed
    assert not any(n.endswith("bias") for n in decayed)
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert decayed | undecayed == trainable


def test_lr_schedules():
    linear = lr_lambda("linear", warmup_steps=10, total_steps=110)
    assert linear(0) == pytest.approx(0.1) and linear(9) == pytest.approx(1.0)
    assert linear(60) == pytest.approx(0.5) and linear(110) == 0.0
    constant = lr_lambda("constant", warmup_steps=4, total_steps=100)
    assert constant(1) == pytest.approx(0.5) and constant(50) == 1.0
    with pytest.raises(ValueError, match="choose 'constant' or 'linear'"):
        lr_lambda("cosine", 0, 10)


def test_plain_converts_omegaconf_and_enums():
    from omegaconf import OmegaConf

    from xmod_lab.conf.schema import FreezeConf

    cfg = OmegaConf.structured(FreezeConf)
    out = plain(cfg)
    assert out["policy"] == "auto" and type(out["policy"]) is str and isinstance(out["include"], list)


def test_fresh_model_needs_adapter_languages():
    with pytest.raises(ValueError, match="needs languages.adapters"):
        build_model(XmodForSequenceClassification, {"pretrained": None, "config": TINY}, {**LANGS, "adapters": None})


def test_xmodconfig_roundtrip_sanity():
    assert XmodConfig.from_dict(fresh().config.to_dict()).languages == LANGS["adapters"]


def test_config_fields_that_would_rebuild_a_pretrained_model_are_refused(tmp_path):
    """model=tiny's fields on another checkpoint: 2 of its layers would load silently (or shapes would clash)."""
    fresh().save_pretrained(tmp_path / "ckpt")
    source = str(tmp_path / "ckpt")
    with pytest.raises(ValueError, match=r"'num_hidden_layers': \(2, 1\).*model=base"):
        build_model(XmodForSequenceClassification, {"pretrained": source, "config": {**TINY, "num_hidden_layers": 1}},
                    LANGS, head_config={"num_labels": 3})
    net = build_model(XmodForSequenceClassification, {"pretrained": source, "config": {**TINY, "hidden_dropout_prob": 0.3}},
                      LANGS, head_config={"num_labels": 3})  # the same architecture, other dropout: allowed
    assert net.config.hidden_dropout_prob == 0.3 and net.config.num_hidden_layers == 2
