"""Parity with transformers 5's eager Xmod classes on identical weights (float32, max abs diff <= 1e-5).

Covers every head, post-norm and pre-norm, all 16 combinations of the adapter flags, padded and
mixed-language batches, losses and train-mode gradients. transformers gives absent adapters zero
gradients; ours get none at all (None), which is checked too.
"""

from __future__ import annotations

import itertools

import pytest
import torch

import xmod_lab.models as xm
from tests.models.helpers import LANGS, PAD, VOCAB, at_real, hf_twin, max_diff, tiny_config, token_batch

TOL = 1e-5
FLAGS = list(itertools.product([False, True], repeat=4))  # pre_norm, adapter_layer_norm, reuse_LN, ln_before
FLAG_IDS = ["pre{}-aln{}-reuse{}-lnb{}".format(*(int(f) for f in flags)) for flags in FLAGS]
HEADS = [
    "XmodModel",
    "XmodForMaskedLM",
    "XmodForCausalLM",
    "XmodForSequenceClassification",
    "XmodForTokenClassification",
    "XmodForQuestionAnswering",
    "XmodForMultipleChoice",
]
LANG_IDS = torch.tensor([2, 0, 2, 1])  # sw_KE (3) absent; not sorted


def _inputs(head: str, seed: int = 0) -> dict:
    ids, mask = token_batch(seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    kwargs = {"input_ids": ids, "attention_mask": mask, "lang_ids": LANG_IDS}
    token_labels = torch.randint(0, 3, ids.shape, generator=g).masked_fill(ids.eq(PAD), -100)
    if head == "XmodForMaskedLM":
        kwargs["labels"] = torch.randint(0, VOCAB, ids.shape, generator=g).masked_fill(ids.eq(PAD), -100)
    elif head == "XmodForCausalLM":
        kwargs["labels"] = ids.masked_fill(ids.eq(PAD), -100)
    elif head == "XmodForSequenceClassification":
        kwargs["labels"] = torch.tensor([0, 2, 1, 2])
    elif head == "XmodForTokenClassification":
        kwargs["labels"] = token_labels
    elif head == "XmodForQuestionAnswering":
        kwargs["start_positions"] = torch.tensor([1, 3, 20, 2])  # 20: beyond the input, ignored
        kwargs["end_positions"] = torch.tensor([2, 5, 20, 7])
    elif head == "XmodForMultipleChoice":
        # (B=2, C=2, T); transformers 5 only accepts a one-element lang_ids here (its tiling bug)
        kwargs = {
            "input_ids": ids.view(2, 2, -1),
            "attention_mask": mask.view(2, 2, -1),
            "lang_ids": torch.tensor([2]),
            "labels": torch.tensor([1, 0]),
        }
    return kwargs


def _config_for(head: str, flags: tuple[bool, ...], **extra):
    pre_norm, aln, reuse, lnb = flags
    return tiny_config(
        pre_norm=pre_norm,
        adapter_layer_norm=aln,
        adapter_reuse_layer_norm=reuse,
        ln_before_adapter=lnb,
        is_decoder=head == "XmodForCausalLM",
        num_labels=2 if head == "XmodForQuestionAnswering" else 3,
        **extra,
    )


def _scalar(out, head: str, mask: torch.Tensor) -> torch.Tensor:
    if head == "XmodModel":  # real positions: padding's outputs are not computed when it is skipped
        return (out.last_hidden_state * mask[..., None]).square().mean() + out.pooler_output.sum()
    return out.loss


def compare_grads(ours: torch.nn.Module, theirs: torch.nn.Module) -> float:
    """Max abs grad difference; ours None must be theirs all-zero (unused adapters)."""
    worst = 0.0
    their_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        q = their_params[name]
        if p.grad is None:
            assert q.grad is None or not q.grad.any(), f"{name}: no grad here but transformers has one"
            continue
        assert q.grad is not None, name
        worst = max(worst, max_diff(p.grad, q.grad))
    return worst


def run_pair(head: str, config, inputs: dict, train: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    ours = getattr(xm, head)(config)
    ours.train(train)
    theirs = hf_twin(ours)
    a = ours(**inputs, output_hidden_states=True)
    b = theirs(**inputs, output_hidden_states=True)
    return ours, theirs, a, b


@pytest.mark.parametrize("flags", FLAGS, ids=FLAG_IDS)
@pytest.mark.parametrize("skip", ["always", "never"], ids=["skip-padding", "padded"])
@pytest.mark.parametrize("head", HEADS)
def test_head_parity_all_adapter_flags(head, flags, skip):
    config = _config_for(head, flags, skip_padding=skip)
    inputs = _inputs(head)
    ours, theirs, a, b = run_pair(head, config, inputs)
    mask = inputs["attention_mask"]
    for key in a.keys():
        if key == "hidden_states":
            assert len(a[key]) == len(b[key]) == config.num_hidden_layers + 1
            for x, y in zip(a[key], b[key], strict=True):
                assert max_diff(at_real(x, mask), at_real(y, mask)) <= TOL
        else:
            assert max_diff(at_real(a[key], mask), at_real(b[key], mask)) <= TOL, key
    _scalar(a, head, mask).backward()
    _scalar(b, head, mask).backward()
    assert compare_grads(ours, theirs) <= TOL
    absent = f"encoder.layer.0.output.adapter_modules.{LANGS[3]}.dense1.weight"
    ours_params = dict(ours.named_parameters())
    name = absent if head == "XmodModel" else "roberta." + absent
    if head != "XmodForMultipleChoice":
        assert ours_params[name].grad is None  # absent language: no gradient at all


@pytest.mark.parametrize(
    "lang_ids",
    [[0, 0, 0, 0], [3, 2, 1, 0], [1, 0, 1, 0], [2, 2, 0, 0], [0, 3, 3, 1]],
    ids=["one-language", "reversed", "interleaved", "runs", "mixed"],
)
@pytest.mark.parametrize("pre_norm", [False, True], ids=["postnorm", "prenorm"])
def test_mixed_language_orders(lang_ids, pre_norm):
    config = tiny_config(
        pre_norm=pre_norm,
        adapter_layer_norm=pre_norm,
        adapter_reuse_layer_norm=not pre_norm,
        ln_before_adapter=not pre_norm,
    )
    ids, mask = token_batch()
    inputs = {"input_ids": ids, "attention_mask": mask, "lang_ids": torch.tensor(lang_ids)}
    ours, theirs, a, b = run_pair(
        "XmodForSequenceClassification", config, {**inputs, "labels": torch.tensor([0, 1, 2, 0])}
    )
    assert max_diff(a.logits, b.logits) <= TOL
    a.loss.backward()
    b.loss.backward()
    assert compare_grads(ours, theirs) <= TOL
    used = set(lang_ids)
    for code_index, code in enumerate(LANGS):
        grad = ours.roberta.encoder.layer[1].output.adapter_modules[code].dense2.weight.grad
        assert (grad is not None) == (code_index in used), code


def test_sdpa_matches_eager_and_transformers():
    config = tiny_config(attn_implementation="sdpa")
    ids, mask = token_batch()
    torch.manual_seed(0)
    ours = xm.XmodForMaskedLM(config).eval()
    theirs = hf_twin(ours)
    sdpa = ours(ids, lang_ids=LANG_IDS, attention_mask=mask).logits
    eager = ours(ids, lang_ids=LANG_IDS, attention_mask=mask, output_attentions=True)
    ref = theirs(ids, lang_ids=LANG_IDS, attention_mask=mask, output_attentions=True)
    assert max_diff(at_real(sdpa, mask), at_real(ref.logits, mask)) <= TOL
    assert max_diff(at_real(eager.logits, mask), at_real(ref.logits, mask)) <= TOL
    assert len(eager.attentions) == 2
    for x, y in zip(eager.attentions, ref.attentions, strict=True):
        assert x.shape == (4, 4, ids.shape[1], ids.shape[1])
        assert max_diff(at_real(x, mask, attention=True), at_real(y, mask, attention=True)) <= TOL


def test_multiple_choice_routes_each_choice_to_its_example_language():
    config = tiny_config()
    torch.manual_seed(0)
    ours = xm.XmodForMultipleChoice(config).eval()
    theirs = hf_twin(ours)
    ids, mask = token_batch(batch=6)
    batch_ids, choice_ids = ids.view(2, 3, -1), mask.view(2, 3, -1)
    per_example = torch.tensor([1, 3])
    out = ours(batch_ids, lang_ids=per_example, attention_mask=choice_ids)
    flat = ours(batch_ids, lang_ids=per_example.repeat_interleave(3), attention_mask=choice_ids)
    per_choice = ours(batch_ids, lang_ids=per_example[:, None].expand(2, 3), attention_mask=choice_ids)
    pooled = theirs.roberta(ids, lang_ids=per_example.repeat_interleave(3), attention_mask=mask).pooler_output
    expected = theirs.classifier(pooled).view(2, 3)
    assert max_diff(out.logits, expected) <= TOL
    assert torch.equal(out.logits, flat.logits) and torch.equal(out.logits, per_choice.logits)


@pytest.mark.parametrize("pre_norm", [False, True], ids=["postnorm", "prenorm"])
def test_decoder_with_cross_attention_parity(pre_norm):
    config = tiny_config(
        is_decoder=True, add_cross_attention=True, pre_norm=pre_norm, adapter_layer_norm=pre_norm
    )
    ids, mask = token_batch()
    g = torch.Generator().manual_seed(3)
    enc = torch.randn(4, 5, 32, generator=g)
    enc_mask = torch.ones(4, 5, dtype=torch.long)
    enc_mask[0, 3:] = 0
    labels = ids.masked_fill(ids.eq(PAD), -100)
    torch.manual_seed(0)
    ours = xm.XmodForCausalLM(config).train()
    theirs = hf_twin(ours)
    kwargs = dict(
        attention_mask=mask,
        lang_ids=LANG_IDS,
        encoder_hidden_states=enc,
        encoder_attention_mask=enc_mask,
        labels=labels,
    )
    a = ours(ids, **kwargs)
    b = theirs(ids, **kwargs)
    assert max_diff(a.logits, b.logits) <= TOL
    assert max_diff(a.loss, b.loss) <= TOL
    a.loss.backward()
    b.loss.backward()
    assert compare_grads(ours, theirs) <= TOL


def test_sequence_classification_problem_types():
    torch.manual_seed(0)
    ids, mask = token_batch()
    for num_labels, labels in [
        (1, torch.tensor([0.5, -1.0, 2.0, 0.0])),
        (3, torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])),
        (3, torch.tensor([0, 2, 1, 1])),
    ]:
        config = tiny_config(num_labels=num_labels)
        ours = xm.XmodForSequenceClassification(config).eval()
        theirs = hf_twin(ours)
        a = ours(ids, attention_mask=mask, lang_ids=LANG_IDS, labels=labels)
        b = theirs(ids, attention_mask=mask, lang_ids=LANG_IDS, labels=labels)
        assert max_diff(a.loss, b.loss) <= TOL, num_labels
        assert config.problem_type is None  # inferred per call, the config is not mutated


