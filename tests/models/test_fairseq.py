"""fairseq X-MOD conversion, without fairseq.

A reference xmod-lab model is written out in fairseq's layout (the inverse mapping below, from
fairseq's models/xmod and roberta module names). Two checks keep this from being circular: an
independent re-implementation of fairseq's X-MOD forward pass (transformer_layer_xmod.py
semantics) run directly on the fairseq tensors must reproduce the reference outputs, and the
converted checkpoint must reproduce them too.
"""

import argparse
import runpy
import sys
import types
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests.models.helpers import tiny_config
from xmod_lab.models import XmodConfig, XmodForMaskedLM, XmodForSequenceClassification
from xmod_lab.tools.fairseq import (
    convert_fairseq_checkpoint,
    convert_fairseq_state_dict,
    fairseq_model_args,
    load_fairseq_checkpoint,
)

REPO = Path(__file__).resolve().parents[2]
LANGS = ["en_XX", "de_DE", "fr_XX"]
P = "encoder.sentence_encoder."
POST_NORM = dict(
    pre_norm=False, adapter_layer_norm=False, adapter_reuse_layer_norm=True, ln_before_adapter=True
)
PRE_NORM = dict(
    pre_norm=True, adapter_layer_norm=True, adapter_reuse_layer_norm=False, ln_before_adapter=False,
    adapter_reduction_factor=4,
)  # fmt: skip


tiny = partial(tiny_config, vocab_size=60, max_position_embeddings=34, type_vocab_size=1, languages=LANGS)


def reference(cls=XmodForMaskedLM, **overrides):
    torch.manual_seed(0)
    model = cls(tiny(**overrides)).eval()
    with torch.no_grad():  # non-trivial LayerNorms and biases so that a swapped tensor shows
        for name, param in model.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name or name.endswith("bias"):
                param.add_(torch.randn_like(param) * 0.1)
        model.roberta.embeddings.token_type_embeddings.weight.zero_()  # fairseq has none
    return model


# ------------------------------------------------------------------------- inverse mapping (test only)
def to_fairseq(model, head: str | None = None, old_style: bool = False) -> dict[str, torch.Tensor]:
    cfg = model.config
    ours = model.state_dict()
    out = {
        P + "embed_tokens.weight": ours["roberta.embeddings.word_embeddings.weight"],
        P + "embed_positions.weight": ours["roberta.embeddings.position_embeddings.weight"],
        P + "layernorm_embedding.weight": ours["roberta.embeddings.LayerNorm.weight"],
        P + "layernorm_embedding.bias": ours["roberta.embeddings.LayerNorm.bias"],
        P + "version": torch.tensor([3.0]),
    }
    names = {
        "attention.self.query": "self_attn.q_proj",
        "attention.self.key": "self_attn.k_proj",
        "attention.self.value": "self_attn.v_proj",
        "attention.output.dense": "self_attn.out_proj",
        "attention.output.LayerNorm": "self_attn_layer_norm",
        "intermediate.dense": "fc1",
        "output.dense": "fc2",
        "output.LayerNorm": "final_layer_norm",
        "output.adapter_layer_norm": "adapter_layer_norm",
    }
    for i in range(cfg.num_hidden_layers):
        ours_p, theirs_p = f"roberta.encoder.layer.{i}.", f"{P}layers.{i}."
        for src, dst in names.items():
            for w in ("weight", "bias"):
                if ours_p + f"{src}.{w}" in ours:
                    out[theirs_p + f"{dst}.{w}"] = ours[ours_p + f"{src}.{w}"]
        for code in cfg.adapter_keys:
            for d in (1, 2):
                for w in ("weight", "bias"):
                    out[f"{theirs_p}adapter_modules.{code}.fc{d}.{w}"] = ours[
                        f"{ours_p}output.adapter_modules.{code}.dense{d}.{w}"
                    ]
    if cfg.pre_norm:
        out[P + "layer_norm.weight"] = ours["roberta.encoder.LayerNorm.weight"]
        out[P + "layer_norm.bias"] = ours["roberta.encoder.LayerNorm.bias"]
    if head is None:
        for m in ("dense", "layer_norm"):
            for w in ("weight", "bias"):
                out[f"encoder.lm_head.{m}.{w}"] = ours[f"lm_head.{m}.{w}"]
        out["encoder.lm_head.weight"] = ours["lm_head.decoder.weight"]
        out["encoder.lm_head.bias"] = ours["lm_head.bias"]
    else:
        for m in ("dense", "out_proj"):
            for w in ("weight", "bias"):
                out[f"classification_heads.{head}.{m}.{w}"] = ours[f"classifier.{m}.{w}"]
        # A fine-tuned fairseq model keeps its LM head; another task's head may be there too.
        out["encoder.lm_head.bias"] = torch.zeros(cfg.vocab_size)
        out["classification_heads.other.out_proj.weight"] = torch.zeros(2, cfg.hidden_size)
    if old_style:  # RoBERTa-era names: decoder. prefix, fused q/k/v, numbered layer norms
        renamed = {}
        for key, value in out.items():
            key = key.replace(P + "layernorm_embedding.", P + "emb_layer_norm.")
            key = key.replace(".self_attn_layer_norm.", ".layer_norms.0.").replace(
                ".final_layer_norm.", ".layer_norms.1."
            )
            renamed["decoder." + key.removeprefix("encoder.") if key.startswith("encoder.") else key] = value
        out = {}
        for key, value in renamed.items():
            if ".self_attn.q_proj." in key:
                kind = key.rsplit(".", 1)[1]
                stem = key.split(".self_attn.")[0] + ".self_attn."
                out[f"{stem}in_proj_{kind}"] = torch.cat([renamed[f"{stem}{n}_proj.{kind}"] for n in "qkv"])
            elif ".self_attn.k_proj." not in key and ".self_attn.v_proj." not in key:
                out[key] = value
    return {k: v.clone() for k, v in out.items()}


