"""Skipping padding (models/padding.py): the same numbers at every real position, for every head, with
left and right padding, in training (gradients) and inference; zeros at skipped positions; the switch.

Reference: the same model with ``skip_padding="never"`` (which test_parity.py ties to transformers) and
transformers' eager twin itself.
"""

from __future__ import annotations

import pytest
import torch

import xmod_lab.models as xm
from xmod_lab.models import padding as padding_module
from xmod_lab.models.padding import AUTO_MIN_PADDING, keep_mask, should_skip

from .helpers import PAD, VOCAB, hf_twin, max_diff, tiny_config
from .test_parity import HEADS, _config_for, compare_grads
from .test_performance_semantics import count_syncs

TOL = 1e-5
LANG_IDS = torch.tensor([2, 0, 2, 1, 3, 0])


def padded_batch(side: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """6 x 12, about 40% padding, rows of 12, 9, 5, 3, 8 and 2 tokens; ``side`` = left or right."""
    g = torch.Generator().manual_seed(seed)
    lengths = [12, 9, 5, 3, 8, 2]
    ids = torch.full((6, 12), PAD)
    for row, n in enumerate(lengths):
        tokens = torch.randint(3, VOCAB, (n,), generator=g)
        tokens[0] = 0
        if side == "right":
            ids[row, :n] = tokens
        else:
            ids[row, 12 - n :] = tokens
    return ids, ids.ne(PAD).long()


def head_inputs(head: str, ids: torch.Tensor, mask: torch.Tensor) -> dict:
    g = torch.Generator().manual_seed(1)
    kwargs = {"input_ids": ids, "attention_mask": mask, "lang_ids": LANG_IDS}
    if head in ("XmodForMaskedLM", "XmodForCausalLM"):
        labels = torch.randint(0, VOCAB, ids.shape, generator=g) if head == "XmodForMaskedLM" else ids.clone()
        kwargs["labels"] = labels.masked_fill(ids.eq(PAD), -100)
        if head == "XmodForCausalLM":
            kwargs["use_cache"] = False  # a cache keeps the padded path
    elif head == "XmodForSequenceClassification":
        kwargs["labels"] = torch.tensor([0, 2, 1, 2, 0, 1])
    elif head == "XmodForTokenClassification":
        kwargs["labels"] = torch.randint(0, 3, ids.shape, generator=g).masked_fill(ids.eq(PAD), -100)
    elif head == "XmodForQuestionAnswering":
        kwargs["start_positions"] = torch.tensor([1, 3, 20, 2, 0, 4])
        kwargs["end_positions"] = torch.tensor([2, 5, 20, 7, 1, 4])
    elif head == "XmodForMultipleChoice":
        kwargs = {
            "input_ids": ids.view(3, 2, -1),
            "attention_mask": mask.view(3, 2, -1),
            "lang_ids": torch.tensor([2]),  # transformers 5 only accepts one (its tiling bug)
            "labels": torch.tensor([1, 0, 1]),
        }
    return kwargs


def compare_outputs(a, b, mask: torch.Tensor) -> float:
    """Max difference of two outputs: per-position tensors at real positions only, others everywhere."""
    worst = 0.0
    real = mask.reshape(-1, mask.shape[-1]).bool()
    for key in a.keys():
        if b.get(key) is None:
            continue
        for x, y in zip(*((v,) if isinstance(v, torch.Tensor) else v for v in (a[key], b[key])), strict=True):
            if x.dim() >= 2 and x.shape[:2] == real.shape:
                x, y = x[real], y[real]
            worst = max(worst, max_diff(x, y))
    return worst


def build(head: str, skip: str, pre_norm: bool = False, seed: int = 0):
    config = _config_for(head, (pre_norm, pre_norm, not pre_norm, not pre_norm), skip_padding=skip)
    torch.manual_seed(seed)
    return getattr(xm, head)(config)


@pytest.mark.parametrize("pre_norm", [False, True], ids=["postnorm", "prenorm"])
@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("head", HEADS)
def test_skipping_padding_matches_transformers_and_the_padded_path(head, side, pre_norm):
    ids, mask = padded_batch(side)
    inputs = head_inputs(head, ids, mask)
    skipping = build(head, "always", pre_norm).train()
    padded = build(head, "never", pre_norm).train()
    padded.load_state_dict(skipping.state_dict())
    theirs = hf_twin(skipping)
    a = skipping(**inputs, output_hidden_states=True)
    b = padded(**inputs, output_hidden_states=True)
    c = theirs(**inputs, output_hidden_states=True)
    assert compare_outputs(a, b, mask) <= TOL
    assert compare_outputs(a, c, mask) <= TOL
    for out in (a, b, c):  # XmodModel: a loss on the real positions (padding positions' outputs differ)
        real = mask[..., None]
        scalar = (out.last_hidden_state * real).square().mean() if head == "XmodModel" else out.loss
        scalar.backward()
    assert compare_grads(skipping, padded) <= TOL
    if not (head == "XmodForCausalLM" and side == "left"):
        # Left-padded decoder rows hold queries that see no key; their gradients differ from transformers'
        # with or without skipping (those rows are never skipped: keep_mask's causal rule).
        assert compare_grads(skipping, theirs) <= TOL


def _spy_unpadding(monkeypatch) -> list[int]:
    calls: list[int] = []
    original = padding_module.Unpadded.from_keep.__func__

    def spy(cls, keep, kept):
        calls.append(kept)
        return original(cls, keep, kept)

    monkeypatch.setattr(padding_module.Unpadded, "from_keep", classmethod(spy))
    return calls


def test_skipped_positions_are_zero_and_real_ones_are_not(monkeypatch):
    calls = _spy_unpadding(monkeypatch)
    ids, mask = padded_batch("right")
    model = xm.XmodModel(tiny_config(skip_padding="always")).eval()
    out = model(ids, attention_mask=mask, lang_ids=LANG_IDS, output_hidden_states=True)
    assert calls == [int(mask.sum())]  # real tokens only: every row starts with a real <s>
    pads = mask == 0
    for h in (out.last_hidden_state, *out.hidden_states):
        assert h.shape == (6, 12, 32)
        assert not h[pads].any()
        assert h[~pads].abs().amin(dim=-1).gt(0).any()


def test_left_padding_keeps_position_zero_for_the_classifier(monkeypatch):
    calls = _spy_unpadding(monkeypatch)
    ids, mask = padded_batch("left")
    model = build("XmodForSequenceClassification", "always").eval()
    reference = build("XmodForSequenceClassification", "never").eval()
    reference.load_state_dict(model.state_dict())
    got = model(ids, attention_mask=mask, lang_ids=LANG_IDS).logits
    assert calls == [int(mask.sum()) + int((mask[:, 0] == 0).sum())]  # + the padded position 0 of 5 rows
    assert max_diff(got, reference(ids, attention_mask=mask, lang_ids=LANG_IDS).logits) <= TOL


def test_labels_on_padding_positions_are_scored_as_without_skipping():
    # A label on a padded position takes part in transformers' loss; skipping must not drop it.
    ids, mask = padded_batch("right")
    labels = torch.randint(0, 3, ids.shape, generator=torch.Generator().manual_seed(2))
    model = build("XmodForTokenClassification", "always").eval()
    theirs = hf_twin(model)
    a = model(ids, attention_mask=mask, lang_ids=LANG_IDS, labels=labels)
    b = theirs(input_ids=ids, attention_mask=mask, lang_ids=LANG_IDS, labels=labels)
    assert max_diff(a.loss, b.loss) <= TOL


def test_a_row_without_real_tokens_gives_the_padded_numbers():
    ids, mask = padded_batch("right")
    mask[3] = 0  # attends to nothing: uniform attention over all its positions
    model = xm.XmodModel(tiny_config(skip_padding="always")).eval()
    reference = xm.XmodModel(tiny_config(skip_padding="never")).eval()
    reference.load_state_dict(model.state_dict())
    a = model(ids, attention_mask=mask, lang_ids=LANG_IDS).last_hidden_state
    b = reference(ids, attention_mask=mask, lang_ids=LANG_IDS).last_hidden_state
    assert max_diff(a[3], b[3]) <= TOL
    assert max_diff(a[mask.bool()], b[mask.bool()]) <= TOL


@pytest.mark.parametrize("lang_ids", [2, torch.tensor([1]), torch.tensor([3, 0, 3, 1, 0, 3])])
def test_language_of_every_token_follows_its_row(lang_ids):
    ids, mask = padded_batch("left", seed=4)
    model = xm.XmodModel(tiny_config(skip_padding="always")).eval()
    out = model(ids, attention_mask=mask, lang_ids=lang_ids).last_hidden_state
    per_row = torch.tensor(lang_ids).expand(6) if isinstance(lang_ids, int) else lang_ids.expand(6)
    for row in range(6):
        keep = mask[row].bool()
        alone = model(
            ids[row : row + 1, keep], attention_mask=mask[row : row + 1, keep], lang_ids=int(per_row[row])
        ).last_hidden_state[0]
        assert max_diff(out[row, keep], alone) <= TOL


def test_auto_follows_the_padding_fraction(monkeypatch):
    calls = _spy_unpadding(monkeypatch)
    model = xm.XmodModel(tiny_config()).eval()
    assert model.config.skip_padding == "auto"
    ids = torch.randint(3, VOCAB, (4, 20))
    mask = torch.ones_like(ids)
    model(ids, attention_mask=mask, lang_ids=0)  # dense: nothing to skip
    few = int(AUTO_MIN_PADDING * 80) - 1  # just under the threshold
    mask[0, 20 - few :] = 0
    model(ids, attention_mask=mask, lang_ids=0)
    assert calls == []
    mask[1, 20 - 2 :] = 0  # now at or above it
    model(ids, attention_mask=mask, lang_ids=0)
    assert calls == [int(mask.sum())]
    assert (
        not should_skip("never", 10, 100)
        and should_skip("always", 99, 100)
        and not should_skip("always", 5, 5)
    )


def test_switched_off_it_is_the_padded_path(monkeypatch):
    calls = _spy_unpadding(monkeypatch)
    ids, mask = padded_batch("right")
    model = xm.XmodForMaskedLM(tiny_config(skip_padding="never")).eval()
    theirs = hf_twin(model)
    a = model(ids, attention_mask=mask, lang_ids=LANG_IDS).logits
    b = theirs(input_ids=ids, attention_mask=mask, lang_ids=LANG_IDS).logits
    assert calls == [] and max_diff(a, b) <= TOL  # pads included
    with pytest.raises(ValueError, match="skip_padding must be one of"):
        tiny_config(skip_padding="sometimes")


def test_host_syncs_with_padding_skipped():
    ids, mask = padded_batch("right")
    model = xm.XmodForMaskedLM(tiny_config(skip_padding="always")).train()
    labels = ids.masked_fill(mask == 0, -100)
    # Mixed languages: the backbone's token count rides on the routing's one sync; the LM head on the kept
    # tokens only costs one more (its own count), paid for by the vocabulary-wide matmul it leaves out.
    step = lambda: model(ids, attention_mask=mask, lang_ids=LANG_IDS, labels=labels).loss.backward()  # noqa: E731
    assert count_syncs(step) == ["tolist", "__int__"]
    backbone = lambda: model.roberta(ids, attention_mask=mask, lang_ids=LANG_IDS)  # noqa: E731
    assert count_syncs(backbone) == ["tolist"]
    # A known language needs no sync for routing; skipping padding costs one (the token count).
    assert count_syncs(lambda: model.roberta(ids, attention_mask=mask, lang_ids=2)) == ["tolist"]
    model.config.skip_padding = "never"
    assert count_syncs(lambda: model(ids, attention_mask=mask, lang_ids=2)) == []


def test_keep_mask_positions():
    mask = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0]])
    expected = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 1], [1, 1, 1, 1]]).bool()
    assert torch.equal(keep_mask(mask), expected)
    causal = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]]).bool()  # left padding: whole row
    assert torch.equal(keep_mask(mask, causal=True), causal)
    also = torch.tensor([[0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]]).bool()
    assert torch.equal(keep_mask(mask, also), expected | also)


