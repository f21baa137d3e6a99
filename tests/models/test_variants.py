"""The ablation fields in the layer code: adapter_mode, adapter_layers, float reduction factor, activation."""

from __future__ import annotations

import torch

import xmod_lab.models as xm
from tests.models.helpers import at_real, max_diff, tiny_config, token_batch

LANG = torch.tensor([0, 1, 2, 3])


def _adapter_keys(model):
    return {n for n, _ in model.named_parameters() if "adapter" in n}


def test_adapter_mode_none_is_xlm_roberta():
    import transformers

    config = tiny_config(adapter_mode="none")
    torch.manual_seed(0)
    ours = xm.XmodForMaskedLM(config).eval()
    assert _adapter_keys(ours) == set()
    values = {k: v for k, v in config.to_dict().items() if not k.startswith(("adapter", "languages"))}
    xlmr = transformers.XLMRobertaForMaskedLM(transformers.XLMRobertaConfig(**values)).eval()
    result = xlmr.load_state_dict(ours.state_dict(), strict=False)
    assert not result.unexpected_keys
    ids, mask = token_batch()
    a = ours(ids, attention_mask=mask).logits  # no lang_ids needed
    b = xlmr(ids, attention_mask=mask).logits
    assert max_diff(at_real(a, mask), at_real(b, mask)) <= 1e-5


def test_adapter_mode_shared_uses_one_adapter_for_all_languages():
    torch.manual_seed(0)
    shared = xm.XmodModel(tiny_config(adapter_mode="shared")).eval()
    keys = _adapter_keys(shared)
    assert keys and all(".adapter_modules.shared." in k for k in keys)
    ids, mask = token_batch()
    a = shared(ids, attention_mask=mask, lang_ids=LANG).last_hidden_state
    b = shared(ids, attention_mask=mask).last_hidden_state  # no default language needed either
    assert torch.equal(a, b)
    # Same numbers as a modular model whose only language holds the shared weights.
    single = xm.XmodModel(tiny_config(languages=["shared"])).eval()
    single.load_state_dict(shared.state_dict())
    assert max_diff(single(ids, attention_mask=mask, lang_ids=0).last_hidden_state, a) <= 1e-6


def test_adapter_layers_subset():
    torch.manual_seed(0)
    config = tiny_config(
        adapter_layers=[1], pre_norm=True, adapter_layer_norm=True, adapter_reuse_layer_norm=False
    )
    model = xm.XmodModel(config).eval()
    assert not any(k.startswith("encoder.layer.0.output.adapter") for k in _adapter_keys(model))
    assert {
        k.split(".adapter_modules.")[1].split(".")[0] for k in _adapter_keys(model) if "adapter_modules" in k
    } == set(config.languages)
    assert model.encoder.layer[1].output.adapter_layer_norm is not None
    ids, mask = token_batch()
    out = model(ids, attention_mask=mask, lang_ids=LANG).last_hidden_state
    # Layer 0 has no adapter: zeroing layer 1's adapters must leave just an XLM-R-like network.
    with torch.no_grad():
        for p in model.encoder.layer[1].output.adapter_modules.parameters():
            p.zero_()
    plain = model(ids, attention_mask=mask, lang_ids=LANG).last_hidden_state
    assert max_diff(out, plain) > 1e-4
    assert torch.equal(
        plain, model(ids, attention_mask=mask, lang_ids=torch.tensor([3, 2, 1, 0])).last_hidden_state
    )


def test_float_reduction_factor_trains():
    torch.manual_seed(0)
    model = xm.XmodForSequenceClassification(tiny_config(adapter_reduction_factor=2.5)).train()
    adapter = model.roberta.encoder.layer[0].output.adapter_modules["en_XX"]
    assert adapter.dense1.weight.shape == (13, 32) and adapter.dense2.weight.shape == (32, 13)
    ids, mask = token_batch()
    model(ids, attention_mask=mask, lang_ids=LANG, labels=torch.tensor([0, 1, 2, 0])).loss.backward()
    assert adapter.dense1.weight.grad is not None


def test_adapter_activation():
    torch.manual_seed(0)
    model = xm.XmodModel(tiny_config(adapter_activation="relu")).eval()
    adapter = model.encoder.layer[0].output.adapter_modules["de_DE"]
    x = torch.randn(2, 3, 32)
    expected = adapter.dense2(torch.relu(adapter.dense1(x)))
    assert torch.equal(adapter(x), expected)
    feed_forward = model.encoder.layer[0].intermediate.intermediate_act_fn  # still the exact erf GELU
    assert torch.equal(feed_forward(x), torch.nn.functional.gelu(x))
