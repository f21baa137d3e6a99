import numpy as np
import pytest

from xmod_lab.data.sampling import LanguageBatchSampler, ShardedEvalSampler, language_sampling_probs

# 3 languages, uneven sizes, interleaved in the dataset
LANGS = np.array([0] * 37 + [1] * 20 + [2] * 9)[np.random.default_rng(0).permutation(66)]


def rank_batches(mode, world, batch_size=4, **kw):
    return [
        list(LanguageBatchSampler(LANGS, batch_size, mode=mode, num_replicas=world, rank=r, **kw))
        for r in range(world)
    ]


@pytest.mark.parametrize("mode", ["mixed", "sorted", "homogeneous"])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_every_example_once_per_epoch_on_distinct_ranks(mode, world):
    per_rank = rank_batches(mode, world)
    assert len({len(b) for b in per_rank}) == 1  # same number of steps on every rank (no DDP hang)
    sampler = LanguageBatchSampler(LANGS, 4, mode=mode, num_replicas=world, rank=0)
    assert len(sampler) == len(per_rank[0])
    seen = [i for batches in per_rank for b in batches for i in b]
    # Repeats only fill a last step that has fewer examples than ranks.
    assert set(seen) == set(range(len(LANGS)))
    assert len(seen) - len(LANGS) < world
    for batches in per_rank:
        assert all(1 <= len(b) <= 4 for b in batches)
        if mode == "homogeneous":
            assert all(len(set(LANGS[b])) == 1 for b in batches)
        if mode == "sorted":
            assert all(list(LANGS[b]) == sorted(LANGS[b]) for b in batches)
    if mode == "mixed":
        assert any(len(set(LANGS[b])) > 1 for batches in per_rank for b in batches)


def test_homogeneous_ranks_share_the_language_of_each_step():
    r0, r1 = rank_batches("homogeneous", 2)
    assert [LANGS[a[0]] for a in r0] == [LANGS[b[0]] for b in r1]


def test_epochs_reshuffle_deterministically_and_drop_last():
    s = LanguageBatchSampler(LANGS, 8, seed=1)
    e0 = list(s)
    s.set_epoch(1)
    assert list(s) != e0
    s.set_epoch(0)
    assert list(s) == e0
    dropped = LanguageBatchSampler(LANGS, 8, drop_last=True, num_replicas=2, rank=1)
    assert all(len(b) == 8 for b in dropped) and len(list(dropped)) == len(dropped) == 66 // 16


def test_language_sampling_probabilities_and_epoch_draw():
    p = language_sampling_probs([37, 20, 9], alpha=0.3)
    q = np.array([37, 20, 9]) / 66
    np.testing.assert_allclose(p, q**0.3 / (q**0.3).sum())
    np.testing.assert_allclose(language_sampling_probs([37, 20, 9], 1.0), q)
    counts = np.zeros(3)
    for epoch in range(30):
        s = LanguageBatchSampler(LANGS, 6, mode="homogeneous", alpha=0.3, seed=0)
        s.set_epoch(epoch)
        for b in s:
            assert len(set(LANGS[b])) == 1
            counts[LANGS[b[0]]] += len(b)
    np.testing.assert_allclose(counts / counts.sum(), p, atol=0.02)  # the low-resource language is up-sampled
    assert counts[2] / counts.sum() > 9 / 66 + 0.05


def test_sampled_mode_splits_ranks_disjointly_per_step():
    r0, r1 = rank_batches("mixed", 2, alpha=0.5)
    assert len(r0) == len(r1)
    for a, b in zip(r0, r1, strict=True):
        assert not set(a) & set(b)


def test_sharded_eval_sampler_covers_each_example_once_in_order():
    shards = [list(ShardedEvalSampler(11, 3, num_replicas=3, rank=r)) for r in range(3)]
    flat = [i for s in shards for b in s for i in b]
    assert flat == list(range(11))
    with pytest.raises(ValueError, match="rank 3"):
        ShardedEvalSampler(11, 3, num_replicas=3, rank=3)


def test_sharded_eval_sampler_keeps_groups_on_one_rank():
    groups = ["a", "a", "a", "b", "c", "c", "d", "d", "d", "d"]
    shards = [
        [i for b in ShardedEvalSampler(10, 2, num_replicas=3, rank=r, groups=groups) for i in b]
        for r in range(3)
    ]
    assert [i for s in shards for i in s] == list(range(10))
    owners = {}
    for r, s in enumerate(shards):
        for i in s:
            assert owners.setdefault(groups[i], r) == r


def test_lightning_set_epoch_reaches_the_batch_sampler():
    from lightning.fabric.utilities.data import _set_sampler_epoch
    from torch.utils.data import DataLoader, DistributedSampler

    sampler = LanguageBatchSampler(LANGS, 8, seed=0)
    loader = DataLoader(list(range(len(LANGS))), batch_sampler=sampler)
    first = list(sampler)
    _set_sampler_epoch(loader, 1)
    assert sampler.epoch == 1 and list(sampler) != first
    # an injected DistributedSampler (use_distributed_sampler=True) carries the epoch instead
    injected = LanguageBatchSampler(LANGS, 8, sampler=DistributedSampler(range(66), num_replicas=2, rank=0))
    _set_sampler_epoch(DataLoader(list(range(66)), batch_sampler=injected), 4)
    assert injected.epoch == 4 and injected.num_replicas == 2


@pytest.mark.parametrize("mode", ["mixed", "homogeneous"])
def test_up_sampled_steps_hold_distinct_examples_and_len_is_exact(mode):
    langs = np.array([0] * 200 + [1] * 7)  # language 1 is up-sampled several times over
    for epoch in range(5):
        per_rank = []
        for rank in range(2):
            s = LanguageBatchSampler(langs, 4, mode=mode, alpha=0.2, num_replicas=2, rank=rank, seed=epoch)
            per_rank.append(list(s))
            assert len(s) == len(per_rank[-1])
        for a, b in zip(*per_rank, strict=True):
            if mode == "mixed":
                assert len(set(a + b)) == len(a + b)


def test_state_dict_resumes_after_the_consumed_batches(caplog):
    s = LanguageBatchSampler(LANGS, 4, alpha=0.5, seed=2)
    s.set_epoch(3)
    full = list(s)
    it = iter(s)
    for _ in range(5):
        next(it)
    state = s.state_dict()
    assert state["epoch"] == 3 and state["batches"] == 5
    resumed = LanguageBatchSampler(LANGS, 4, alpha=0.5, seed=2)
    resumed.load_state_dict(state)
    assert resumed.epoch == 3 and list(resumed) == full[5:]
    assert list(resumed) == full  # the skip applies to the resumed pass only
    other = LanguageBatchSampler(LANGS[:50], 4, alpha=0.5, seed=2)  # other data: the epoch restarts, loudly
    other.load_state_dict(state)
    assert len(list(other)) == len(other) and "restarts from its first batch" in caplog.text
