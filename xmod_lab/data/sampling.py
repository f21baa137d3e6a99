"""Language-aware, DDP-aware batch samplers.

Batching modes (``batching`` in the data configs):

* ``mixed``: examples shuffled across languages; a batch mixes languages.
* ``sorted``: as ``mixed``, but each batch is ordered by language, so the model runs one adapter call per
  distinct language instead of per run of equal ids.
* ``homogeneous``: every batch holds one language (one adapter call per layer; under DDP all ranks get the
  same language at the same step, so the same adapters get gradients everywhere).

Length grouping (``group_by_length``, training): as transformers' ``group_by_length``, the epoch's shuffled
order is cut into pools of ``LENGTH_POOL_STEPS`` global steps, each pool is sorted by length (longest first)
and cut into steps, and the steps are shuffled: a batch holds examples of similar length, so little of it is
padding, while which examples meet still changes every epoch. Evaluation (``ShardedEvalSampler`` with
``lengths``) batches each rank's shard longest first; every example is still scored exactly once.

With ``alpha`` set (multilingual MLM), each epoch first takes its examples by language with
p_i proportional to (n_i / N)^alpha (XLM-R / X-MOD sampling; low-resource languages are up-sampled): an epoch of
N examples holds round(p_i * N) of language i (largest remainders, so the realised mix is the configured one to
one example), each language's pool reshuffled per pass when it is up-sampled; then batches them by the mode above.

Resuming: ``state_dict()`` records the epoch and the batches already consumed; after ``load_state_dict()`` the
next pass over that epoch skips them, so a resumed run sees the batches an uninterrupted one would.

DDP: every rank builds the same global plan from (seed, epoch) and takes its own share of every global
step, so ranks see distinct examples and the same number of batches. Without sampling and with
``drop_last=False`` every example appears once per epoch; the only repeats fill the last step when it has
fewer examples than ranks.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DistributedSampler, Sampler

log = logging.getLogger(__name__)

BATCHING_MODES = ("mixed", "sorted", "homogeneous")
LENGTH_POOL_STEPS = 50  # transformers' LengthGroupedSampler: megabatches of 50 batches


def by_length(order: np.ndarray, lengths: np.ndarray, pool: int) -> np.ndarray:
    """``order`` with each run of ``pool`` entries sorted longest first (stable: ties keep the shuffle)."""
    runs = [order[i : i + pool] for i in range(0, len(order), pool)]
    return np.concatenate([r[np.argsort(-lengths[r], kind="stable")] for r in runs]) if runs else order


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


def apportion(total: int, probs: np.ndarray) -> np.ndarray:
    """Integer counts summing to ``total``, proportional to ``probs`` (largest-remainder rounding)."""
    exact = np.asarray(probs, dtype=np.float64) * total
    counts = np.floor(exact).astype(np.int64)
    short = int(total - counts.sum())
    if short > 0:
        counts[np.argsort(-(exact - counts), kind="stable")[:short]] += 1
    return counts


def language_sampling_probs(counts: Sequence[int], alpha: float) -> np.ndarray:
    """p_i proportional to (n_i / N)^alpha; alpha=1 keeps the natural distribution, alpha=0 is uniform."""
    n = np.asarray(counts, dtype=np.float64)
    q = (n / n.sum()) ** alpha
    q[n == 0] = 0.0
    return q / q.sum()


def _separate_repeats(order: np.ndarray, step_size: int, rng: np.random.Generator) -> np.ndarray:
    """Swap examples so that no global step holds one twice (up-sampled languages repeat examples; two copies
    in one step would put the same block on two ranks, or twice in one batch). Leaves the counts unchanged."""
    order = order.copy()
    steps = np.arange(len(order)) // step_size
    key = steps * (int(order.max()) + 1) + order
    ranked = np.argsort(key, kind="stable")
    repeats = ranked[1:][key[ranked[1:]] == key[ranked[:-1]]]  # positions holding a second copy within a step
    n_steps = -(-len(order) // step_size)
    for pos in repeats:
        here = int(steps[pos])
        mine = order[here * step_size : (here + 1) * step_size]
        for there in rng.integers(0, n_steps, size=64 * n_steps if n_steps > 1 else 0):
            theirs = order[there * step_size : (there + 1) * step_size]
            if there == here or order[pos] in theirs:
                continue
            free = [j for j, x in enumerate(theirs) if x not in mine]
            if free:
                other = int(there) * step_size + free[int(rng.integers(len(free)))]
                order[pos], order[other] = order[other], order[pos]
                break
    return order


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
        on_epoch: Callable[[int, dict[int, int]], None] | None = None,
        lengths: Sequence[int] | None = None,
    ) -> None:
        """``lengths`` (one per example, e.g. tokens): given, batches are grouped by length (module doc)."""
        if mode not in BATCHING_MODES:
            raise ValueError(f"Unknown batching mode {mode!r}; choose one of {BATCHING_MODES}.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        if len(example_langs) == 0:
            raise ValueError("Cannot batch an empty dataset.")
        self.example_langs = np.asarray(example_langs, dtype=np.int64)
        self.lengths = None if lengths is None else np.asarray(lengths, dtype=np.int64)
        if self.lengths is not None and self.lengths.shape != self.example_langs.shape:
            raise ValueError(f"lengths has {len(self.lengths)} entries for {len(self.example_langs)} examples.")
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
        self.on_epoch = on_epoch  # called with (epoch, examples per language id) as each pass starts
        self.yielded = 0  # batches yielded in the current pass (including those a resume skipped)
        self._resume: tuple[int, int] | None = None

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
        drawn = self.language_counts()
        out = {}
        for lang in langs:
            k, pool = drawn[lang], pools[lang]
            if k == 0:
                continue
            # Without replacement while a language lasts; an up-sampled one repeats in a fresh order per pass.
            passes = [pool] + [
                rng.permutation(pool) if self.shuffle else pool for _ in range(-(-k // len(pool)) - 1)
            ]
            out[lang] = np.concatenate(passes)[:k]
        return out

    def language_counts(self) -> dict[int, int]:
        """Examples per language id in every epoch's global plan (all ranks together)."""
        langs = sorted(self._by_lang)
        sizes = [len(self._by_lang[lang]) for lang in langs]
        if self.alpha is None:
            return dict(zip(langs, sizes, strict=True))
        counts = apportion(sum(sizes), language_sampling_probs(sizes, self.alpha))
        return {lang: int(k) for lang, k in zip(langs, counts, strict=True)}

    def _global_steps(self) -> list[np.ndarray]:
        """The epoch's global steps: each a chunk of up to batch_size * num_replicas indices."""
        rng = np.random.default_rng([self.seed, self.epoch])
        pools = self._epoch_indices(rng)
        step_size = self.batch_size * self.num_replicas
        grouped = self.lengths is not None
        if grouped:
            pools = {lang: by_length(pool, self.lengths, LENGTH_POOL_STEPS * step_size) for lang, pool in pools.items()}
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
        if grouped:
            order = by_length(order, self.lengths, LENGTH_POOL_STEPS * step_size)
        if self.alpha is not None:
            order = _separate_repeats(order, step_size, rng)
        steps = [order[i : i + step_size] for i in range(0, len(order), step_size)]
        if self.drop_last and steps and len(steps[-1]) < step_size:
            steps.pop()
        if grouped and self.shuffle:  # pools come out longest first: shuffle which step comes when
            steps = [steps[i] for i in rng.permutation(len(steps))]
        return steps

    def _rank_share(self, step: np.ndarray) -> np.ndarray:
        if self.num_replicas == 1 and len(step):  # one process: the whole step (linspace per batch is not free)
            return step
        if len(step) < self.num_replicas:  # too few for one each: repeat examples of the same step
            step = np.resize(step, self.num_replicas)
        bounds = np.linspace(0, len(step), self.num_replicas + 1).round().astype(int)
        return step[bounds[self.rank] : bounds[self.rank + 1]]

    def state_dict(self) -> dict[str, Any]:
        """The data position: this epoch and the batches of it already yielded, plus what the plan depends on."""
        return {"epoch": self.epoch, "batches": self.yielded, "step_size": self.batch_size * self.num_replicas,
                "examples_per_language": {str(k): len(v) for k, v in self._by_lang.items()},
                "alpha": self.alpha, "mode": self.mode, "seed": self.seed,
                "group_by_length": self.lengths is not None}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``: the next pass over ``state['epoch']`` skips its first ``batches`` batches.
        A plan that no longer matches (other data, seed, batching, global batch size) cannot be resumed exactly:
        that is logged as a warning and the epoch starts over (data) or is skipped approximately (batch size)."""
        epoch, batches = int(state["epoch"]), int(state["batches"])
        self.set_epoch(epoch)
        mine = self.state_dict()
        changed = [k for k in ("examples_per_language", "alpha", "mode", "seed") if state.get(k) != mine[k]]
        if state.get("group_by_length", False) != mine["group_by_length"]:  # older checkpoints: not grouped
            changed.append("group_by_length")
        if changed:
            log.warning(
                "The checkpoint's data order was made with other %s (%s, now %s): epoch %d restarts from its first "
                "batch instead of batch %d.", changed, [state.get(k) for k in changed], [mine[k] for k in changed],
                epoch, batches,
            )  # fmt: skip
            batches = 0
        elif state["step_size"] != mine["step_size"]:
            consumed = batches * int(state["step_size"])
            batches = consumed // mine["step_size"]
            log.warning(
                "The checkpoint was written with a global batch of %d examples, this run has %d: resuming epoch %d "
                "after %d examples is exact only to a step (batch %d).", state["step_size"], mine["step_size"],
                epoch, consumed, batches,
            )  # fmt: skip
        self._resume = (epoch, batches)

    def __iter__(self) -> Iterator[list[int]]:
        skip = 0
        if self._resume is not None:
            if self._resume[0] == self.epoch:
                skip = self._resume[1]
            self._resume = None
        if self.on_epoch is not None:
            self.on_epoch(self.epoch, self.language_counts())
        self.yielded = skip
        for step in self._global_steps()[skip:]:
            batch = self._rank_share(step)
            if self.mode == "sorted":
                batch = batch[np.argsort(self.example_langs[batch], kind="stable")]
            self.yielded += 1
            yield batch.tolist()

    def __len__(self) -> int:
        step = self.batch_size * self.num_replicas
        counts = self.language_counts().values()
        if self.mode == "homogeneous":  # steps never span two languages
            return sum(k // step if self.drop_last else -(-k // step) for k in counts)
        n = sum(counts)
        return n // step if self.drop_last else math.ceil(n / step)


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
        lengths: Sequence[int] | None = None,
    ) -> None:
        """``lengths`` (one per example): batch each shard longest first instead of in order."""
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
        self.order = np.arange(self.start, self.stop)
        if lengths is not None:
            if len(lengths) != size:
                raise ValueError(f"lengths has {len(lengths)} entries for {size} examples.")
            self.order = by_length(self.order, np.asarray(lengths, dtype=np.int64), len(self.order))

    def __iter__(self) -> Iterator[list[int]]:
        for i in range(0, len(self.order), self.batch_size):
            yield self.order[i : i + self.batch_size].tolist()

    def __len__(self) -> int:
        return math.ceil((self.stop - self.start) / self.batch_size)


class ResumableLoader(torch.utils.data.DataLoader):
    """A DataLoader that tells Lightning it resumes mid-epoch (so it does not warn that it cannot): the data
    position itself is saved and restored by the datamodule (:class:`DataPosition`), which counts the batches
    the trainer consumed rather than those the loader prefetched."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass


