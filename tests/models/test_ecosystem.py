"""The Hugging Face ecosystem on our classes: pipelines, Trainer, PEFT, resizing, the hub, version range.

Each test checks a result against our own forward, not only that the call runs.
"""

from __future__ import annotations

import pytest
import torch
import transformers
from transformers import PreTrainedModel, pipeline

import xmod_lab.models as xm
from tests.models.helpers import LANGS, max_diff, tiny_config
from xmod_lab.data.tokenizer import train_tokenizer
from xmod_lab.models._versions import check_transformers_version, supported_transformers_range

TEXTS = [
    "the cat sat on the mat and looked at the dog",
    "a dog ran in the park with a red ball",
    "where is the cat? the cat is on the mat",
    "the weather is nice today in the park",
    "birds sing in the trees near the river",
] * 20


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS, vocab_size=99)


def _model(cls, tokenizer, **overrides):
    torch.manual_seed(0)
    config = tiny_config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **overrides)
    model = cls(config).eval()
    model.set_default_language("de_DE")
    return model


def _encode(tokenizer, *texts):
    return tokenizer(list(texts), return_tensors="pt", padding=True)


def test_fill_mask_pipeline(tokenizer):
    model = _model(xm.XmodForMaskedLM, tokenizer)
    text = f"the cat sat on the {tokenizer.mask_token}"
    result = pipeline("fill-mask", model=model, tokenizer=tokenizer, top_k=3)(text)
    enc = _encode(tokenizer, text)
    logits = model(**enc).logits[0, (enc["input_ids"][0] == tokenizer.mask_token_id).nonzero()[0, 0]]
    assert [r["token"] for r in result] == logits.topk(3).indices.tolist()


def test_text_and_token_classification_pipelines(tokenizer):
    seq = _model(xm.XmodForSequenceClassification, tokenizer)
    text = "the dog ran in the park"
    probs = seq(**_encode(tokenizer, text)).logits.softmax(-1)[0]
    result = pipeline("text-classification", model=seq, tokenizer=tokenizer)(text)[0]
    assert result["label"] == f"LABEL_{int(probs.argmax())}" and abs(result["score"] - probs.max().item()) < 1e-5

    tok = _model(xm.XmodForTokenClassification, tokenizer)
    entities = pipeline("token-classification", model=tok, tokenizer=tokenizer)(text)
    enc = _encode(tokenizer, text)
    probs = tok(**enc).logits.softmax(-1)[0]
    for entity in entities:
        assert abs(entity["score"] - probs[entity["index"]].max().item()) < 1e-5


def test_question_answering_pipeline_is_gone_from_transformers(tokenizer):
    # transformers 5.24 removed this task; XmodForQuestionAnswering's span logits are tested in test_parity.
    model = _model(xm.XmodForQuestionAnswering, tokenizer, num_labels=2)
    with pytest.raises(KeyError, match="question-answering has been removed"):
        pipeline("question-answering", model=model, tokenizer=tokenizer)


def test_text_generation_pipeline_uses_the_default_language(tokenizer):
    model = _model(xm.XmodForCausalLM, tokenizer, is_decoder=True, eos_token_id=None)
    text = "the cat sat"
    out = pipeline("text-generation", model=model, tokenizer=tokenizer)(
        text, max_new_tokens=4, do_sample=False, return_tensors=True
    )
    ids = torch.tensor([out[0]["generated_token_ids"]])
    prompt_len = _encode(tokenizer, text)["input_ids"].shape[1]
    assert ids.shape[1] == prompt_len + 4
    logits = model(ids, lang_ids=LANGS.index("de_DE")).logits
    assert torch.equal(logits[:, prompt_len - 1 : -1].argmax(-1), ids[:, prompt_len:])


def test_trainer_two_steps_with_lang_ids(tmp_path):
    torch.manual_seed(0)
    model = xm.XmodForSequenceClassification(tiny_config())
    model.freeze_embeddings_and_language_adapters()
    rows = [
        {"input_ids": torch.randint(3, 99, (8,)), "lang_ids": torch.tensor(i % 4), "labels": torch.tensor(i % 3)}
        for i in range(8)
    ]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-2,
        report_to=[], use_cpu=True, save_strategy="no", logging_steps=1,
    )  # fmt: skip
    trainer = transformers.Trainer(model=model, args=args, train_dataset=rows)
    result = trainer.train()
    assert result.global_step == 2 and torch.isfinite(torch.tensor(result.training_loss))
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert "classifier.out_proj.weight" in changed
    assert not any("adapter_modules" in n or "embeddings" in n for n in changed)  # frozen by the paper's policy


def test_peft_lora_trains_only_lora_and_merges(tmp_path):
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    model = xm.XmodForSequenceClassification(tiny_config())
    ids = torch.randint(3, 99, (4, 8))
    lang = torch.tensor([0, 1, 2, 3])
    lora = peft.get_peft_model(
        model, peft.LoraConfig(r=4, target_modules=["query", "value"], modules_to_save=["classifier"])
    )
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "classifier" in n for n in trainable)
    with torch.no_grad():
        for n, p in lora.named_parameters():
            if "lora_B" in n:
                p.normal_()
    out = lora(input_ids=ids, lang_ids=lang).logits
    merged = lora.merge_and_unload()
    assert isinstance(merged, xm.XmodForSequenceClassification)
    assert max_diff(merged(ids, lang_ids=lang).logits, out) <= 1e-5


