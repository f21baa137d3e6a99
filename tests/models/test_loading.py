"""Checkpoint IO through transformers' from_pretrained/save_pretrained: our files load in transformers and
back, hub-file quirks, hub ids, dtype/device_map, and our key checks before any weight is copied."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import xmod_lab.models as xm
from tests.models.helpers import at_real, hf_config, max_diff, tiny_config, token_batch

LANG_IDS = torch.tensor([0, 1, 0, 3])


def _ids():
    return token_batch()


@pytest.mark.parametrize(
    "head",
    [
        "XmodModel",
        "XmodForMaskedLM",
        "XmodForCausalLM",
        "XmodForSequenceClassification",
        "XmodForTokenClassification",
        "XmodForQuestionAnswering",
        "XmodForMultipleChoice",
    ],
)
def test_transformers_loads_our_files_with_identical_outputs(tmp_path, head):
    import transformers

    pre_norm = head in ("XmodForSequenceClassification", "XmodForCausalLM")
    config = tiny_config(
        num_labels=2, pre_norm=pre_norm, adapter_layer_norm=pre_norm, is_decoder=head == "XmodForCausalLM"
    )
    torch.manual_seed(0)
    ours = getattr(xm, head)(config).eval()
    ours.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "xmod" and saved["architectures"] == [head]
    theirs = getattr(transformers, head).from_pretrained(tmp_path, attn_implementation="eager").eval()
    ids, mask = _ids()
    lang_ids = LANG_IDS
    if head == "XmodForMultipleChoice":  # (B, C, T); transformers only takes a one-element lang_ids here
        ids, mask, lang_ids = ids.view(2, 2, -1), mask.view(2, 2, -1), torch.tensor([3])
    a = ours(ids, attention_mask=mask, lang_ids=lang_ids)
    b = theirs(ids, attention_mask=mask, lang_ids=lang_ids)
    # Compare the tensors both return; the KV cache is a version-specific object (and its field was
    # renamed between transformers 5 releases), checked by behaviour in test_generation instead.
    tensors_a = {k: v for k, v in a.items() if isinstance(v, torch.Tensor)}
    tensors_b = {k: v for k, v in b.items() if isinstance(v, torch.Tensor)}
    assert tensors_a.keys() == tensors_b.keys() and tensors_a
    for key in tensors_a:
        assert max_diff(at_real(tensors_a[key], mask), at_real(tensors_b[key], mask)) <= 1e-6, key
    assert theirs.config.languages == config.languages


def test_we_load_transformers_files_with_identical_outputs(tmp_path):
    import transformers

    hf = transformers.XmodForMaskedLM(hf_config(tiny_config())).eval()
    hf.save_pretrained(tmp_path)
    ours = xm.XmodForMaskedLM.from_pretrained(tmp_path)
    assert not ours.training
    assert ours.lm_head.decoder.weight is ours.roberta.embeddings.word_embeddings.weight
    ids, mask = _ids()
    assert max_diff(ours(ids, lang_ids=LANG_IDS).logits, hf(ids, lang_ids=LANG_IDS).logits) <= 1e-6


def _hub_style_checkpoint(tmp_path, config):
    """A file shaped like facebook/xmod-base: position_ids buffer, no decoder keys, no pooler, .bin."""
    torch.manual_seed(1)
    source = xm.XmodForMaskedLM(config).eval()
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("lm_head.decoder.")}
    state["roberta.embeddings.position_ids"] = torch.arange(config.max_position_embeddings)[None]
    torch.save(state, tmp_path / "pytorch_model.bin")
    cfg = config.to_dict()
    cfg["architectures"] = ["XmodForMaskedLM"]
    cfg["transformers_version"] = "4.27.0.dev0"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    return source


def test_hub_file_quirks(tmp_path, caplog):
    config = tiny_config()
    source = _hub_style_checkpoint(tmp_path, config)
    ids, _ = _ids()
    mlm = xm.XmodForMaskedLM.from_pretrained(tmp_path)
    assert torch.equal(mlm(ids, lang_ids=LANG_IDS).logits, source(ids, lang_ids=LANG_IDS).logits)

    bare, bare_info = xm.XmodModel.from_pretrained(tmp_path, output_loading_info=True)
    cls, cls_info = xm.XmodForSequenceClassification.from_pretrained(
        tmp_path, num_labels=3, output_loading_info=True
    )
    assert "pooler.dense.weight" in bare_info["missing_keys"]  # new, initialised
    assert any(k.startswith("lm_head.dense") for k in bare_info["unexpected_keys"])  # dropped
    assert "classifier.out_proj.weight" in cls_info["missing_keys"]
    assert torch.equal(
        bare.embeddings.word_embeddings.weight, source.roberta.embeddings.word_embeddings.weight
    )
    assert cls.config.num_labels == 3 and cls.classifier.out_proj.weight.shape == (3, 32)
    assert cls.classifier.out_proj.weight.abs().sum() > 0  # newly initialised, not left empty
    hidden = bare(ids, lang_ids=LANG_IDS).last_hidden_state
    assert torch.equal(hidden, source.roberta(ids, lang_ids=LANG_IDS).last_hidden_state)


def test_bare_model_file_into_head_class_and_back(tmp_path):
    config = tiny_config()
    torch.manual_seed(0)
    bare = xm.XmodModel(config).eval()
    bare.save_pretrained(tmp_path / "bare")
    assert "embeddings.word_embeddings.weight" in load_file(tmp_path / "bare" / "model.safetensors")
    head = xm.XmodForMultipleChoice.from_pretrained(tmp_path / "bare")  # uses the pooler too
    assert torch.equal(head.roberta.pooler.dense.weight, bare.pooler.dense.weight)
    head.save_pretrained(tmp_path / "head")
    back = xm.XmodModel.from_pretrained(tmp_path / "head")
    ids, _ = _ids()
    assert torch.equal(back(ids, lang_ids=LANG_IDS).pooler_output, bare(ids, lang_ids=LANG_IDS).pooler_output)


def test_mismatched_checkpoint_raises_naming_keys(tmp_path):
    config = tiny_config()
    xm.XmodForMaskedLM(config).save_pretrained(tmp_path)
    with pytest.raises(
        ValueError, match=r"adapter_modules\.en_XX\.dense1\.weight: checkpoint \(16, 32\) vs model \(8, 32\)"
    ):
        xm.XmodForMaskedLM.from_pretrained(tmp_path, adapter_reduction_factor=4)
    with pytest.raises(ValueError, match=r"not in the model: \[.*adapter_modules\.sw_KE"):
        xm.XmodForMaskedLM.from_pretrained(tmp_path, languages=["en_XX", "de_DE", "fr_XX"])
    with pytest.raises(ValueError, match=r"missing from the checkpoint: \[.*adapter_modules\.it_IT"):
        xm.XmodForMaskedLM.from_pretrained(tmp_path, languages=[*config.languages, "it_IT"])


def test_head_size_mismatch_needs_opt_in(tmp_path):
    xm.XmodForSequenceClassification(tiny_config(num_labels=3)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="ignore_mismatched_sizes=True"):
        xm.XmodForSequenceClassification.from_pretrained(tmp_path, num_labels=5)
    model = xm.XmodForSequenceClassification.from_pretrained(
        tmp_path, num_labels=5, ignore_mismatched_sizes=True
    )
    assert model.classifier.out_proj.weight.shape == (5, 32)


def test_hub_id_is_resolved_by_transformers(tmp_path, monkeypatch):
    """A hub id goes through transformers' own file resolution (cached_file), then our checks."""
    import transformers.utils.hub as hub

    xm.XmodForMaskedLM(tiny_config()).save_pretrained(tmp_path)
    asked = []
    real = hub.cached_files

    def local_cached_files(path_or_repo_id, filenames, **kwargs):
        asked.append(path_or_repo_id)
        return real(str(tmp_path), filenames, **kwargs)

    monkeypatch.setattr(hub, "cached_files", local_cached_files)
    model = xm.XmodForMaskedLM.from_pretrained("facebook/xmod-base")
    assert "facebook/xmod-base" in asked and model.config.languages == tiny_config().languages


