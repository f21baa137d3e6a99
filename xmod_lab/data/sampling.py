"""Language-aware, DDP-aware batch samplers.

Batching modes (``batching`` in the data configs):

* ``mixed``: examples shuffled across languages; a batch mixes languages.
* ``sorted``: as ``mixed``, but each batch is ordered by language, so the model runs one adapter call per
  distinct language instead of per run of equal ids.
* ``homogeneous``: every batch holds one language (one adapter call per layer; under DDP all ranks get the
  same language at the same step, so the same adapters get gradients everywhere).

With ``alpha`` set (multilingual MLM), each epoch first draws its examples by language with
p_i proportional to (n_i / N)^alpha (XLM-R / X-MOD sampling; low-resource languages are up-sampled), then
batches them by the mode above.

DDP: every rank builds the same global plan from (seed, epoch) and takes its own share of every global
step, so ranks see distinct examples and the same number of batches. Without sampling and with
``drop_last=False`` every example appears once per epoch; the only repeats fill the last step when it has
fewer examples than ranks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import BatchSampler, DistributedSampler, Sampler

BATCHING_MODES = ("mixed", "sorted", "homogeneous")


def distributed_context(
    num_replicas: int | None = None, rank: int | None = None, sampler: Sampler | None = None
) -> tuple[int, int]:
    """(world size, rank): from the arguments, else from a DistributedSampler Lightning injected, else from
    torch.distributed when it is initialised, else (1, 0)."""
    if isinstance(sampler, DistributedSampler):
        num_replicas = sampler.num_replicas if num_replicas is None else num_replicas
        rank = sampler.rank if rank is None else rank
    if num_replicas is None or rank is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            num_replicas = torch.distributed.get_world_size() if num_replicas is None else num_replicas
            rank = torch.distributed.get_rank() if rank is None else rank
        else:
            num_replicas = 1 if num_replicas is None else num_replicas
            rank = 0 if rank is None else rank
    if not 0 <= rank < num_replicas:
        raise ValueError(f"rank {rank} is outside [0, {num_replicas}).")
    return num_replicas, rank


def language_sampling_probs(counts: Sequence[int], alpha: float) -> np.ndarray:
    """p_i proportional to (n_i / N)^alpha; alpha=1 keeps the natural distribution, alpha=0 is uniform."""
    n = np.asarray(counts, dtype=np.float64)
    q = (n / n.sum()) ** alpha
    q[n == 0] = 0.0
    return q / q.sum()


class _EpochHolder:
    """Stands in for a sampler so that the epoch Lightning sets reaches the batch sampler."""

    epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


class LanguageBatchSampler(BatchSampler):
    """Yields this rank's batches of dataset indices; ``example_langs[i]`` is example i's language id.

    A ``BatchSampler`` with a ``sampler`` argument only so that Lightning, when it injects a
    DistributedSampler (``use_distributed_sampler=True``), hands over the rank and world size; its order is
    not used. With ``use_distributed_sampler=False`` the rank comes from torch.distributed.
    """

    def __init__(
        self,
        example_langs: Sequence[int],
        batch_size: int,
        mode: str = "mixed",
        shuffle: bool = True,
        alpha: float | None = None,
        seed: int = 0,
        drop_last: bool = False,
        num_replicas: int | None = None,
        rank: int | None = None,
        sampler: Sampler | None = None,
    ) -> None:
        if mode not in BATCHING_MODES:
            raise ValueError(f"Unknown batching mode {mode!r}; choose one of {BATCHING_MODES}.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        if len(example_langs) == 0:
            raise ValueError("Cannot batch an empty dataset.")
        self.example_langs = np.asarray(example_langs, dtype=np.int64)
        self.batch_size = batch_size
        self.mode = mode
        self.shuffle = shuffle
        self.alpha = alpha
        self.seed = seed
        self.drop_last = drop_last
        self.num_replicas, self.rank = distributed_context(num_replicas, rank, sampler)
        # Lightning calls set_epoch on `batch_sampler.sampler`, never on the batch sampler itself.
        self.sampler = sampler if sampler is not None else _EpochHolder()
        self._by_lang = {
            int(lang): np.flatnonzero(self.example_langs == lang) for lang in np.unique(self.example_langs)
        }

    @property
    def epoch(self) -> int:
        return int(getattr(self.sampler, "epoch", 0))

    def set_epoch(self, epoch: int) -> None:
        """A new shuffle per epoch, identical on every rank (Lightning reaches it through ``self.sampler``)."""
        self.sampler.set_epoch(epoch)

    def _epoch_indices(self, rng: np.random.Generator) -> dict[int, np.ndarray]:
        """Per language, the indices this epoch uses, in order (shuffled or not, resampled when alpha is set)."""
        langs = sorted(self._by_lang)
        pools = {
            lang: (rng.permutation(self._by_lang[lang]) if self.shuffle else self._by_lang[lang])
            for lang in langs
        }
        if self.alpha is None:
            return pools
        counts = [len(pools[lang]) for lang in langs]
        total = sum(counts)
        probs = language_sampling_probs(counts, self.alpha)
        drawn = rng.multinomial(total, probs) if self.shuffle else np.round(probs * total).astype(int)
        # Without replacement while a language lasts, cycling its (shuffled) pool when up-sampled.
        return {lang: np.resize(pools[lang], int(k)) for lang, k in zip(langs, drawn, strict=True) if k > 0}

    def _global_steps(self) -> list[np.ndarray]:
        """The epoch's global steps: each a chunk of up to batch_size * num_replicas indices."""
        rng = np.random.default_rng([self.seed, self.epoch])
        pools = self._epoch_indices(rng)
        step_size = self.batch_size * self.num_replicas
        if self.mode == "homogeneous":
            steps = [
                pool[i : i + step_size] for pool in pools.values() for i in range(0, len(pool), step_size)
            ]
            if self.drop_last:
                steps = [s for s in steps if len(s) == step_size]
            if self.shuffle:
                steps = [steps[i] for i in rng.permutation(len(steps))]
            return steps
        order = np.concatenate(list(pools.values()))
        if self.shuffle:
            order = rng.permutation(order)
        steps = [order[i : i + step_size] for i in range(0, len(order), step_size)]
        if self.drop_last and steps and len(steps[-1]) < step_size:
            steps.pop()
        return steps

    def _rank_share(self, step: np.ndarray) -> np.ndarray:
        if len(step) < self.num_replicas:  # too few for one each: repeat examples of the same step
            step = np.resize(step, self.num_replicas)
        bounds = np.linspace(0, len(step), self.num_replicas + 1).round().astype(int)
        return step[bounds[self.rank] : bounds[self.rank + 1]]

    def __iter__(self) -> Iterator[list[int]]:
        for step in self._global_steps():
            batch = self._rank_share(step)
            if self.mode == "sorted":
                batch = batch[np.argsort(self.example_langs[batch], kind="stable")]
            yield batch.tolist()

    def __len__(self) -> int:
        if self.alpha is None and self.mode != "homogeneous":
            n, step = len(self.example_langs), self.batch_size * self.num_replicas
            return n // step if self.drop_last else math.ceil(n / step)
        return len(self._global_steps())