class DataPosition:
    """Where a datamodule's training data stands, saved in every Lightning checkpoint (the datamodule's
    ``state_dict``) and restored on resume, the same way for every datamodule: the sampler's plan (epoch, seed,
    batching, mix) and the batches of the epoch the trainer consumed. A run resumed mid-epoch then sees exactly
    the batches an uninterrupted run would have seen next."""

    def __init__(self) -> None:
        self.sampler: LanguageBatchSampler | None = None
        self._pending: dict[str, Any] | None = None

    def attach(self, sampler: LanguageBatchSampler) -> LanguageBatchSampler:
        """The training sampler a new train_dataloader() uses, continuing from a restored position if any."""
        if self._pending is not None:
            sampler.load_state_dict(self._pending)
            self._pending = None
        self.sampler = sampler
        return sampler

    def state_dict(self, trainer: Any = None) -> dict[str, Any]:
        """Batches are counted as the trainer consumed them (the loader prefetches ahead of it); a finished
        epoch is recorded as the start of the next one."""
        if self.sampler is None:
            return dict(self._pending or {})
        state = self.sampler.state_dict()
        if trainer is not None and trainer.state.fn == "fit":
            state["batches"] = int(trainer.fit_loop.epoch_loop.batch_progress.current.ready)
            if state["batches"] >= trainer.num_training_batches:
                state["epoch"], state["batches"] = state["epoch"] + 1, 0
        return state

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        self._pending = dict(state) if state else None  # applied to the sampler train_dataloader() builds next
