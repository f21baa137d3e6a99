"""XmodForCausalLM: KV cache equals recomputation; greedy and sampled generate()."""

from __future__ import annotations

import pytest
import torch

import xmod_lab.models as xm
from tests.models.helpers import max_diff, tiny_config


@pytest.fixture(scope="module", params=["absolute", "relative_key_query"])
def lm(request):
    torch.manual_seed(0)
    config = tiny_config(is_decoder=True, position_embedding_type=request.param, eos_token_id=None)
    return xm.XmodForCausalLM(config).eval()


def _prompt(batch=3, length=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 99, (batch, length), generator=g)
    ids[:, 0] = 0
    return ids


def test_cached_steps_equal_full_forward(lm):
    ids = _prompt(length=7)
    lang = torch.tensor([0, 3, 1])
    full = lm(ids, lang_ids=lang, use_cache=False).logits
    first = lm(ids[:, :4], lang_ids=lang, use_cache=True)
    past, step_logits = first.past_key_values, [first.logits]
    assert len(past) == 2 and past[0][0].shape == (3, 4, 4, 8)  # (B, H, S, Hd) per layer
    for t in range(4, 7):
        out = lm(ids[:, t : t + 1], lang_ids=lang, past_key_values=past, use_cache=True)
        past = out.past_key_values
        step_logits.append(out.logits)
    assert max_diff(torch.cat(step_logits, dim=1), full) <= 1e-5


def test_greedy_generate_equals_recomputing_the_sequence(lm):
    prompt = _prompt()
    lang = torch.tensor([2, 0, 1])
    tokens = lm.generate(prompt, lang_ids=lang, max_new_tokens=6)
    assert tokens.shape == (3, 11) and torch.equal(tokens[:, :5], prompt)
    logits = lm(tokens, lang_ids=lang).logits  # one full forward, no cache
    assert torch.equal(logits[:, 4:-1].argmax(-1), tokens[:, 5:])


def test_left_padded_prompt_continues_like_unpadded(lm):
    prompt = _prompt(batch=2)
    padded = torch.cat([torch.ones(1, 2, dtype=torch.long), prompt[1:]], dim=1)  # row 1 left-padded by 2
    mask = padded.ne(1).long()
    alone = lm.generate(prompt[1:], lang_ids=1, max_new_tokens=4)
    both = lm.generate(
        torch.cat([torch.cat([prompt[:1], prompt[:1, -2:]], 1), padded]),
        lang_ids=1,
        attention_mask=torch.cat([torch.ones(1, 7, dtype=torch.long), mask]),
        max_new_tokens=4,
    )
    assert torch.equal(both[1, 2:], alone[0])


def test_sampling_is_reproducible_with_a_generator(lm):
    prompt = _prompt()
    kwargs = dict(lang_ids=0, max_new_tokens=8, do_sample=True, temperature=1.5, top_k=20, top_p=0.9)
    a = lm.generate(prompt, generator=torch.Generator().manual_seed(7), **kwargs)
    b = lm.generate(prompt, generator=torch.Generator().manual_seed(7), **kwargs)
    c = lm.generate(prompt, generator=torch.Generator().manual_seed(8), **kwargs)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_top_k_one_is_greedy(lm):
    prompt = _prompt()
    greedy = lm.generate(prompt, lang_ids=0, max_new_tokens=5)
    sampled = lm.generate(
        prompt,
        lang_ids=0,
        max_new_tokens=5,
        do_sample=True,
        top_k=1,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(greedy, sampled)


def test_eos_stops_and_pads():
    torch.manual_seed(0)
    model = xm.XmodForCausalLM(tiny_config(is_decoder=True)).eval()
    prompt = _prompt()
    free = model.generate(prompt, lang_ids=0, max_new_tokens=6, eos_token_id=None)
    eos = int(free[0, 6])  # row 0's second generated token
    out = model.generate(prompt, lang_ids=0, max_new_tokens=6, eos_token_id=eos, pad_token_id=1)
    row = out[0, 5:].tolist()
    first = row.index(eos)
    assert all(t == 1 for t in row[first + 1 :])


def test_generate_needs_a_decoder():
    model = xm.XmodForCausalLM(tiny_config())
    with pytest.raises(ValueError, match="is_decoder=True"):
        model.generate(_prompt(), lang_ids=0)


def test_cross_attention_cache():
    torch.manual_seed(0)
    model = xm.XmodForCausalLM(tiny_config(is_decoder=True, add_cross_attention=True)).eval()
    enc = torch.randn(3, 4, 32)
    ids = _prompt(length=6)
    full = model(ids, lang_ids=1, encoder_hidden_states=enc).logits
    first = model(ids[:, :3], lang_ids=1, encoder_hidden_states=enc, use_cache=True)
    assert len(first.past_key_values[0]) == 4  # self K, V, cross K, V
    logits, past = [first.logits], first.past_key_values
    for t in range(3, 6):
        out = model(
            ids[:, t : t + 1], lang_ids=1, encoder_hidden_states=enc, past_key_values=past, use_cache=True
        )
        logits.append(out.logits)
        past = out.past_key_values
    assert max_diff(torch.cat(logits, 1), full) <= 1e-5