@pytest.mark.parametrize("skip", ["always", "never"])
@pytest.mark.parametrize("pre_norm", [False, True], ids=["postnorm", "prenorm"])
@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("head", ["XmodForSequenceClassification", "XmodForMultipleChoice"])
def test_last_layer_on_the_first_token_only_matches_transformers(head, side, pre_norm, skip):
    """Sentence heads read <s> only, so the last layer computes it alone (hidden states not asked for)."""
    ids, mask = padded_batch(side)
    inputs = head_inputs(head, ids, mask)
    ours = build(head, skip, pre_norm).train()
    theirs = hf_twin(ours)
    calls = []
    last = ours.roberta.encoder.layer[-1]
    last.register_forward_hook(lambda _m, _a, out: calls.append(tuple(out[0].shape)))
    a, b = ours(**inputs), theirs(**inputs)
    assert calls == [(6, 1, 32)]  # every row, one token
    assert max_diff(a.logits, b.logits) <= TOL and max_diff(a.loss, b.loss) <= TOL
    a.loss.backward()
    b.loss.backward()
    assert compare_grads(ours, theirs) <= TOL


def test_first_token_only_steps_aside_where_other_outputs_need_every_token():
    ids, mask = padded_batch("right")
    for extra in ({"output_hidden_states": True}, {"output_attentions": True}):
        model = build("XmodForSequenceClassification", "never").eval()
        shapes = []
        model.roberta.encoder.layer[-1].register_forward_hook(
            lambda _m, _a, out, s=shapes: s.append(out[0].shape)
        )
        out = model(ids, attention_mask=mask, lang_ids=LANG_IDS, **extra)
        assert shapes == [(6, 12, 32)] and out.logits.shape == (6, 3)
    relative = xm.XmodForSequenceClassification(
        tiny_config(position_embedding_type="relative_key", skip_padding="never")
    )
    relative.eval()
    shapes = []
    relative.roberta.encoder.layer[-1].register_forward_hook(lambda _m, _a, out: shapes.append(out[0].shape))
    relative(ids, attention_mask=mask, lang_ids=LANG_IDS)
    assert shapes == [(6, 12, 32)]


