"""Masked / causal language modelling on per-language text (pre-training, adding a language), at any corpus size.

One source per language: plain text files (one line per row), JSONL/CSV/parquet with a text column, a saved
dataset, or a datasets id (``streaming=True`` to read it lazily), through the same ``source`` spec as every other
datamodule. Lines are tokenized without specials and, with ``pack=True``, concatenated per language and cut into
blocks of ``max_length`` tokens (``<s> ... </s>``), so no compute goes to padding; languages are never mixed
inside a block. Preparation is parallel and memory-flat, and its result is cached and shared by later runs and
by every DDP rank (:mod:`xmod_lab.data.corpus`). Masking (15%, 80/10/10) happens in the collator, so every epoch
sees new masks. Training batches can sample languages with p_i proportional to (n_i / N)^alpha; the realised
mix of every epoch is logged (``data/mix/<language>``). The data position is part of a Lightning checkpoint
(:meth:`state_dict`), so a run resumed mid-epoch sees the blocks an uninterrupted run would.
"""

from __future__ import annotations

import atexit
import logging
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
from lightning import LightningDataModule
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from xmod_lab.data.collate import CausalLMCollator, MaskedLMCollator
from xmod_lab.data.common import LazyTokenizer, cache_key, data_setup
from xmod_lab.data.corpus import BlockDataset, BlockEncoder, Blocks, BlockSpec, open_rows, prepare_blocks
from xmod_lab.data.sampling import DataPosition, LanguageBatchSampler, ResumableLoader, ShardedEvalSampler
from xmod_lab.data.sources import SourceSpec

log = logging.getLogger(__name__)


