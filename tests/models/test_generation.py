"""XmodForCausalLM: transformers' KV cache equals recomputation; GenerationMixin.generate with lang_ids."""

from __future__ import annotations

import pytest
import torch
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

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
    cache, step_logits = first.cache, [first.logits]
    assert isinstance(cache, DynamicCache) and len(cache.layers) == 2
    assert cache.layers[0].keys.shape == (3, 4, 4, 8)  # (B, H, S, Hd) per layer
    for t in range(4, 7):
        out = lm(ids[:, t : t + 1], lang_ids=lang, cache=cache, use_cache=True)
        assert out.cache is cache
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


def _sample(lm, prompt, seed, **kwargs):
    torch.manual_seed(seed)  # transformers samples from the global generator
    return lm.generate(prompt, lang_ids=0, do_sample=True, max_new_tokens=8, **kwargs)


def test_sampling_is_reproducible_with_a_seed(lm):
    prompt = _prompt()
    kwargs = dict(temperature=1.5, top_k=20, top_p=0.9)
    a, b, c = _sample(lm, prompt, 7, **kwargs), _sample(lm, prompt, 7, **kwargs), _sample(lm, prompt, 8, **kwargs)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_top_k_one_is_greedy(lm):
    prompt = _prompt()
    greedy = lm.generate(prompt, lang_ids=0, max_new_tokens=5)
    assert torch.equal(greedy, _sample(lm, prompt, 0, top_k=1)[:, :10])


def test_lang_ids_reach_every_step(lm):
    """Every generate step runs the requested adapter: its logits equal that language's full forward."""
    prompt = _prompt()
    steps = {}
    for lang in (0, 3):
        out = lm.generate(
            prompt, lang_ids=torch.full((3,), lang), max_new_tokens=4,
            output_logits=True, return_dict_in_generate=True,
        )  # fmt: skip
        full = lm(out.sequences, lang_ids=lang).logits[:, 4:-1]
        steps[lang] = torch.stack(out.logits, dim=1)  # (B, new, V)
        assert max_diff(steps[lang], full) <= 1e-5
    assert max_diff(steps[0], steps[3]) > 1e-4


def test_beam_search_and_lengths(lm):
    prompt = _prompt()
    lang = torch.tensor([2, 0, 1])
    beams = lm.generate(prompt, lang_ids=lang, num_beams=3, num_return_sequences=2, max_new_tokens=4)
    assert beams.shape == (6, 9) and torch.equal(beams[::2, :5], prompt)
    # The best beam scores at least as high as greedy under the model (sum of token log-probs).
    greedy = lm.generate(prompt, lang_ids=lang, max_new_tokens=4)

    def score(seqs, lang_ids):
        logp = lm(seqs, lang_ids=lang_ids).logits[:, 4:-1].log_softmax(-1)
        return logp.gather(-1, seqs[:, 5:, None]).sum((1, 2))

    best = beams[::2]
    assert (score(best, lang) >= score(greedy, lang) - 1e-5).all()
    assert lm.generate(prompt, lang_ids=lang, max_length=7).shape == (3, 7)


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


def test_a_cache_must_be_a_transformers_cache(lm):
    with pytest.raises(TypeError, match="must be a transformers Cache"):
        lm(_prompt(), lang_ids=0, cache=((torch.zeros(1),),), use_cache=True)


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
    cache = first.cache
    assert isinstance(cache, EncoderDecoderCache) and cache.cross_attention_cache.layers[0].keys.shape[2] == 4
    logits = [first.logits]
    for t in range(3, 6):
        out = model(ids[:, t : t + 1], lang_ids=1, encoder_hidden_states=enc, cache=cache, use_cache=True)
        logits.append(out.logits)
    assert max_diff(torch.cat(logits, 1), full) <= 1e-5
