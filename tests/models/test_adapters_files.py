"""Per-language adapter files: export a trained language, import it into a fresh copy of the base model."""

import copy
import json
from functools import partial

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tests.models.helpers import tiny_config
from xmod_lab.models import XmodForMaskedLM, XmodForSequenceClassification
from xmod_lab.models.adapter_files import (
    HEADER_KEY,
    load_language_adapter,
    read_language_adapter_header,
    save_language_adapter,
)
from xmod_lab.models.adapters import adapter_outputs
from xmod_lab.models.freezing import apply_freeze_policy

LANGS = ["en_XX", "de_DE"]


tiny = partial(tiny_config, vocab_size=50, num_attention_heads=2, languages=LANGS)


PRENORM = dict(
    pre_norm=True, adapter_layer_norm=True, adapter_reuse_layer_norm=False, ln_before_adapter=False
)


def logits(model, ids, lang: int) -> torch.Tensor:
    with torch.no_grad():
        return model(ids, lang_ids=torch.full((ids.shape[0],), lang)).logits


def test_exported_adapter_reproduces_the_trained_language_in_a_fresh_base_model(tmp_path):
    torch.manual_seed(0)
    base = XmodForMaskedLM(tiny()).eval()
    base.save_pretrained(tmp_path / "base")

    model = copy.deepcopy(base)
    new_id = model.add_language("rm_CH", init_from="de_DE")
    apply_freeze_policy(model, "adapters_only", languages=["rm_CH"])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(3):
        batch = torch.randint(3, 50, (4, 8))
        loss = model(batch, lang_ids=torch.full((4,), new_id), labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()

    path = save_language_adapter(model, "rm_CH", tmp_path / "rm_CH.safetensors")
    header = read_language_adapter_header(path)
    assert header["language"] == "rm_CH"
    assert (
        header["num_hidden_layers"] == 2 and header["hidden_size"] == 32 and header["bottleneck_size"] == 16
    )
    assert header["adapter_layers"] == [0, 1] and header["adapter_activation"] == "gelu"
    assert header["includes_adapter_layer_norm"] is False and header["format_version"] == 1
    with safe_open(str(path), framework="pt") as handle:
        assert sorted(handle.keys()) == sorted(
            f"layers.{i}.adapter.dense{d}.{w}" for i in range(2) for d in (1, 2) for w in ("weight", "bias")
        )

    fresh = XmodForMaskedLM.from_pretrained(tmp_path / "base")
    assert load_language_adapter(fresh, path) == "rm_CH"  # not there yet: added
    assert fresh.config.languages == ["en_XX", "de_DE", "rm_CH"]
    ids = torch.randint(3, 50, (3, 8))
    assert torch.equal(logits(fresh, ids, new_id), logits(model, ids, new_id))
    assert torch.equal(logits(fresh, ids, 0), logits(base, ids, 0))

    # Loading over an existing language replaces it; a file can also be loaded under another code.
    load_language_adapter(fresh, path, code="de_DE")
    assert torch.equal(logits(fresh, ids, 1), logits(model, ids, new_id))
    assert fresh.config.languages == ["en_XX", "de_DE", "rm_CH"]


def test_adapter_layer_norm_is_opt_in_on_both_sides(tmp_path):
    torch.manual_seed(0)
    model = XmodForSequenceClassification(tiny(**PRENORM)).eval()
    with torch.no_grad():
        for _, out in adapter_outputs(model):
            out.adapter_layer_norm.weight.add_(0.5)
    path = save_language_adapter(model, "de_DE", tmp_path / "de.safetensors", include_layer_norm=True)
    assert read_language_adapter_header(path)["includes_adapter_layer_norm"] is True

    torch.manual_seed(1)
    other = XmodForSequenceClassification(tiny(**PRENORM)).eval()
    original_ln = other.roberta.encoder.layer[0].output.adapter_layer_norm.weight.clone()
    load_language_adapter(other, path, code="rm_CH")
    assert torch.equal(other.roberta.encoder.layer[0].output.adapter_layer_norm.weight, original_ln)
    load_language_adapter(other, path, code="rm_CH", load_layer_norm=True)
    assert torch.equal(
        other.roberta.encoder.layer[0].output.adapter_layer_norm.weight,
        model.roberta.encoder.layer[0].output.adapter_layer_norm.weight,
    )

    plain = save_language_adapter(model, "de_DE", tmp_path / "plain.safetensors")
    with pytest.raises(ValueError, match="holds no adapter LayerNorm"):
        load_language_adapter(other, plain, load_layer_norm=True)
    post_norm = XmodForMaskedLM(tiny())
    with pytest.raises(ValueError, match="has no adapter_layer_norm"):
        save_language_adapter(post_norm, "de_DE", tmp_path / "x.safetensors", include_layer_norm=True)


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(hidden_size=16), "hidden_size"),
        (dict(num_hidden_layers=3), "num_hidden_layers"),
        (dict(adapter_reduction_factor=4), "bottleneck_size"),
        (dict(adapter_layers=[1]), "adapter_layers"),
        (dict(adapter_activation="relu"), "adapter_activation"),
        (dict(ln_before_adapter=False), "ln_before_adapter"),
        (PRENORM, "pre_norm"),
    ],
)
def test_loading_into_another_architecture_names_the_mismatch(tmp_path, overrides, field):
    path = save_language_adapter(XmodForMaskedLM(tiny()), "de_DE", tmp_path / "de.safetensors")
    other = XmodForMaskedLM(tiny(**overrides))
    with pytest.raises(ValueError, match=rf"does not fit this model: .*{field}: file"):
        load_language_adapter(other, path)
    assert other.config.languages == LANGS


