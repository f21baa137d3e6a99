"""XmodConfig: transformers' fields and defaults, config.json both ways, languages, derived sizes, validation."""

from __future__ import annotations

import json

import pytest
import torch

from tests.models.helpers import tiny_config
from xmod_lab.models import XMOD_LANGUAGES_81, XmodConfig

SHARED_FIELDS = [
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "max_position_embeddings",
    "type_vocab_size",
    "initializer_range",
    "layer_norm_eps",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
    "use_cache",
    "classifier_dropout",
    "pre_norm",
    "adapter_reduction_factor",
    "adapter_layer_norm",
    "adapter_reuse_layer_norm",
    "ln_before_adapter",
    "default_language",
    "is_decoder",
    "add_cross_attention",
    "tie_word_embeddings",
    "num_labels",
    "id2label",
    "label2id",
    "problem_type",
    "output_attentions",
    "output_hidden_states",
    "return_dict",
]


def test_defaults_match_transformers():
    import transformers

    ours, theirs = XmodConfig(), transformers.XmodConfig()
    for field in SHARED_FIELDS:
        assert getattr(ours, field) == getattr(theirs, field), field
    assert list(ours.languages) == list(theirs.languages) == ["en_XX"]
    assert ours.position_embedding_type == "absolute"
    assert (ours.adapter_layers, ours.adapter_activation, ours.adapter_mode) == (None, None, "modular")
    assert ours.attn_implementation == "sdpa"  # transformers' runtime choice, not a config.json field


def test_transformers_reads_our_config_json_and_we_read_theirs(tmp_path):
    import transformers

    ours = tiny_config(
        pre_norm=True, default_language="de_DE", num_labels=None, id2label={0: "neg", 1: "pos"}
    )
    ours.save_pretrained(tmp_path / "ours")
    theirs = transformers.XmodConfig.from_pretrained(tmp_path / "ours")
    for field in SHARED_FIELDS:
        assert getattr(theirs, field) == getattr(ours, field), field
    theirs.save_pretrained(tmp_path / "theirs")
    back = XmodConfig.from_pretrained(tmp_path / "theirs")
    for field in SHARED_FIELDS:
        assert getattr(back, field) == getattr(ours, field), field
    assert back.languages == ours.languages


def test_round_trip_keeps_unknown_keys(tmp_path):
    raw = tiny_config().to_dict()
    raw.update({"transformers_version": "4.27.0", "some_future_field": [1, 2], "_name_or_path": "x"})
    (tmp_path / "config.json").write_text(json.dumps(raw))
    config = XmodConfig.from_pretrained(tmp_path / "config.json")
    assert config.some_future_field == [1, 2]
    written = config.to_dict()
    assert written["some_future_field"] == [1, 2]
    assert written["_name_or_path"] == "x"  # transformers keeps it in to_dict, drops it from config.json
    assert XmodConfig.from_dict(written).to_dict() == written


def test_lang_id_and_81_languages():
    config = XmodConfig(languages=XMOD_LANGUAGES_81)
    assert len(XMOD_LANGUAGES_81) == 81 and len(set(XMOD_LANGUAGES_81)) == 81
    assert config.lang_id("en_XX") == 0 and config.lang_id("de_DE") == 8 and config.lang_id("sa_IN") == 80
    with pytest.raises(ValueError, match=r"Unknown language code 'de'.*'en_XX', 'id_ID'"):
        config.lang_id("de")


@pytest.mark.parametrize(
    "factor, expected", [(2, 16), (4, 8), (3, 10), (2.5, 13), (1.5, 21), (0.5, 64), (64, 1), (100.0, 1)]
)
def test_bottleneck_size(factor, expected):
    assert tiny_config(adapter_reduction_factor=factor).adapter_bottleneck_size == expected


def test_derived_values_are_not_stored():
    data = tiny_config(adapter_layers=[1]).to_dict()
    for derived in ("head_dim", "adapter_bottleneck_size", "adapter_layer_ids", "adapter_keys", "num_labels"):
        assert derived not in data


def test_adapter_layout_fields():
    assert tiny_config().adapter_layer_ids == [0, 1]
    assert tiny_config(adapter_layers=[1]).adapter_layer_ids == [1]
    assert tiny_config(adapter_mode="none").adapter_layer_ids == []
    assert tiny_config(adapter_mode="shared").adapter_keys == ["shared"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(hidden_size=30), "multiple of num_attention_heads"),
        (dict(languages=[]), "languages is empty"),
        (dict(languages=["en_XX", "en_XX"]), "duplicates"),
        (dict(default_language="xx_YY"), "not in languages"),
        (dict(adapter_reduction_factor=0), "positive number"),
        (dict(adapter_mode="parallel"), "adapter_mode must be one of"),
        (dict(attn_implementation="flash"), "attn_implementation must be one of"),
        (dict(position_embedding_type="rotary"), "position_embedding_type must be one of"),
        (dict(adapter_layers=[0, 2]), r"adapter_layers \[2\] out of range"),
        (dict(add_cross_attention=True), "needs is_decoder=True"),
        (dict(problem_type="ranking"), "problem_type must be one of"),
        (dict(num_labels=3, id2label={0: "a"}), "disagrees with id2label"),
    ],
)
def test_invalid_configs_are_explained(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**kwargs)


def test_num_labels_builds_label_maps():
    config = tiny_config(num_labels=4)
    assert config.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2", 3: "LABEL_3"}
    assert config.label2id["LABEL_3"] == 3
    config.num_labels = 2
    assert list(config.id2label) == [0, 1]
    named = tiny_config(id2label={"0": "entailment", "1": "neutral", "2": "contradiction"})
    assert named.num_labels == 3 and named.label2id["neutral"] == 1


def test_reads_a_hub_style_xmod_base_config(tmp_path):
    """The facebook/xmod-base config.json layout (saved by transformers 4.27): real sizes, 81 languages."""
    hub = {
        "_name_or_path": "facebook/xmod-base",
        "architectures": ["XmodForMaskedLM"],
        "adapter_layer_norm": False,
        "adapter_reduction_factor": 2,
        "adapter_reuse_layer_norm": True,
        "attention_probs_dropout_prob": 0.1,
        "bos_token_id": 0,
        "classifier_dropout": None,
        "default_language": None,
        "eos_token_id": 2,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": 768,
        "initializer_range": 0.02,
        "intermediate_size": 3072,
        "languages": list(XMOD_LANGUAGES_81),
        "layer_norm_eps": 1e-05,
        "ln_before_adapter": True,
        "max_position_embeddings": 514,
        "model_type": "xmod",
        "num_attention_heads": 12,
        "num_hidden_layers": 12,
        "pad_token_id": 1,
        "position_embedding_type": "absolute",
        "pre_norm": False,
        "torch_dtype": "float32",
        "transformers_version": "4.27.0.dev0",
        "type_vocab_size": 1,
        "use_cache": True,
        "vocab_size": 250002,
    }
    (tmp_path / "config.json").write_text(json.dumps(hub))
    config = XmodConfig.from_pretrained(tmp_path)
    assert config.lang_id("de_DE") == 8 and config.adapter_bottleneck_size == 384 and config.head_dim == 64
    assert config.architectures == ["XmodForMaskedLM"] and config.layer_norm_eps == 1e-5
    assert config.dtype == torch.float32  # transformers reads the old torch_dtype key as dtype


def test_stored_copies_of_derived_values_are_ignored():
    config = XmodConfig.from_dict({**tiny_config().to_dict(), "head_dim": 99, "adapter_bottleneck_size": 3})
    assert config.head_dim == 8 and config.adapter_bottleneck_size == 16
