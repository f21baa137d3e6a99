"""Batches that carry little padding: length-grouped training batches and evaluation batches sorted by
length (xmod_lab/data/sampling.py), each example exactly once, seeded, resumable; metrics unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.data.conftest import MODEL_LANGUAGES
from tests.data.test_sentence_pair import make_dm
from tests.models.helpers import tiny_config
from xmod_lab.data.sampling import LENGTH_POOL_STEPS, LanguageBatchSampler, ShardedEvalSampler
from xmod_lab.models import XmodForSequenceClassification

RNG = np.random.default_rng(0)
N = 3 * LENGTH_POOL_STEPS * 4 + 7  # three pools of 50 steps of 4, and a short last step
LANGS = RNG.integers(0, 3, N)
LENGTHS = RNG.integers(5, 120, N)


def padding_fraction(batches: list[list[int]]) -> float:
    real = sum(LENGTHS[b].sum() for b in batches)
    padded = sum(LENGTHS[b].max() * len(b) for b in batches)
    return 1 - real / padded


@pytest.mark.parametrize("mode", ["mixed", "sorted", "homogeneous"])
def test_grouped_batches_hold_every_example_once_with_less_padding(mode):
    plain = list(LanguageBatchSampler(LANGS, 4, mode=mode, seed=1))
    grouped_sampler = LanguageBatchSampler(LANGS, 4, mode=mode, seed=1, lengths=LENGTHS)
    grouped = list(grouped_sampler)
    assert sorted(i for b in grouped for i in b) == list(range(N))
    assert len(grouped) == len(grouped_sampler)
    assert padding_fraction(grouped) < padding_fraction(plain) / 3
    if mode == "homogeneous":
        assert all(len(set(LANGS[b])) == 1 for b in grouped)
    if mode == "sorted":
        assert all(list(LANGS[b]) == sorted(LANGS[b]) for b in grouped)


def test_grouping_is_seeded_changes_per_epoch_and_is_not_longest_first():
    a = LanguageBatchSampler(LANGS, 4, seed=1, lengths=LENGTHS)
    b = LanguageBatchSampler(LANGS, 4, seed=1, lengths=LENGTHS)
    first = list(a)
    assert first == list(b)
    a.set_epoch(1)
    assert list(a) != first
    longest = [int(LENGTHS[batch].max()) for batch in first]
    assert longest != sorted(longest, reverse=True)  # the steps are shuffled, not one long descent


def test_grouped_sampler_resumes_after_the_consumed_batches(caplog):
    s = LanguageBatchSampler(LANGS, 4, seed=2, lengths=LENGTHS)
    s.set_epoch(2)
    full = list(s)
    it = iter(s)
    for _ in range(7):
        next(it)
    state = s.state_dict()
    resumed = LanguageBatchSampler(LANGS, 4, seed=2, lengths=LENGTHS)
    resumed.load_state_dict(state)
    assert list(resumed) == full[7:]
    ungrouped = LanguageBatchSampler(LANGS, 4, seed=2)  # another plan: restarts the epoch, loudly
    ungrouped.load_state_dict(state)
    assert len(list(ungrouped)) == len(ungrouped) and "group_by_length" in caplog.text


@pytest.mark.parametrize("world", [1, 2])
def test_sorted_eval_batches_cover_each_shard_once_longest_first(world):
    lengths = LENGTHS[:45]
    seen = []
    for rank in range(world):
        sampler = ShardedEvalSampler(45, 8, num_replicas=world, rank=rank, lengths=lengths)
        plain = ShardedEvalSampler(45, 8, num_replicas=world, rank=rank)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert sorted(i for b in batches for i in b) == sorted(i for b in plain for i in b)
        flat = [i for b in batches for i in b]
        assert list(lengths[flat]) == sorted(lengths[flat], reverse=True)
        seen += flat
    assert sorted(seen) == list(range(45))
    with pytest.raises(ValueError, match="lengths has 3 entries for 45 examples"):
        ShardedEvalSampler(45, 8, lengths=[1, 2, 3])


def test_sorted_evaluation_gives_the_same_predictions_and_accuracy(nli_root, tokenizer_dir):
    """Each row's prediction, mapped back through the sampler's indices, and the accuracy are the same."""
    torch.manual_seed(0)
    model = XmodForSequenceClassification(
        tiny_config(
            languages=MODEL_LANGUAGES, vocab_size=2000, max_position_embeddings=200, type_vocab_size=1
        )
    ).eval()
    results = {}
    for sort in (False, True):
        dm = make_dm(nli_root, tokenizer_dir, eval_batch_size=5, sort_eval_by_length=sort)
        dm.setup("validate")
        loader = dm.val_dataloader()[0]
        rows = list(loader.batch_sampler)
        predictions, correct = {}, 0
        with torch.no_grad():
            for indices, batch in zip(rows, loader, strict=True):
                inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "lang_ids")}
                logits = model(**inputs).logits
                correct += int((logits.argmax(-1) == batch["labels"]).sum())
                predictions.update(zip(indices, logits.unbind(0), strict=True))
        results[sort] = (predictions, correct, rows)
    (unsorted, acc_unsorted, order_a), (by_length, acc_sorted, order_b) = results[False], results[True]
    assert order_a != order_b  # the batches really differ
    assert sorted(unsorted) == sorted(by_length) == list(range(12))
    for row, logits in unsorted.items():
        assert torch.allclose(logits, by_length[row], atol=1e-5), row
    assert acc_unsorted == acc_sorted
    dm = make_dm(nli_root, tokenizer_dir, group_by_length=True)
    dm.setup("fit")
    assert sum(len(b["labels"]) for b in dm.train_dataloader()) == 100