def test_bad_files_and_modes_are_refused_without_touching_the_model(tmp_path):
    model = XmodForMaskedLM(tiny())
    path = save_language_adapter(model, "de_DE", tmp_path / "de.safetensors")
    with safe_open(str(path), framework="pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
        metadata = handle.metadata()
    truncated = dict(tensors)
    truncated.pop("layers.1.adapter.dense2.bias")
    save_file(truncated, str(tmp_path / "truncated.safetensors"), metadata=metadata)
    with pytest.raises(ValueError, match=r"missing \['layers.1.adapter.dense2.bias'\]"):
        load_language_adapter(model, tmp_path / "truncated.safetensors", code="rm_CH")
    assert model.config.languages == LANGS

    save_file(tensors, str(tmp_path / "bare.safetensors"))
    with pytest.raises(ValueError, match="not an xmod-lab language adapter"):
        load_language_adapter(model, tmp_path / "bare.safetensors")
    header = json.loads(metadata[HEADER_KEY])
    header["format_version"] = 99
    save_file(tensors, str(tmp_path / "future.safetensors"), metadata={HEADER_KEY: json.dumps(header)})
    with pytest.raises(ValueError, match="format_version 99"):
        load_language_adapter(model, tmp_path / "future.safetensors")

    with pytest.raises(ValueError, match="unknown language"):
        save_language_adapter(model, "fi_FI", tmp_path / "fi.safetensors")
    shared = XmodForMaskedLM(tiny(adapter_mode="shared"))
    with pytest.raises(ValueError, match="adapter_mode='shared' has no per-language adapters"):
        save_language_adapter(shared, "de_DE", tmp_path / "s.safetensors")
    with pytest.raises(ValueError, match="adapter_mode='shared'"):
        load_language_adapter(shared, path)


def test_adapter_layers_subset_round_trip(tmp_path):
    torch.manual_seed(0)
    model = XmodForMaskedLM(
        tiny(num_hidden_layers=3, adapter_layers=[0, 2], adapter_reduction_factor=1.5)
    ).eval()
    path = save_language_adapter(model, "de_DE", tmp_path / "de.safetensors")
    header = read_language_adapter_header(path)
    assert header["adapter_layers"] == [0, 2] and header["bottleneck_size"] == 21
    torch.manual_seed(1)
    other = XmodForMaskedLM(model.config.copy()).eval()
    load_language_adapter(other, path, code="de_DE")
    for i in (0, 2):
        for a, b in zip(
            model.roberta.encoder.layer[i].output.adapter_modules["de_DE"].parameters(),
            other.roberta.encoder.layer[i].output.adapter_modules["de_DE"].parameters(),
            strict=True,
        ):
            assert torch.equal(a, b)
