"""Forward arguments: language routing and its errors, default language, outputs, masks, checkpointing, autocast."""

from __future__ import annotations

import pytest
import torch

import xmod_lab.models as xm
from tests.models.helpers import LANGS, max_diff, tiny_config, token_batch
from xmod_lab.models.modeling import route_languages


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return xm.XmodForSequenceClassification(tiny_config()).eval()


@pytest.fixture(scope="module")
def batch():
    return token_batch()


@pytest.mark.parametrize(
    "lang_ids, error, message",
    [
        ([0, 1, 0, 1], TypeError, r"got list; wrap it: torch.tensor\(lang_ids, dtype=torch.long\)"),
        (torch.tensor([0, 1, 4, 0]), ValueError, r"values must be in 0..3 .*got min 0, max 4"),
        (torch.tensor([0, -1, 0, 0]), ValueError, r"values must be in 0..3 .*got min -1"),
        (torch.tensor([0.0, 1.5, 0.0, 1.0]), ValueError, "must hold whole numbers"),
        (torch.tensor([0, 1, 0]), ValueError, r"shape \(batch_size,\) = \(4,\).*got shape \(3,\)"),
        (torch.zeros(4, 9, dtype=torch.long), ValueError, r"got shape \(4, 9\)"),
        (torch.tensor([True, False, True, True]), ValueError, "must be integer indices"),
        (7, ValueError, r"value 7 is out of range 0..3"),
        ("de_DE", TypeError, r"pass config.lang_id\('de_DE'\)"),
    ],
    ids=[
        "list",
        "too-large",
        "negative",
        "fraction",
        "short",
        "per-token",
        "bool",
        "int-out-of-range",
        "str",
    ],
)
def test_bad_lang_ids_are_explained(model, batch, lang_ids, error, message):
    ids, mask = batch
    with pytest.raises(error, match=message):
        model(ids, attention_mask=mask, lang_ids=lang_ids)


def test_accepted_lang_id_forms_agree(model, batch):
    ids, mask = batch
    ref = model(ids, attention_mask=mask, lang_ids=torch.tensor([1, 1, 1, 1])).logits
    for form in (
        1,
        torch.tensor(1),
        torch.tensor([1]),
        torch.tensor([1.0, 1.0, 1.0, 1.0]),
        torch.ones(4, 1, dtype=torch.int32),
    ):
        assert torch.equal(model(ids, attention_mask=mask, lang_ids=form).logits, ref), form


def test_no_language_needs_default_or_lang_ids(batch):
    model = xm.XmodModel(tiny_config())
    ids, _ = batch
    with pytest.raises(ValueError, match=r"pass lang_ids .* or call model.set_default_language"):
        model(ids)
    with pytest.raises(ValueError, match=r"Unknown language code 'xx_XX'.*'en_XX', 'de_DE'"):
        model.set_default_language("xx_XX")
    model.set_default_language("fr_XX")  # the bare model too (transformers crashes on freezing there)
    assert torch.equal(model(ids).last_hidden_state, model(ids, lang_ids=2).last_hidden_state)


def test_routing_needs_no_host_sync_for_one_language(monkeypatch):
    config = tiny_config(default_language="de_DE")

    def forbidden(*args, **kwargs):
        raise AssertionError("host sync")

    monkeypatch.setattr(torch.Tensor, "tolist", forbidden)
    monkeypatch.setattr(torch.Tensor, "item", forbidden)
    assert route_languages(config, None, 4, torch.device("cpu"))[0].single == "de_DE"
    assert route_languages(config, 2, 4, torch.device("cpu"))[0].single == "fr_XX"


