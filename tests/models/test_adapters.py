"""Languages after pre-training: add_language / remove_languages on every model class."""

import copy
from functools import partial

import pytest
import torch

from tests.models.helpers import tiny_config
from xmod_lab.models import (
    XmodForCausalLM,
    XmodForMaskedLM,
    XmodForMultipleChoice,
    XmodForQuestionAnswering,
    XmodForSequenceClassification,
    XmodForTokenClassification,
    XmodModel,
)
from xmod_lab.models.adapters import adapter_outputs
from xmod_lab.models.freezing import apply_freeze_policy

LANGS = ["en_XX", "de_DE", "fr_XX"]
ALL_CLASSES = [
    XmodModel,
    XmodForMaskedLM,
    XmodForCausalLM,
    XmodForSequenceClassification,
    XmodForTokenClassification,
    XmodForQuestionAnswering,
    XmodForMultipleChoice,
]


tiny = partial(tiny_config, vocab_size=50, num_attention_heads=2, languages=LANGS)


def adapter_weights(model, code: str) -> list[torch.Tensor]:
    return [p for _, out in adapter_outputs(model) for p in out.adapter_modules[code].parameters()]


def outputs(model, ids, lang: int) -> torch.Tensor:
    with torch.no_grad():
        return model(ids, lang_ids=torch.full((ids.shape[0],), lang)).logits


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_every_class_adds_a_language_as_a_copy(cls):
    torch.manual_seed(0)
    model = cls(
        tiny(is_decoder=cls is XmodForCausalLM, num_labels=2 if cls is XmodForQuestionAnswering else 3)
    ).eval()
    assert model.add_language("rm_CH", init_from="de_DE") == 3
    assert model.config.languages == [*LANGS, "rm_CH"]
    for _, out in adapter_outputs(model):
        assert list(out.adapter_modules) == [*LANGS, "rm_CH"]
    for new, src in zip(adapter_weights(model, "rm_CH"), adapter_weights(model, "de_DE"), strict=True):
        assert torch.equal(new, src) and new.data_ptr() != src.data_ptr()
    ids = torch.randint(3, 50, (2, 6))
    if cls is XmodForMultipleChoice:
        ids = ids.unsqueeze(1).expand(2, 2, 6)
    first = model(ids, lang_ids=torch.tensor([1, 1]))[0]
    assert torch.equal(first, model(ids, lang_ids=torch.tensor([3, 3]))[0])


def test_average_and_random_init():
    torch.manual_seed(0)
    model = XmodForMaskedLM(tiny())
    model.add_language("lb_LU", init_from=["de_DE", "fr_XX"])
    for new, de, fr in zip(*(adapter_weights(model, c) for c in ("lb_LU", "de_DE", "fr_XX")), strict=True):
        assert torch.allclose(new, (de + fr) / 2)
    model.add_language("xx_XX", init_from="random")
    model.add_language("yy_YY")  # None = random as well
    for code in ("xx_XX", "yy_YY"):
        weights = adapter_weights(model, code)
        matrices = [
            (w, o) for w, o in zip(weights, adapter_weights(model, "en_XX"), strict=True) if w.dim() == 2
        ]
        assert all(not torch.equal(w, o) for w, o in matrices)
        biases = [w for w in weights if w.dim() == 1]
        assert all(torch.count_nonzero(b) == 0 for b in biases)  # the model's init: zero bias
        assert 0.01 < weights[0].std() < 0.03  # N(0, initializer_range=0.02)
    assert all(p.requires_grad for p in adapter_weights(model, "xx_XX"))


def test_add_language_errors():
    model = XmodForMaskedLM(tiny())
    with pytest.raises(ValueError, match="already exists"):
        model.add_language("de_DE")
    with pytest.raises(ValueError, match="unknown language"):
        model.add_language("rm_CH", init_from="it_IT")
    with pytest.raises(ValueError, match="duplicates"):
        model.add_language("rm_CH", init_from=["de_DE", "de_DE"])
    with pytest.raises(ValueError, match="empty list"):
        model.add_language("rm_CH", init_from=[])
    with pytest.raises(ValueError, match="contains '.'"):
        model.add_language("de.CH")
    with pytest.raises(ValueError, match="non-empty string"):
        model.add_language("rm CH")
    assert model.config.languages == LANGS  # nothing half-done


def test_remove_languages_renumbers_with_a_warning_and_keeps_outputs():
    torch.manual_seed(0)
    model = XmodForSequenceClassification(tiny(languages=[*LANGS, "fi_FI"])).eval()
    ids = torch.randint(3, 50, (2, 6))
    before = {code: outputs(model, ids, i) for i, code in enumerate(model.config.languages)}
    with pytest.warns(UserWarning, match=r"fr_XX 2 -> 1, fi_FI 3 -> 2"):
        changes = model.remove_languages("de_DE")  # a single code works
    assert changes == {"fr_XX": (2, 1), "fi_FI": (3, 2)}
    assert model.config.languages == ["en_XX", "fr_XX", "fi_FI"]
    for _, out in adapter_outputs(model):
        assert list(out.adapter_modules) == ["en_XX", "fr_XX", "fi_FI"]
    for i, code in enumerate(model.config.languages):
        assert torch.equal(outputs(model, ids, i), before[code])