def test_hub_failure_is_explained(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="cached files"):
        xm.XmodModel.from_pretrained("facebook/xmod-lab-no-such-model")
    with pytest.raises(OSError, match="no/such/dir"):
        xm.XmodModel.from_pretrained("./no/such/dir")


def test_sharded_safetensors(tmp_path):
    torch.manual_seed(0)
    model = xm.XmodForTokenClassification(tiny_config()).eval()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    keys = sorted(state)
    halves = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    weight_map = {}
    for shard, shard_keys in halves.items():
        save_file({k: state[k] for k in shard_keys}, tmp_path / shard)
        weight_map.update(dict.fromkeys(shard_keys, shard))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    model.config.save_pretrained(tmp_path)
    loaded = xm.XmodForTokenClassification.from_pretrained(tmp_path)
    ids, _ = _ids()
    assert torch.equal(loaded(ids, lang_ids=LANG_IDS).logits, model(ids, lang_ids=LANG_IDS).logits)


def test_dtype_device_map_and_config_overrides(tmp_path):
    torch.manual_seed(0)
    source = xm.XmodForMaskedLM(tiny_config()).eval()
    source.save_pretrained(tmp_path)
    model = xm.XmodForMaskedLM.from_pretrained(tmp_path, dtype=torch.bfloat16, default_language="de_DE")
    assert model.dtype == torch.bfloat16 and model.config.default_language == "de_DE"
    ids, _ = _ids()
    logits = model(ids).logits
    assert logits.dtype == torch.bfloat16
    expected = source(ids, lang_ids=source.config.lang_id("de_DE")).logits
    assert 0 < max_diff(logits, expected) < 0.1  # bf16 weights, same model
    mapped = xm.XmodForMaskedLM.from_pretrained(tmp_path, device_map="cpu")
    assert mapped.device.type == "cpu" and max_diff(mapped(ids, lang_ids=LANG_IDS).logits, source(ids, lang_ids=LANG_IDS).logits) == 0


def test_untied_decoder_round_trip(tmp_path):
    config = tiny_config(tie_word_embeddings=False)
    torch.manual_seed(0)
    model = xm.XmodForMaskedLM(config)
    with torch.no_grad():
        model.lm_head.decoder.weight.add_(1.0)
    model.save_pretrained(tmp_path)
    assert "lm_head.decoder.weight" in load_file(tmp_path / "model.safetensors")
    loaded = xm.XmodForMaskedLM.from_pretrained(tmp_path)
    assert torch.equal(loaded.lm_head.decoder.weight, model.lm_head.decoder.weight)
    assert loaded.lm_head.decoder.weight is not loaded.roberta.embeddings.word_embeddings.weight


def test_save_excludes_tied_duplicates(tmp_path):
    xm.XmodForCausalLM(tiny_config(is_decoder=True)).save_pretrained(tmp_path)
    keys = set(load_file(tmp_path / "model.safetensors"))
    assert "lm_head.decoder.weight" not in keys and "roberta.embeddings.word_embeddings.weight" in keys
    assert ("lm_head.bias" in keys) != ("lm_head.decoder.bias" in keys)  # one copy of the shared bias