@pytest.mark.parametrize("grad", [False, True], ids=["inference", "autograd"])
@pytest.mark.parametrize("labelled", [False, True])
def test_masked_lm_head_reads_the_kept_tokens_only(labelled, grad):
    """At a 250k vocabulary the LM head is most of an inference forward: with padding skipped it runs on the
    kept tokens (plus one zero state for the skipped positions), and gives the padded path's logits at every
    real position and the head's output for a zero state at every skipped one, as before."""
    ids, mask = padded_batch("right")
    model = xm.XmodForMaskedLM(tiny_config(skip_padding="always")).eval()
    reference = xm.XmodForMaskedLM(tiny_config(skip_padding="never")).eval()
    reference.load_state_dict(model.state_dict())
    labels = ids.masked_fill(mask == 0, -100) if labelled else None
    rows: list[int] = []
    hook = model.lm_head.dense.register_forward_hook(lambda _m, args, _out: rows.append(args[0].shape[0]))
    # oneDNN off: with it, inference runs the head on every row (tests/models/test_kernels.py).
    with torch.set_grad_enabled(grad), torch.backends.mkldnn.flags(enabled=False):
        out = model(ids, attention_mask=mask, lang_ids=LANG_IDS, labels=labels)
    hook.remove()
    with torch.no_grad():
        ref = reference(ids, attention_mask=mask, lang_ids=LANG_IDS, labels=labels)
        zero_state = model.lm_head(torch.zeros(1, model.config.hidden_size))[0]
    assert sorted(rows) == [1, int(mask.sum())]  # every row starts with a real <s>: nothing else is kept
    real = mask.bool()
    assert max_diff(out.logits[real], ref.logits[real]) <= TOL
    assert torch.equal(out.logits[~real].detach(), zero_state.expand(int((~real).sum()), -1))
    if labelled:
        assert abs(out.loss.item() - ref.loss.item()) <= TOL
    dense = torch.ones_like(mask)  # nothing to skip: the head runs once, on every position
    rows.clear()
    hook = model.lm_head.dense.register_forward_hook(lambda _m, args, _out: rows.append(args[0].shape[:2]))
    with torch.no_grad():
        model(ids, attention_mask=dense, lang_ids=LANG_IDS)
    hook.remove()
    assert rows == [ids.shape]