def test_default_language_parity():
    config = tiny_config(default_language="fr_XX")
    torch.manual_seed(0)
    ours = xm.XmodModel(config).eval()
    theirs = hf_twin(ours)
    ids, mask = token_batch()
    a = ours(ids, attention_mask=mask).last_hidden_state
    b = theirs(ids, attention_mask=mask).last_hidden_state
    c = ours(ids, attention_mask=mask, lang_ids=torch.full((4,), 2)).last_hidden_state
    assert max_diff(at_real(a, mask), at_real(b, mask)) <= TOL
    assert torch.equal(a, c)


def test_token_types_positions_and_inputs_embeds_parity():
    config = tiny_config()
    torch.manual_seed(0)
    ours = xm.XmodModel(config).eval()
    theirs = hf_twin(ours)
    ids, mask = token_batch()
    token_types = (torch.arange(ids.shape[1]) >= 4).long().expand_as(ids)
    positions = torch.arange(5, 5 + ids.shape[1]).expand_as(ids)
    embeds = torch.randn(4, ids.shape[1], 32, generator=torch.Generator().manual_seed(0))
    for kwargs in (
        {"input_ids": ids, "token_type_ids": token_types},
        {"input_ids": ids, "position_ids": positions},
        {"inputs_embeds": embeds, "token_type_ids": token_types},
    ):
        a = ours(**kwargs, attention_mask=mask, lang_ids=LANG_IDS)
        b = theirs(**kwargs, attention_mask=mask, lang_ids=LANG_IDS)
        assert max_diff(at_real(a.last_hidden_state, mask), at_real(b.last_hidden_state, mask)) <= TOL, list(kwargs)
        assert max_diff(a.pooler_output, b.pooler_output) <= TOL