def fairseq_args(cfg: XmodConfig) -> dict:
    return dict(
        arch="xmod_base",
        encoder_layers=cfg.num_hidden_layers,
        encoder_embed_dim=cfg.hidden_size,
        encoder_ffn_embed_dim=cfg.intermediate_size,
        encoder_attention_heads=cfg.num_attention_heads,
        encoder_normalize_before=cfg.pre_norm,
        activation_fn="gelu",
        dropout=0.1,
        attention_dropout=0.1,
        max_positions=cfg.max_position_embeddings - 2,
        adapter_modules=cfg.adapter_mode != "none",
        adapter_layer_norm=cfg.adapter_layer_norm,
        adapter_reuse_layer_norm=cfg.adapter_reuse_layer_norm,
        ln_before_adapter=cfg.ln_before_adapter,
        bottleneck=cfg.adapter_reduction_factor,
        languages=list(cfg.languages),
    )


# ------------------------------------------------------------ fairseq's forward, re-implemented (eval mode)
def fairseq_forward(sd: dict, a: dict, tokens: torch.Tensor, langs: list[str]) -> torch.Tensor:
    """fairseq XMODModel(src_tokens, lang_id=langs) -> LM logits, written from fairseq's module maths."""
    hidden, heads, eps = a["encoder_embed_dim"], a["encoder_attention_heads"], 1e-5

    def lin(name, x):
        return F.linear(x, sd[name + ".weight"], sd.get(name + ".bias"))

    def norm(name, x):
        return F.layer_norm(x, (hidden,), sd[name + ".weight"], sd[name + ".bias"], eps)

    pad_mask = tokens.eq(1)  # (B, T)
    positions = torch.cumsum(~pad_mask, dim=1) * ~pad_mask + 1  # make_positions, padding_idx 1
    x = F.embedding(tokens, sd[P + "embed_tokens.weight"]) + F.embedding(
        positions, sd[P + "embed_positions.weight"]
    )
    x = norm(P + "layernorm_embedding", x) * (~pad_mask).unsqueeze(-1)
    batch, length, _ = x.shape
    for i in range(a["encoder_layers"]):
        L = f"{P}layers.{i}."
        residual = x
        if a["encoder_normalize_before"]:
            x = norm(L + "self_attn_layer_norm", x)
        q = lin(L + "self_attn.q_proj", x) * (hidden // heads) ** -0.5
        k, v = lin(L + "self_attn.k_proj", x), lin(L + "self_attn.v_proj", x)
        q, k, v = (t.view(batch, length, heads, -1).transpose(1, 2) for t in (q, k, v))
        scores = (q @ k.transpose(-1, -2)).masked_fill(pad_mask[:, None, None, :], float("-inf"))
        ctx = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, hidden)
        x = lin(L + "self_attn.out_proj", ctx) + residual
        if not a["encoder_normalize_before"]:
            x = norm(L + "self_attn_layer_norm", x)
        residual = x
        if a["encoder_normalize_before"]:
            x = norm(L + "final_layer_norm", x)
        x = lin(L + "fc2", F.gelu(lin(L + "fc1", x))) + residual
        if a["adapter_modules"]:  # XMODTransformerEncoderLayerBase.lang_adapter
            if not a["ln_before_adapter"]:
                residual = x
            if a["adapter_layer_norm"]:
                x = norm(L + "adapter_layer_norm", x)
            elif a["adapter_reuse_layer_norm"]:
                x = norm(L + "final_layer_norm", x)
            if a["ln_before_adapter"]:
                residual = x
            rows = [
                lin(f"{L}adapter_modules.{lang}.fc2", F.gelu(lin(f"{L}adapter_modules.{lang}.fc1", x[b])))
                for b, lang in enumerate(langs)
            ]
            x = torch.stack(rows) + residual
        if not a["encoder_normalize_before"]:
            x = norm(L + "final_layer_norm", x)
    if a["encoder_normalize_before"]:
        x = norm(P + "layer_norm", x)
    x = norm("encoder.lm_head.layer_norm", F.gelu(lin("encoder.lm_head.dense", x)))
    return F.linear(x, sd["encoder.lm_head.weight"]) + sd["encoder.lm_head.bias"]