class LanguageModelingDataModule(LightningDataModule):
    """``objective``: ``mlm`` (masked, XLM-R/X-MOD pre-training) or ``clm`` (next token). ``alpha``: language
    sampling exponent for training (None: every block once per epoch). ``holdout``: fraction of each
    language's train rows kept for validation/test when the corpus has no such splits (a single file per
    language); 0 reads the source's own validation/test splits. ``streaming``: read the source lazily
    (``datasets`` streaming) instead of converting it to Arrow first. ``num_proc``: tokenizing processes (None:
    every core). ``batch_lines``: lines tokenized and packed together (each batch ends in one shorter block).
    ``cache_dir``: where prepared blocks are kept and shared (None: a temporary directory for this process).
    ``global_batch_tokens``: the optimizer step's batch in tokens, over every rank: when fitting, the trainer's
    ``accumulate_grad_batches`` is set to global_batch_tokens / (batch_size * max_length * world size), which
    must be a whole number (blocks are ``max_length`` tokens; each ``batch_lines`` batch ends in a shorter one)."""

    def __init__(
        self,
        source: Mapping[str, Any] | str,
        tokenizer: str,
        languages: Sequence[str],
        train_langs: Sequence[str],
        eval_langs: Sequence[str] | None = None,
        text_column: str = "text",
        objective: str = "mlm",
        mlm_probability: float = 0.15,
        max_length: int = 512,
        pack: bool = True,
        holdout: float = 0.0,
        alpha: float | None = None,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        batching: str = "mixed",
        language_map: Mapping[str, str] | None = None,
        cache_dir: str | None = None,
        num_workers: int = 0,
        seed: int = 0,
        max_train_examples: int | None = None,
        max_eval_examples: int | None = None,
        streaming: bool = False,
        num_proc: int | None = None,
        batch_lines: int = 10_000,
        global_batch_tokens: int | None = None,
    ) -> None:
        super().__init__()
        if objective not in ("mlm", "clm"):
            raise ValueError(f"objective must be 'mlm' or 'clm', got {objective!r}.")
        self.spec = data_setup(
            languages, train_langs, eval_langs, language_map, batch_size, eval_batch_size, batching, cache_dir,
            num_workers, seed, max_train_examples, max_eval_examples,
        )  # fmt: skip
        if not 0.0 <= holdout < 1.0:
            raise ValueError(f"holdout must be in [0, 1), got {holdout}.")
        if max_length < 8:
            raise ValueError(f"max_length={max_length} is too short for language modelling blocks.")
        if batch_lines < 1:
            raise ValueError(f"batch_lines must be >= 1, got {batch_lines}.")
        self.source = SourceSpec.coerce(source)
        self.train_languages, self.eval_languages = self.spec.train_languages, self.spec.eval_languages
        self.text_column = text_column
        self.objective = objective
        self.mlm_probability = mlm_probability
        self.max_length = max_length
        self.pack = pack
        self.holdout = holdout
        self.alpha = alpha
        self.streaming = streaming
        self.num_proc = num_proc
        self.batch_lines = batch_lines
        self.global_batch_tokens = global_batch_tokens
        self._tokenizer = LazyTokenizer(tokenizer)
        self._data: dict[str, list[Blocks]] = {}
        self._private_cache: str | None = None
        self.position = DataPosition()

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self._tokenizer.get()

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    @property
    def cache_dir(self) -> str:
        if self.spec.cache_dir is not None:
            return self.spec.cache_dir
        if self._private_cache is None:  # not shared: every process prepares its own copy
            self._private_cache = tempfile.mkdtemp(prefix="xmod-lm-")
            atexit.register(shutil.rmtree, self._private_cache, ignore_errors=True)
            log.info("no data.cache_dir: blocks go to %s for this process only", self._private_cache)
        return self._private_cache

    def blocks(self, lang: str, split: str) -> Blocks:
        """The prepared blocks of one language and split (built on the first call, then read from the cache)."""
        read = "train" if self.holdout else split
        where = self.source.describe(lang, read)
        limit = self.spec.limit(split)
        tok = self.tokenizer
        keep = ("train" if split == "train" else "holdout") if self.holdout else "all"
        spec = BlockSpec(self.text_column, self.max_length, self.pack, tok.cls_token_id, tok.sep_token_id,
                         self.holdout, keep, self.spec.seed)  # fmt: skip
        key = cache_key(
            self.source, lang, read, self._tokenizer.fingerprint, task="lm-blocks", role=keep, column=self.text_column,
            max_length=self.max_length, pack=self.pack, holdout=self.holdout, seed=self.spec.seed if self.holdout
            else None, limit=limit, streaming=self.streaming, batch_lines=self.batch_lines,
        )  # fmt: skip
        raw = str(Path(self.cache_dir) / "raw")

        def rows() -> datasets.Dataset | datasets.IterableDataset:
            return open_rows(self.source, lang, read, raw, self.streaming)

        return prepare_blocks(key, rows, BlockEncoder(tok, spec), self.cache_dir, where, limit, self.batch_lines,
                              self.num_proc)  # fmt: skip

    def _plan(self, stage: str | None) -> list[tuple[str, list[str], list[int]]]:
        return self.spec.stage_splits(stage, lambda split: bool(self.holdout) or self.source.has_split(split))

    def prepare_data(self) -> None:
        # Lightning calls this on one process per node before setup() (the others wait), so the blocks are built
        # once; the file lock in prepare_blocks covers several nodes or runs sharing one cache_dir.
        if self.spec.cache_dir is not None:
            for split, langs, _ in self._plan(None):
                for lang in langs:
                    self.blocks(lang, split)

    def setup(self, stage: str | None = None) -> None:
        for split, langs, _ in self._plan(stage):
            self._data[split] = [self.blocks(lang, split) for lang in langs]
        trainer = self._trainer_or_none()
        if self.global_batch_tokens is not None and trainer is not None and stage in (None, "fit"):
            trainer.accumulate_grad_batches = self.accumulation(trainer.world_size, trainer.accumulate_grad_batches)

    def accumulation(self, world_size: int, configured: int = 1) -> int:
        """The gradient accumulation that makes an optimizer step ``global_batch_tokens`` tokens."""
        per_step = self.spec.batch_size * self.max_length * world_size
        steps, rest = divmod(int(self.global_batch_tokens), per_step)
        if rest or steps < 1:
            raise ValueError(
                f"data.global_batch_tokens={self.global_batch_tokens} is not a multiple of data.batch_size "
                f"({self.spec.batch_size}) x data.max_length ({self.max_length}) x {world_size} processes = {per_step} "
                "tokens per step: change one of them."
            )
        if configured not in (1, steps):
            raise ValueError(
                f"trainer.accumulate_grad_batches={configured} contradicts data.global_batch_tokens, which needs "
                f"{steps}: set only one of them."
            )
        log.info("global batch %d tokens = %d blocks x %d tokens x %d processes x %d accumulated steps",
                 self.global_batch_tokens, self.spec.batch_size, self.max_length, world_size, steps)  # fmt: skip
        return steps

    def _loaded(self, split: str) -> list[Blocks]:
        if split not in self._data:
            raise RuntimeError(
                f"No {split!r} data: call setup() for that stage first, or configure a {split!r} split for "
                f"source {self.source.path!r} (its splits: {self.source.splits})."
            )
        return self._data[split]

    def _collate(self, train: bool):
        tok = self.tokenizer
        if self.objective == "clm":
            return CausalLMCollator(tok.pad_token_id)
        return MaskedLMCollator(
            tok.pad_token_id, tok.mask_token_id, len(tok), tok.all_special_ids, self.mlm_probability,
            seed=None if train else self.spec.seed,
        )  # fmt: skip

    def _log_mix(self, epoch: int, counts: dict[int, int]) -> None:
        """The epoch's realised language mix (the global plan, all ranks together), to the log and the loggers."""
        names = self.spec.languages
        total = sum(counts.values())
        mix = {names[lid]: k / total for lid, k in counts.items()}
        trainer = self._trainer_or_none()
        if trainer is not None and not trainer.is_global_zero:
            return
        log.info("epoch %d language mix (blocks): %s", epoch,
                 ", ".join(f"{lang} {counts[lid]} ({mix[lang]:.1%})" for lid, lang in
                           ((lid, names[lid]) for lid in sorted(counts))))  # fmt: skip
        if trainer is not None:
            for logger in trainer.loggers:
                logger.log_metrics({f"data/mix/{lang}": share for lang, share in mix.items()}, step=trainer.global_step)

    def _trainer_or_none(self):
        return getattr(self, "trainer", None)

    def train_dataloader(self) -> DataLoader:
        parts = self._loaded("train")
        data = BlockDataset([(b.dataset, lid) for b, lid in zip(parts, self.spec.train_lang_ids, strict=True)])
        sampler = LanguageBatchSampler(
            data.example_langs, self.spec.batch_size, mode=self.spec.batching, shuffle=True, alpha=self.alpha,
            seed=self.spec.seed, on_epoch=self._log_mix,
        )  # fmt: skip
        self.position.attach(sampler)
        return ResumableLoader(data, batch_sampler=sampler, collate_fn=self._collate(True),
                          num_workers=self.spec.num_workers, persistent_workers=self.spec.num_workers > 0)  # fmt: skip

    def _eval_loaders(self, split: str) -> list[DataLoader]:
        loaders = []
        for blocks, lid in zip(self._loaded(split), self.spec.eval_lang_ids, strict=True):
            data = BlockDataset([(blocks.dataset, lid)])
            loaders.append(DataLoader(data, batch_sampler=ShardedEvalSampler(len(data), self.spec.eval_batch_size),
                                      collate_fn=self._collate(False), num_workers=self.spec.num_workers))  # fmt: skip
        return loaders

    def val_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("validation")

    def test_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("test")

    def state_dict(self) -> dict[str, Any]:
        """The training data position (saved in checkpoints; a mid-epoch resume continues at the next batch)."""
        return self.position.state_dict(self._trainer_or_none())

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.position.load_state_dict(state_dict)