def test_masked_lm_head_on_left_padding_and_holes():
    """The inference path writes runs of consecutive kept positions (oneDNN off), or runs the head on every
    row (oneDNN on): left padding, and a mask with holes inside a row, give the padded path's logits at every
    real position either way."""
    ids, mask = padded_batch("left")
    mask = mask.clone()
    mask[0, 4:6] = 0  # a hole inside the longest row
    model = xm.XmodForMaskedLM(tiny_config(skip_padding="always")).eval()
    reference = xm.XmodForMaskedLM(tiny_config(skip_padding="never")).eval()
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        with torch.backends.mkldnn.flags(enabled=False):
            runs = model(ids, attention_mask=mask, lang_ids=LANG_IDS).logits
        every_row = model(ids, attention_mask=mask, lang_ids=LANG_IDS).logits
        ref = reference(ids, attention_mask=mask, lang_ids=LANG_IDS).logits
    keep = keep_mask(mask)
    for out in (runs, every_row):
        assert max_diff(out[keep], ref[keep]) <= TOL and not torch.equal(out[0, 4], ref[0, 4])  # the hole: skipped
    assert max_diff(runs, every_row) <= TOL  # skipped positions too: the head's output for a zero state


def test_masked_lm_returns_a_tuple_when_asked():
    """transformers' return_dict=False: (loss, logits) as a tuple, the same logits as the output object."""
    ids, mask = padded_batch("right")
    model = xm.XmodForMaskedLM(tiny_config(skip_padding="always")).eval()
    labels = ids.masked_fill(mask == 0, -100)
    with torch.no_grad():
        as_tuple = model(ids, attention_mask=mask, lang_ids=LANG_IDS, labels=labels, return_dict=False)
        as_object = model(ids, attention_mask=mask, lang_ids=LANG_IDS, labels=labels)
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[1], as_object.logits)
