"""The ablation space (adapter_mode, float reduction factor, adapter layers, adapter activation):
each variant trains a step and survives save/load; files say whether transformers can load them."""

import json
import re
import warnings
from functools import partial

import pytest
import torch

from tests.models.helpers import tiny_config
from xmod_lab.models import XmodForMaskedLM
from xmod_lab.models.configuration import TRANSFORMERS_NOTE_KEY, transformers_incompatibilities

LANGS = ["en_XX", "de_DE"]


tiny = partial(tiny_config, vocab_size=50, num_attention_heads=2, type_vocab_size=1, languages=LANGS)


def adapter_param_names(model) -> set[str]:
    return {n for n, _ in model.named_parameters() if ".adapter_modules." in n}


def expected_adapters(layers, keys, bottleneck=16) -> set[str]:
    return {
        f"roberta.encoder.layer.{i}.output.adapter_modules.{k}.dense{d}.{w}"
        for i in layers
        for k in keys
        for d in (1, 2)
        for w in ("weight", "bias")
    }


VARIANTS = {
    "modular": (dict(), expected_adapters([0, 1], LANGS)),
    "shared": (dict(adapter_mode="shared"), expected_adapters([0, 1], ["shared"])),
    "none": (dict(adapter_mode="none"), set()),
    "float_factor": (dict(adapter_reduction_factor=2.5), expected_adapters([0, 1], LANGS)),
    "layer_subset": (dict(adapter_layers=[1]), expected_adapters([1], LANGS)),
    "relu_adapters": (dict(adapter_activation="relu"), expected_adapters([0, 1], LANGS)),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_each_variant_trains_a_step_and_round_trips(tmp_path, name):
    overrides, adapters = VARIANTS[name]
    torch.manual_seed(0)
    model = XmodForMaskedLM(tiny(**overrides))
    assert adapter_param_names(model) == adapters
    if name == "float_factor":
        assert (
            model.roberta.encoder.layer[0].output.adapter_modules["en_XX"].dense1.out_features == 13
        )  # round(32/2.5)

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    batch = torch.randint(3, 50, (4, 8))
    model.train()
    loss = model(batch, lang_ids=torch.tensor([0, 1, 0, 1]), labels=batch).loss
    assert torch.isfinite(loss)
    loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert adapters <= with_grad  # every adapter of the variant is on the computation path
    optimizer.step()
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters() if n in adapters)

    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the transformers-compatibility warning is tested below
        model.save_pretrained(tmp_path)
    loaded = XmodForMaskedLM.from_pretrained(tmp_path)
    for key in ("adapter_mode", "adapter_layers", "adapter_activation", "adapter_reduction_factor"):
        assert getattr(loaded.config, key) == getattr(model.config, key)
    ids = torch.randint(3, 50, (2, 8))
    for lang in (0, 1):
        lang_ids = torch.full((2,), lang)
        assert torch.equal(loaded(ids, lang_ids=lang_ids).logits, model(ids, lang_ids=lang_ids).logits)
    if name in ("shared", "none"):  # one path for every language
        assert torch.equal(
            model(ids, lang_ids=torch.zeros(2, dtype=torch.long)).logits,
            model(ids, lang_ids=torch.ones(2, dtype=torch.long)).logits,
        )


def test_default_fields_load_in_transformers_with_identical_outputs(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = XmodForMaskedLM(tiny()).eval()
    assert transformers_incompatibilities(model.config) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no compatibility warning at the defaults
        model.save_pretrained(tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    assert TRANSFORMERS_NOTE_KEY not in written
    assert written["adapter_mode"] == "modular" and written["adapter_layers"] is None

    theirs, info = transformers.XmodForMaskedLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    ids = torch.randint(3, 50, (2, 8))
    lang_ids = torch.tensor([1, 0])
    with torch.no_grad():
        torch.testing.assert_close(
            theirs.eval()(ids, lang_ids=lang_ids).logits,
            model(ids, lang_ids=lang_ids).logits,
            rtol=1e-5,
            atol=1e-5,
        )


@pytest.mark.parametrize(
    "overrides, reason",
    [
        (dict(adapter_reduction_factor=2.5), "is a float"),
        (dict(adapter_reduction_factor=2.0), "use the int 2"),
        (dict(adapter_mode="shared"), "adapter_mode='shared'"),
        (dict(adapter_mode="none"), "adapter_mode='none'"),
        (dict(adapter_layers=[1]), r"adapter_layers=\[1\]"),
        (dict(adapter_activation="relu"), "adapter_activation='relu'"),
    ],
)
def test_non_default_fields_warn_and_are_recorded_in_config_json(tmp_path, overrides, reason):
    model = XmodForMaskedLM(tiny(**overrides))
    with pytest.warns(UserWarning, match=reason):
        model.save_pretrained(tmp_path)
    note = json.loads((tmp_path / "config.json").read_text())[TRANSFORMERS_NOTE_KEY]
    assert len(note) == 1 and re.search(reason, note[0])
    # Our own loading is unaffected, and a compatible re-save drops the stale note.
    loaded = XmodForMaskedLM.from_pretrained(tmp_path)
    for key, value in overrides.items():
        assert getattr(loaded.config, key) == value


def test_compatible_resave_drops_the_note_and_explicit_defaults_count_as_defaults(tmp_path):
    assert transformers_incompatibilities(tiny(adapter_layers=[0, 1], adapter_activation="gelu")) == []
    model = XmodForMaskedLM(tiny(adapter_activation="relu"))
    with pytest.warns(UserWarning):
        model.save_pretrained(tmp_path)
    loaded = XmodForMaskedLM.from_pretrained(tmp_path)
    loaded.config.adapter_activation = None  # e.g. a user normalising the config before export
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded.save_pretrained(tmp_path / "again")
    assert TRANSFORMERS_NOTE_KEY not in json.loads((tmp_path / "again" / "config.json").read_text())


def test_transformers_would_silently_differ_on_a_non_default_activation(tmp_path):
    """Why the warning exists: transformers loads the file without error but runs another model."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = XmodForMaskedLM(tiny(adapter_activation="relu")).eval()
    with pytest.warns(UserWarning, match="adapter_activation"):
        model.save_pretrained(tmp_path)
    theirs = transformers.XmodForMaskedLM.from_pretrained(tmp_path).eval()
    ids = torch.randint(3, 50, (2, 8))
    lang_ids = torch.tensor([0, 1])
    with torch.no_grad():
        assert not torch.allclose(
            theirs(ids, lang_ids=lang_ids).logits, model(ids, lang_ids=lang_ids).logits, atol=1e-4
        )