class ShardedEvalSampler(BatchSampler):
    """In-order evaluation batches of this rank's contiguous shard: no example repeated, so metrics are exact
    after gathering (ranks may get one batch more or less; evaluation does not synchronise gradients).
    ``sampler``: as in :class:`LanguageBatchSampler`."""

    def __init__(
        self,
        size: int,
        batch_size: int,
        num_replicas: int | None = None,
        rank: int | None = None,
        sampler: Sampler | None = None,
        drop_last: bool = False,
        groups: Sequence | None = None,
    ) -> None:
        self.size = size
        self.batch_size = batch_size
        self.drop_last = False  # evaluation never drops examples
        self.sampler = sampler
        self.num_replicas, self.rank = distributed_context(num_replicas, rank, sampler)
        bounds = np.linspace(0, size, self.num_replicas + 1).round().astype(int)
        if (
            groups is not None
        ):  # move each cut to the next group start (QA: all features of an example together)
            if len(groups) != size:
                raise ValueError(f"groups has {len(groups)} entries for {size} examples.")
            starts = np.array([0] + [i for i in range(1, size) if groups[i] != groups[i - 1]] + [size])
            bounds = starts[np.searchsorted(starts, bounds)]
        self.start, self.stop = int(bounds[self.rank]), int(bounds[self.rank + 1])

    def __iter__(self) -> Iterator[list[int]]:
        for i in range(self.start, self.stop, self.batch_size):
            yield list(range(i, min(i + self.batch_size, self.stop)))

    def __len__(self) -> int:
        return math.ceil((self.stop - self.start) / self.batch_size)