def test_fairseq_reimplementation_agrees_with_the_reference_model():
    """The inverse mapping means what fairseq means (else the round trip below would prove nothing)."""
    for flags in (POST_NORM, PRE_NORM):
        model = reference(**flags)
        sd, a = to_fairseq(model), fairseq_args(model.config)
        tokens = torch.tensor([[0, 5, 9, 22, 7, 2], [0, 11, 4, 2, 1, 1]])
        ours = model(tokens, attention_mask=tokens.ne(1).long(), lang_ids=torch.tensor([1, 2])).logits
        theirs = fairseq_forward(sd, a, tokens, ["de_DE", "fr_XX"])
        keep = tokens.ne(1)  # fairseq zeroes pad embeddings; only real tokens are comparable
        torch.testing.assert_close(theirs[keep], ours[keep], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", ["post_norm", "pre_norm", "old_style_keys", "xlmr_no_adapters"])
def test_converted_state_dict_reproduces_the_reference(variant):
    overrides = {"post_norm": POST_NORM, "pre_norm": PRE_NORM, "old_style_keys": POST_NORM}.get(variant, {})
    if variant == "xlmr_no_adapters":
        overrides = dict(adapter_mode="none")
    model = reference(**overrides)
    args = fairseq_args(model.config)
    config, sd = convert_fairseq_state_dict(to_fairseq(model, old_style=variant == "old_style_keys"), args)
    for key in ("pre_norm", "adapter_layer_norm", "adapter_reuse_layer_norm", "ln_before_adapter", "languages",
                "hidden_size", "num_hidden_layers", "intermediate_size", "vocab_size", "max_position_embeddings",
                "adapter_mode", "type_vocab_size", "layer_norm_eps", "pad_token_id"):  # fmt: skip
        assert getattr(config, key) == getattr(model.config, key), key
    assert config.adapter_bottleneck_size == model.config.adapter_bottleneck_size
    converted = XmodForMaskedLM(config).eval()
    converted.load_state_dict(sd, strict=True)
    tokens = torch.randint(3, 60, (3, 9))
    lang_ids = torch.tensor([0, 2, 1])
    with torch.no_grad():
        torch.testing.assert_close(
            converted(tokens, lang_ids=lang_ids).logits, model(tokens, lang_ids=lang_ids).logits
        )


def test_checkpoint_file_with_namespace_args_converts_and_reloads(tmp_path):
    model = reference(**POST_NORM)
    path = tmp_path / "xmod.base" / "model.pt"
    path.parent.mkdir()
    torch.save({"args": argparse.Namespace(**fairseq_args(model.config)), "model": to_fairseq(model)}, path)
    (path.parent / "dict.txt").write_text("a 1\n")
    out = convert_fairseq_checkpoint(path, tmp_path / "converted")
    assert (out / "dict.txt").is_file() and (out / "config.json").is_file()
    loaded = XmodForMaskedLM.from_pretrained(out)
    tokens = torch.randint(3, 60, (2, 7))
    lang_ids = torch.tensor([2, 0])
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(tokens, lang_ids=lang_ids).logits, model(tokens, lang_ids=lang_ids).logits
        )