def test_routing_groups_rows_once_per_language():
    routing, ids = route_languages(tiny_config(), torch.tensor([3, 0, 3, 1, 0]), 5, torch.device("cpu"))
    assert (
        routing.single is None and routing.keys == ("en_XX", "de_DE", "sw_KE") and routing.counts == (2, 1, 2)
    )
    assert routing.order.tolist() == [1, 4, 3, 0, 2]
    x = torch.arange(5.0)[:, None, None].expand(5, 2, 3)
    calls = []

    class Probe(torch.nn.Module):
        def __init__(self, shift):
            super().__init__()
            self.shift = shift

        def forward(self, h):
            calls.append(h.shape[0])
            return h + self.shift

    adapters = torch.nn.ModuleDict({code: Probe(10.0 * (i + 1)) for i, code in enumerate(LANGS)})
    out = routing.apply(adapters, x)
    assert calls == [2, 1, 2]  # one call per present language; fr_XX never called
    assert out[:, 0, 0].tolist() == [40.0 + 0, 10.0 + 1, 40.0 + 2, 20.0 + 3, 10.0 + 4]


def test_empty_batch(model):
    empty = torch.zeros(0, 5, dtype=torch.long)
    assert model(empty, lang_ids=torch.zeros(0, dtype=torch.long)).logits.shape == (0, 3)


def test_token_type_ids(model, batch):
    ids, mask = batch
    tt = torch.zeros_like(ids)
    tt[:, 5:] = 1
    out = model(ids, attention_mask=mask, lang_ids=0, token_type_ids=tt).logits
    assert not torch.equal(out, model(ids, attention_mask=mask, lang_ids=0).logits)
    for lang_ids in (0, torch.tensor([0, 1, 0, 2])):  # checked with and without the routing's host sync
        with pytest.raises(ValueError, match=r"token_type_ids must be in 0..1 .*type_vocab_size=2"):
            model(ids, attention_mask=mask, lang_ids=lang_ids, token_type_ids=tt + 1)
        with pytest.raises(ValueError, match=r"token_type_ids must be in 0..1"):
            model(ids, attention_mask=mask, lang_ids=lang_ids, token_type_ids=tt - 1)


def test_input_shape_errors(model, batch):
    ids, mask = batch
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        model(lang_ids=0)
    with pytest.raises(ValueError, match=r"attention_mask must have shape .*\(4, 9\)"):
        model(ids, attention_mask=mask[:, :5], lang_ids=0)
    with pytest.raises(ValueError, match="head_mask must have shape"):
        model(ids, lang_ids=0, head_mask=torch.ones(3))
    with pytest.raises(ValueError, match="input_ids must be"):
        model(ids[0], lang_ids=0)
    with pytest.raises(ValueError, match=r"sequence too long: 39 tokens.*truncate to 38 tokens"):
        model(torch.full((1, 39), 5), lang_ids=0)
    assert model(torch.full((1, 38), 5), lang_ids=0).logits.shape == (1, 3)


def test_inputs_embeds_and_position_ids(model, batch):
    ids, _ = batch
    full = ids.clone()
    full[full == 1] = 5  # no padding: input_ids positions are then consecutive like inputs_embeds'
    embeds = model.roberta.embeddings.word_embeddings(full)
    a = model(full, lang_ids=1).logits
    b = model(inputs_embeds=embeds, lang_ids=1).logits
    positions = torch.arange(2, 2 + full.shape[1]).expand_as(full)
    c = model(full, lang_ids=1, position_ids=positions).logits
    assert max_diff(a, b) <= 1e-6 and torch.equal(a, c)


def test_output_access_and_tuples(model, batch):
    ids, mask = batch
    labels = torch.tensor([0, 1, 2, 0])
    out = model(
        ids, attention_mask=mask, lang_ids=0, labels=labels, output_hidden_states=True, output_attentions=True
    )
    assert list(out.keys()) == ["loss", "logits", "hidden_states", "attentions"]
    assert out[0] is out.loss and out["logits"] is out.logits and out[1] is out.logits
    tup = model(ids, attention_mask=mask, lang_ids=0, labels=labels, return_dict=False)
    assert isinstance(tup, tuple) and len(tup) == 2 and max_diff(tup[1], out.logits) <= 1e-6
    assert len(out.hidden_states) == 3 and out.attentions[0].shape == (4, 4, 9, 9)
    no_loss = model(ids, attention_mask=mask, lang_ids=0)
    assert no_loss[0] is no_loss.logits and "loss" not in no_loss
    with pytest.raises(KeyError, match="loss"):  # transformers' ModelOutput
        no_loss["loss"]


