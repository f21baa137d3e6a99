"""Freezing policies: exact trainable name sets (litgpt test_adapter_filter style) and the report."""

from functools import partial

import pytest
import torch

from tests.models.helpers import tiny_config
from xmod_lab.models import XmodForMaskedLM, XmodForSequenceClassification, XmodModel
from xmod_lab.models.freezing import apply_freeze_policy, parameter_group, parameter_report

LANGS = ["en_XX", "de_DE"]


tiny = partial(
    tiny_config, vocab_size=40, hidden_size=8, intermediate_size=16, num_attention_heads=2, languages=LANGS
)


def layer_names(i: int, adapters=LANGS, adapter_ln: bool = False) -> set[str]:
    p = f"roberta.encoder.layer.{i}."
    names = {
        p + f"{m}.{w}"
        for m in (
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
            "attention.output.LayerNorm",
            "intermediate.dense",
            "output.dense",
            "output.LayerNorm",
        )
        for w in ("weight", "bias")
    }
    return names | adapter_names(i, adapters) | (ln_names(i) if adapter_ln else set())


def adapter_names(i: int, adapters) -> set[str]:
    return {
        f"roberta.encoder.layer.{i}.output.adapter_modules.{code}.{d}.{w}"
        for code in adapters
        for d in ("dense1", "dense2")
        for w in ("weight", "bias")
    }


def ln_names(i: int) -> set[str]:
    return {f"roberta.encoder.layer.{i}.output.adapter_layer_norm.{w}" for w in ("weight", "bias")}


EMB = {
    "roberta.embeddings." + n
    for n in (
        "word_embeddings.weight",
        "position_embeddings.weight",
        "token_type_embeddings.weight",
        "LayerNorm.weight",
        "LayerNorm.bias",
    )
}
CLS_HEAD = {f"classifier.{m}.{w}" for m in ("dense", "out_proj") for w in ("weight", "bias")}
LM_HEAD = {"lm_head.bias"} | {f"lm_head.{m}.{w}" for m in ("dense", "layer_norm") for w in ("weight", "bias")}


def trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_groups_of_names():
    assert parameter_group("roberta.embeddings.word_embeddings.weight") == "embeddings"
    assert parameter_group("embeddings.LayerNorm.bias") == "embeddings"  # bare XmodModel
    assert parameter_group("roberta.encoder.layer.3.output.LayerNorm.weight") == "shared"
    assert parameter_group("roberta.encoder.LayerNorm.weight") == "shared"
    assert (
        parameter_group("roberta.encoder.layer.3.output.adapter_modules.de_DE.dense1.weight")
        == "adapter:de_DE"
    )
    assert parameter_group("encoder.layer.0.output.adapter_layer_norm.bias") == "adapter_layer_norm"
    assert parameter_group("lm_head.decoder.bias") == "head"
    assert parameter_group("pooler.dense.weight") == "head"
    assert parameter_group("qa_outputs.weight") == "head"


def test_paper_policy_matches_reference_freeze_and_keeps_output_layernorm():
    model = XmodForSequenceClassification(
        tiny(pre_norm=True, adapter_layer_norm=True, adapter_reuse_layer_norm=False)
    )
    names = set(apply_freeze_policy(model, "paper"))
    shared = set().union(*(layer_names(i, adapters=[]) for i in range(2)))
    shared |= {"roberta.encoder.LayerNorm.weight", "roberta.encoder.LayerNorm.bias"}
    assert names == trainable(model) == shared | CLS_HEAD
    assert "roberta.encoder.layer.0.output.LayerNorm.weight" in names
    # Same set as the model's own freeze_embeddings_and_language_adapters (the paper's recipe).
    reference = XmodForSequenceClassification(model.config)
    reference.freeze_embeddings_and_language_adapters()
    assert trainable(reference) == names


def test_adapters_only_for_one_language_freezes_everything_else_including_shared_adapter_ln():
    model = XmodForMaskedLM(tiny(pre_norm=True, adapter_layer_norm=True, adapter_reuse_layer_norm=False))
    names = set(apply_freeze_policy(model, "adapters_only", languages=["de_DE"]))
    assert names == trainable(model) == adapter_names(0, ["de_DE"]) | adapter_names(1, ["de_DE"])


def test_adapters_only_all_languages_trains_adapter_ln_and_optional_embeddings_and_head():
    model = XmodForMaskedLM(tiny(pre_norm=True, adapter_layer_norm=True, adapter_reuse_layer_norm=False))
    names = set(apply_freeze_policy(model, "adapters_only", train_embeddings=True, train_head=True))
    expected = EMB | LM_HEAD
    for i in range(2):
        expected |= adapter_names(i, LANGS) | ln_names(i)
    assert names == trainable(model) == expected
    # The tied decoder is the word embedding: it trains exactly when the embeddings do.
    assert model.lm_head.decoder.weight.requires_grad