def test_classification_head_from_an_omegaconf_cfg_checkpoint(tmp_path):
    omegaconf = pytest.importorskip("omegaconf")
    model = reference(XmodForSequenceClassification, num_labels=3, **PRE_NORM)
    cfg = omegaconf.OmegaConf.create(
        {"model": fairseq_args(model.config), "task": {"_name": "sentence_prediction"}}
    )
    path = tmp_path / "model.pt"
    torch.save({"cfg": cfg, "args": None, "model": to_fairseq(model, head="mnli")}, path)
    assert fairseq_model_args(load_fairseq_checkpoint(path))["encoder_attention_heads"] == 4
    out = convert_fairseq_checkpoint(path, tmp_path / "out", classification_head="mnli")
    loaded = XmodForSequenceClassification.from_pretrained(out)
    assert loaded.config.num_labels == 3
    tokens = torch.randint(3, 60, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(tokens, lang_ids=torch.tensor([1, 2])).logits,
            model(tokens, lang_ids=torch.tensor([1, 2])).logits,
        )
    with pytest.raises(ValueError, match=r"no classification head 'sst2'.*\['mnli', 'other'\]"):
        convert_fairseq_checkpoint(path, tmp_path / "out2", classification_head="sst2")


def test_pickled_fairseq_objects_need_trust_and_load_without_fairseq(tmp_path, monkeypatch):
    model = reference(**POST_NORM)
    # A training-state object of a fairseq class, pickled while a stand-in "fairseq" module exists.
    meters = types.ModuleType("fairseq.logging.meters")

    class AverageMeter:
        def __init__(self):
            self.val = 1.5

    AverageMeter.__module__, AverageMeter.__qualname__ = "fairseq.logging.meters", "AverageMeter"
    meters.AverageMeter = AverageMeter
    for name in ("fairseq", "fairseq.logging", "fairseq.logging.meters"):
        monkeypatch.setitem(sys.modules, name, meters if name.endswith("meters") else types.ModuleType(name))
    checkpoint = {
        "args": argparse.Namespace(**fairseq_args(model.config)),
        "model": to_fairseq(model),
        "extra_state": {"metrics": {"train_loss": AverageMeter()}},
    }
    path = tmp_path / "model.pt"
    torch.save(checkpoint, path)
    for name in ("fairseq", "fairseq.logging", "fairseq.logging.meters"):
        monkeypatch.delitem(sys.modules, name)

    with pytest.raises(ValueError, match="trust_checkpoint=True"):
        load_fairseq_checkpoint(path)
    loaded = load_fairseq_checkpoint(path, trust_checkpoint=True)
    assert type(loaded["extra_state"]["metrics"]["train_loss"]).__name__ == "AverageMeter"
    # The CLI, run in-process.
    cli = runpy.run_path(str(REPO / "scripts" / "convert_fairseq.py"), run_name="convert_fairseq")
    cli["main"]([str(path), str(tmp_path / "cli_out"), "--trust-checkpoint"])
    converted = XmodForMaskedLM.from_pretrained(tmp_path / "cli_out")
    tokens = torch.randint(3, 60, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(converted(tokens, lang_ids=1).logits, model(tokens, lang_ids=1).logits)


def test_inconsistent_checkpoints_are_refused():
    model = reference(**POST_NORM)
    args = fairseq_args(model.config)
    sd = to_fairseq(model)
    with pytest.raises(ValueError, match="no X-MOD counterpart"):
        convert_fairseq_state_dict({**sd, P + "layers.0.mystery.weight": torch.zeros(1)}, args)
    with pytest.raises(ValueError, match="disagree"):
        convert_fairseq_state_dict(sd, {**args, "languages": ["en_XX", "de_DE"]})
    with pytest.raises(ValueError, match="encoder_attention_heads"):
        convert_fairseq_state_dict(
            sd, {k: v for k, v in args.items() if k not in ("encoder_attention_heads", "arch")}
        )
    with pytest.raises(ValueError, match="adapter_layer_norm"):
        convert_fairseq_state_dict(sd, {**args, "adapter_layer_norm": True})
    with pytest.raises(ValueError, match="not a fairseq RoBERTa/X-MOD state dict"):
        convert_fairseq_state_dict({"foo.weight": torch.zeros(1)}, args)
    # Languages can come from the state dict when the args lack them (the order fairseq built them in).
    config, _ = convert_fairseq_state_dict(sd, {k: v for k, v in args.items() if k != "languages"})
    assert config.languages == LANGS


def test_tokenizer_from_the_archive_gives_fairseq_ids(tmp_path):
    """sentencepiece pieces -> dict.txt ids, as fairseq's encode does, even when dict.txt is not in spm order."""
    import io
    import random

    import sentencepiece as spm

    texts = [
        "the quick brown fox jumps over the lazy dog",
        "der schnelle braune fuchs springt über den faulen hund",
        "le renard brun rapide saute par-dessus le chien paresseux",
        "a language adapter per language in every layer",
    ] * 5
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=buffer, vocab_size=60, model_type="unigram",
        hard_vocab_limit=False, num_threads=1, minloglevel=2,
    )  # fmt: skip
    processor = spm.SentencePieceProcessor(model_proto=buffer.getvalue())
    pieces = [processor.id_to_piece(i) for i in range(3, processor.get_piece_size())]
    random.Random(0).shuffle(pieces)  # fairseq orders dict.txt by corpus frequency, not by spm id
    symbols = pieces[:-2]  # two pieces missing from the dict: they must become <unk>, as in fairseq
    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / "sentencepiece.bpe.model").write_bytes(buffer.getvalue())
    (archive / "dict.txt").write_text("".join(f"{s} {100 - i}\n" for i, s in enumerate(symbols)))

    vocab_size = 4 + len(symbols) + 1
    model = reference(**POST_NORM, vocab_size=vocab_size)
    torch.save({"args": fairseq_args(model.config), "model": to_fairseq(model)}, archive / "model.pt")
    out = convert_fairseq_checkpoint(archive / "model.pt", tmp_path / "out")

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out)
    assert len(tokenizer) == vocab_size and tokenizer.mask_token_id == vocab_size - 1
    unknowns = 0
    for text in ["the lazy fox jumps over the dog", "der faule hund", *texts[:4]]:
        expected = [0] + [
            4 + symbols.index(p) if p in symbols else 3 for p in processor.encode(text, out_type=str)
        ]
        assert tokenizer(text)["input_ids"] == expected + [2], text
        unknowns += expected.count(3)
    assert unknowns > 0  # the missing dict entries were exercised

    with pytest.raises(ValueError, match="does not belong to the checkpoint"):
        from xmod_lab.tools.fairseq import fairseq_tokenizer

        fairseq_tokenizer(archive / "sentencepiece.bpe.model", archive / "dict.txt", vocab_size=10)


def test_flags_missing_from_the_args_come_from_the_named_architecture(caplog):
    """Saved args may omit what fairseq's architecture function filled in (xmod_large_prenorm: no LN reuse,
    residual before the LN, factor 4); the converter must not fall back to xmod_base's flags then."""
    model = reference(**PRE_NORM)
    sd = to_fairseq(model)
    config, converted = convert_fairseq_state_dict(
        sd, {"arch": "xmod_large_prenorm", "encoder_attention_heads": 4}
    )
    assert (config.adapter_reuse_layer_norm, config.ln_before_adapter, config.adapter_reduction_factor) == (
        False,
        False,
        4,
    )
    assert config.languages == LANGS and "assuming" not in caplog.text
    rebuilt = XmodForMaskedLM(config).eval()
    rebuilt.load_state_dict(converted)
    tokens = torch.randint(3, 60, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(tokens, lang_ids=2).logits, model(tokens, lang_ids=2).logits)
    # No architecture name and no flags: the assumption is logged, never silent.
    convert_fairseq_state_dict(sd, {"encoder_attention_heads": 4})
    assert "assuming xmod_base's" in caplog.text