def test_padding_does_not_leak(model):
    ids, mask = token_batch(batch=2, pad_rows=(1,))
    out = model(ids, attention_mask=mask, lang_ids=torch.tensor([0, 1])).logits
    short = ids[1:, : int(mask[1].sum())]
    alone = model(short, lang_ids=1).logits
    assert max_diff(out[1:], alone) <= 1e-5


def test_freeze_embeddings_and_language_adapters_on_every_class():
    for cls in (xm.XmodModel, xm.XmodForMaskedLM, xm.XmodForMultipleChoice):
        model = cls(tiny_config(pre_norm=True, adapter_layer_norm=True, adapter_reuse_layer_norm=False))
        model.freeze_embeddings_and_language_adapters()
        frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
        prefix = "" if cls is xm.XmodModel else "roberta."
        expected = {
            n
            for n, _ in model.named_parameters()
            if n.startswith(prefix + "embeddings.") or ".adapter_modules." in n or ".adapter_layer_norm." in n
        }
        assert frozen == expected, cls.__name__
        assert any("output.LayerNorm" in n for n, p in model.named_parameters() if p.requires_grad)


def test_gradient_checkpointing_same_gradients(batch):
    ids, mask = batch
    torch.manual_seed(0)
    model = xm.XmodForMaskedLM(tiny_config()).train()
    labels = ids.masked_fill(mask == 0, -100)
    lang = torch.tensor([0, 2, 0, 1])
    model(ids, attention_mask=mask, lang_ids=lang, labels=labels).loss.backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    model.gradient_checkpointing_enable()
    assert model.is_gradient_checkpointing
    model(ids, attention_mask=mask, lang_ids=lang, labels=labels).loss.backward()
    got = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert got.keys() == ref.keys()
    assert max(max_diff(got[n], ref[n]) for n in ref) <= 1e-6
    model.gradient_checkpointing_disable()
    assert not model.is_gradient_checkpointing


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_bf16_autocast_on_cpu(batch, attn_implementation):
    ids, mask = batch
    torch.manual_seed(0)
    model = xm.XmodForTokenClassification(tiny_config(attn_implementation=attn_implementation)).train()
    labels = ids.masked_fill(mask == 0, -100) % 3
    lang = torch.tensor([0, 2, 0, 1])
    fp32 = model(ids, attention_mask=mask, lang_ids=lang, labels=labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ids, attention_mask=mask, lang_ids=lang, labels=labels)
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.logits).all()
    assert max_diff(out.logits, fp32.logits) < 0.1
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_resize_token_embeddings_keeps_rows_and_ties(batch):
    ids, mask = batch
    for tie in (True, False):
        torch.manual_seed(0)
        model = xm.XmodForMaskedLM(tiny_config(tie_word_embeddings=tie)).eval()
        before = model(ids, attention_mask=mask, lang_ids=0).logits
        model.resize_token_embeddings(120)
        assert model.config.vocab_size == 120
        head = model.lm_head
        assert head.decoder.weight.shape == (120, 32) and head.decoder.bias is head.bias
        assert (head.decoder.weight is model.roberta.embeddings.word_embeddings.weight) == tie
        after = model(ids, attention_mask=mask, lang_ids=0).logits
        assert after.shape == (4, 9, 120) and max_diff(after[..., :99], before) <= 1e-6
        model.resize_token_embeddings(50)
        assert model(ids % 50, attention_mask=mask, lang_ids=0).logits.shape[-1] == 50