def test_head_only_and_none_and_bare_model_pooler():
    model = XmodModel(tiny())
    assert set(apply_freeze_policy(model, "head_only")) == {"pooler.dense.weight", "pooler.dense.bias"}
    everything = {n for n, _ in model.named_parameters()}
    assert set(apply_freeze_policy(model, "none")) == everything == trainable(model)


def test_custom_include_exclude_and_refinements_on_other_policies():
    model = XmodForSequenceClassification(tiny())
    names = set(
        apply_freeze_policy(model, "custom", include=[r"\.attention\.self\.query\."], exclude=[r"layer\.1\."])
    )
    assert names == {
        "roberta.encoder.layer.0.attention.self.query.weight",
        "roberta.encoder.layer.0.attention.self.query.bias",
    }
    # exclude alone starts from everything
    names = set(apply_freeze_policy(model, "custom", exclude=[r"^roberta\.embeddings\."]))
    assert names == {n for n, _ in model.named_parameters()} - EMB
    # include/exclude also refine a named policy
    names = set(
        apply_freeze_policy(model, "head_only", include=["word_embeddings"], exclude=["out_proj.bias"])
    )
    assert names == (CLS_HEAD - {"classifier.out_proj.bias"}) | {"roberta.embeddings.word_embeddings.weight"}


def test_shared_adapter_mode_and_clear_errors():
    model = XmodForMaskedLM(tiny(adapter_mode="shared"))
    names = set(apply_freeze_policy(model, "adapters_only"))
    assert names == adapter_names(0, ["shared"]) | adapter_names(1, ["shared"])
    with pytest.raises(ValueError, match="one adapter for every language"):
        apply_freeze_policy(model, "adapters_only", languages=["de_DE"])

    model = XmodForMaskedLM(tiny())
    with pytest.raises(ValueError, match="unknown freeze policy"):
        apply_freeze_policy(model, "adapters")
    with pytest.raises(ValueError, match=r"unknown language.*fi_FI"):
        apply_freeze_policy(model, "adapters_only", languages=["fi_FI"])
    with pytest.raises(ValueError, match="matches no parameter"):
        apply_freeze_policy(model, "custom", include=["no_such_module"])
    with pytest.raises(ValueError, match="leaves no trainable"):
        apply_freeze_policy(model, "head_only", exclude=["lm_head"])
    with pytest.raises(ValueError, match="needs include"):
        apply_freeze_policy(model, "custom")
    with pytest.raises(ValueError, match="only applies to policy 'adapters_only'"):
        apply_freeze_policy(model, "paper", languages=["en_XX"])
    with pytest.raises(ValueError, match="not a valid regex"):
        apply_freeze_policy(model, "custom", include=["("])
    no_adapters = XmodForMaskedLM(tiny(adapter_mode="none"))
    with pytest.raises(ValueError, match="without adapters"):
        apply_freeze_policy(no_adapters, "adapters_only")


def test_parameter_report_counts_by_group():
    model = XmodForSequenceClassification(tiny())
    apply_freeze_policy(model, "adapters_only", languages=["de_DE"], train_head=True)
    report = parameter_report(model)
    per_adapter = 2 * (8 * 4 + 4 + 4 * 8 + 8)  # two layers of dense1 + dense2 (R = 4)
    assert report.rows["adapter:de_DE"] == (per_adapter, 0)
    assert report.rows["adapter:en_XX"] == (0, per_adapter)
    head = sum(p.numel() for n, p in model.named_parameters() if n.startswith("classifier."))
    assert report.rows["head"] == (head, 0)
    assert report.rows["embeddings"][0] == 0
    assert list(report.rows) == ["embeddings", "shared", "adapter:en_XX", "adapter:de_DE", "head"]
    assert report.trainable == per_adapter + head
    assert report.trainable + report.frozen == sum(p.numel() for p in model.parameters())
    table = str(report)
    assert "adapter:de_DE" in table and "total" in table
    assert f"{report.trainable:,}" in table.splitlines()[-1]


def test_frozen_parameters_get_no_gradient():
    model = XmodForMaskedLM(tiny())
    apply_freeze_policy(model, "adapters_only", languages=["en_XX"])
    ids = torch.randint(3, 40, (2, 5))
    model(ids, lang_ids=torch.tensor([0, 1]), labels=ids).loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == adapter_names(0, ["en_XX"]) | adapter_names(1, ["en_XX"])