def test_remove_languages_errors():
    model = XmodForMaskedLM(tiny())
    model.set_default_language("en_XX")
    with pytest.raises(ValueError, match="default language"):
        model.remove_languages(["en_XX"])
    with pytest.raises(ValueError, match=r"unknown language.*it_IT"):
        model.remove_languages(["it_IT"])
    with pytest.raises(ValueError, match="duplicate"):
        model.remove_languages(["de_DE", "de_DE"])
    with pytest.raises(ValueError, match="no language codes"):
        model.remove_languages([])
    model.config.default_language = None
    with pytest.raises(ValueError, match="every language"):
        model.remove_languages(LANGS)
    assert model.config.languages == LANGS


def test_add_and_remove_survive_save_and_load(tmp_path):
    torch.manual_seed(0)
    model = XmodForTokenClassification(tiny()).eval()
    model.add_language("rm_CH", init_from=["de_DE", "fr_XX"])
    with pytest.warns(UserWarning, match="renumbered"):
        model.remove_languages(["en_XX"])
    model.save_pretrained(tmp_path)
    loaded = XmodForTokenClassification.from_pretrained(tmp_path)
    assert loaded.config.languages == ["de_DE", "fr_XX", "rm_CH"]
    ids = torch.randint(3, 50, (2, 6))
    for i in range(3):
        assert torch.equal(outputs(loaded, ids, i), outputs(model, ids, i))


PRE_NORM = dict(
    pre_norm=True, adapter_layer_norm=True, adapter_reuse_layer_norm=False, ln_before_adapter=False
)


@pytest.mark.parametrize("flags", [{}, PRE_NORM], ids=["post_norm", "pre_norm_adapter_ln"])
def test_training_only_the_new_adapter_keeps_old_languages_bit_identical(flags):
    """The paper's claim: a language added after pre-training leaves every other language unchanged."""
    torch.manual_seed(0)
    model = XmodForMaskedLM(tiny(**flags)).eval()
    ids = torch.randint(3, 50, (4, 8))
    before = [outputs(model, ids, i) for i in range(len(LANGS))]
    untouched = copy.deepcopy(model.state_dict())

    new_id = model.add_language("rm_CH", init_from="de_DE")
    trainable = apply_freeze_policy(model, "adapters_only", languages=["rm_CH"])
    assert all(".adapter_modules.rm_CH." in name for name in trainable)
    # Weight decay and momentum over ALL parameters: frozen ones must still not move.
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    model.train()
    for _ in range(3):
        batch = torch.randint(3, 50, (4, 8))
        # Mixed batches: old languages flow through the frozen model next to the new one.
        loss = model(batch, lang_ids=torch.tensor([new_id, 0, new_id, 2]), labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()

    for i in range(len(LANGS)):
        assert torch.equal(outputs(model, ids, i), before[i]), LANGS[i]
    for key, value in untouched.items():
        assert torch.equal(model.state_dict()[key], value), key
    assert not torch.equal(outputs(model, ids, new_id), before[1])  # the new adapter did train


def test_shared_and_none_modes_only_extend_the_language_list():
    for mode in ("shared", "none"):
        model = XmodForMaskedLM(tiny(adapter_mode=mode)).eval()
        params = {n: p.clone() for n, p in model.named_parameters()}
        assert model.add_language("rm_CH") == 3
        assert {n for n, _ in model.named_parameters()} == set(params)
        with pytest.raises(ValueError, match="no per-language adapters"):
            model.add_language("lb_LU", init_from="de_DE")
        ids = torch.randint(3, 50, (2, 6))
        assert torch.equal(outputs(model, ids, 3), outputs(model, ids, 0))
        with pytest.warns(UserWarning, match="renumbered"):
            model.remove_languages(["en_XX"])
        assert model.config.languages == ["de_DE", "fr_XX", "rm_CH"]


def test_adapter_layers_subset_gets_new_adapters_only_where_adapters_live():
    model = XmodForMaskedLM(tiny(num_hidden_layers=3, adapter_layers=[0, 2]))
    model.add_language("rm_CH", init_from="fr_XX")
    holders = {i: list(out.adapter_modules) for i, out in adapter_outputs(model)}
    assert holders == {0: [*LANGS, "rm_CH"], 2: [*LANGS, "rm_CH"]}
    assert len(model.roberta.encoder.layer[1].output.adapter_modules) == 0