def test_resize_token_embeddings_num_parameters_and_tying():
    torch.manual_seed(0)
    model = xm.XmodForMaskedLM(tiny_config()).eval()
    ids = torch.randint(3, 99, (2, 6))
    before = model(ids, lang_ids=0).logits
    total, no_embed = model.num_parameters(), model.num_parameters(exclude_embeddings=True)
    assert total - no_embed == 99 * 32 + 40 * 32 + 2 * 32  # word, position, token type embeddings
    model.resize_token_embeddings(128, pad_to_multiple_of=64)
    assert model.config.vocab_size == 128 and model.lm_head.decoder.weight.shape == (128, 32)
    assert model.lm_head.decoder.weight is model.roberta.embeddings.word_embeddings.weight
    assert max_diff(model(ids, lang_ids=0).logits[..., :99], before) <= 1e-6
    model.tie_weights()
    assert model.lm_head.decoder.bias is model.lm_head.bias


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = xm.XmodForMaskedLM(tiny_config()).train()
    ids, lang = torch.randint(3, 99, (4, 8)), torch.tensor([0, 1, 2, 3])

    def grads():
        model.zero_grad()
        model(ids, lang_ids=lang, labels=ids).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    model.gradient_checkpointing_enable()
    assert model.is_gradient_checkpointing and all(layer.gradient_checkpointing for layer in model.roberta.encoder.layer)
    ckpt = grads()
    assert plain.keys() == ckpt.keys() and max(max_diff(plain[n], ckpt[n]) for n in plain) <= 1e-6


def test_push_to_hub_is_transformers_and_auto_classes_build_ours():
    assert xm.XmodForMaskedLM.push_to_hub is PreTrainedModel.push_to_hub
    assert xm.XmodConfig.push_to_hub is transformers.PretrainedConfig.push_to_hub
    assert type(transformers.AutoModel.from_config(tiny_config())) is xm.XmodModel
    head = transformers.AutoModelForTokenClassification.from_config(tiny_config(num_labels=5))
    assert type(head) is xm.XmodForTokenClassification and head.classifier.out_features == 5
    theirs = transformers.AutoModel.from_config(transformers.XmodConfig())  # theirs still builds theirs
    assert type(theirs) is transformers.XmodModel


def test_transformers_version_range_is_checked_at_import():
    supported = supported_transformers_range()
    assert supported is not None and "<6" in supported
    check_transformers_version(transformers.__version__)  # the installed one is supported
    with pytest.raises(ImportError, match=rf"transformers{supported}.*found transformers 4\.37\.2"):
        check_transformers_version("4.37.2")
    with pytest.raises(ImportError, match="found transformers 6.0.0"):
        check_transformers_version("6.0.0")


def test_push_to_hub_uploads_files_that_load_back(tmp_path, monkeypatch):
    """transformers' push_to_hub with the hub API replaced by a local folder: what it uploads loads back."""
    import huggingface_hub
    import transformers.utils.hub as hub

    remote = tmp_path / "remote"

    class LocalHub:
        def create_repo(self, repo_id, **kwargs):
            return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

        def create_branch(self, **kwargs):
            pass

        def create_commit(self, repo_id, operations, **kwargs):
            for op in operations:
                target = remote / op.path_in_repo
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(open(op.path_or_fileobj, "rb").read())
            return "committed"

    monkeypatch.setattr(hub, "hf_api", LocalHub)
    monkeypatch.setattr(hub, "create_and_tag_model_card", lambda *a, **k: huggingface_hub.ModelCard("card"))
    torch.manual_seed(0)
    model = xm.XmodForTokenClassification(tiny_config(adapter_activation="relu")).eval()
    with pytest.warns(UserWarning, match="adapter_activation"):  # our save_pretrained runs inside push_to_hub
        assert model.push_to_hub("someone/xmod-tiny") == "committed"
    assert {"config.json", "model.safetensors"} <= {p.name for p in remote.iterdir()}
    loaded = xm.XmodForTokenClassification.from_pretrained(remote)
    ids = torch.randint(3, 99, (2, 7))
    assert torch.equal(loaded(ids, lang_ids=1).logits, model(ids, lang_ids=1).logits)


def test_prune_heads_equals_masking_them_and_round_trips(tmp_path):
    torch.manual_seed(0)
    model = xm.XmodForMaskedLM(tiny_config()).eval()
    ids, lang = torch.randint(3, 99, (3, 8)), torch.tensor([0, 2, 3])
    head_mask = torch.ones(2, 4)
    head_mask[0, [0, 2]] = 0
    head_mask[1, 3] = 0
    masked = model(ids, lang_ids=lang, head_mask=head_mask).logits
    before = model.num_parameters()
    model.prune_heads({0: [0, 2]})
    model.prune_heads({1: [3], 0: [2]})  # pruning a pruned head again is a no-op
    assert model.config.pruned_heads == {0: [0, 2], 1: [3]}
    assert model.num_parameters() == before - 3 * (3 * (8 * 32 + 8) + 32 * 8)  # per head: q, k, v rows, Wo columns
    assert max_diff(model(ids, lang_ids=lang).logits, masked) <= 1e-5
    with pytest.warns(UserWarning, match="pruned_heads"):
        model.save_pretrained(tmp_path)
    loaded = xm.XmodForMaskedLM.from_pretrained(tmp_path)
    assert loaded.roberta.encoder.layer[0].attention.self.num_heads == 2
    assert torch.equal(loaded(ids, lang_ids=lang).logits, model(ids, lang_ids=lang).logits)
    with pytest.raises(ValueError, match="every head of layer 1"):
        model.prune_heads({1: [0, 1, 2]})
    with pytest.raises(ValueError, match="cannot be combined with pruned heads"):
        model(ids, lang_ids=lang, head_mask=head_mask)
