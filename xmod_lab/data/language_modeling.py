"""Masked / causal language modelling on per-language text (pre-training, adding a language).

One source per language: plain text files (one line per row), JSONL/CSV/parquet with a text column, or a
datasets id, through the same ``source`` spec as every other datamodule. Lines are tokenized without
specials and, with ``pack=True``, concatenated per language and cut into blocks of ``max_length`` tokens
(``<s> ... </s>``), so no compute goes to padding; languages are never mixed inside a block. Masking
(15%, 80/10/10) happens in the collator, so every epoch sees new masks. Training batches can sample
languages with p_i proportional to (n_i / N)^alpha.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import datasets
import numpy as np
from lightning import LightningDataModule
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from xmod_lab.data.collate import CausalLMCollator, MaskedLMCollator
from xmod_lab.data.common import (
    LazyTokenizer,
    TaggedDataset,
    cache_key,
    cached,
    check_columns,
    data_setup,
    eval_loaders,
    first_rows,
    tagged_splits,
    train_loader,
)
from xmod_lab.data.sources import SourceSpec, load_split

log = logging.getLogger(__name__)


def encode_text(
    ds: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    text_column: str,
    max_length: int,
    pack: bool,
    where: str,
) -> datasets.Dataset:
    """Token blocks of at most ``max_length`` (specials included); empty lines are dropped (counted)."""
    check_columns(ds, [text_column], where)
    texts = [t for t in ds[text_column] if isinstance(t, str) and t.strip()]
    if len(texts) < len(ds):
        log.info("%s: dropped %d empty lines", where, len(ds) - len(texts))
    if not texts:
        raise ValueError(f"{where}: no non-empty text in column {text_column!r}.")
    bos, eos = tokenizer.cls_token_id, tokenizer.sep_token_id
    body = max_length - 2
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    if pack:
        stream = np.fromiter((t for seq in ids for t in seq), dtype=np.int64)
        blocks = [[bos, *stream[i : i + body].tolist(), eos] for i in range(0, len(stream), body)]
    else:
        blocks = [[bos, *seq[:body], eos] for seq in ids if seq]
    return datasets.Dataset.from_dict({"input_ids": blocks})


class LanguageModelingDataModule(LightningDataModule):
    """``objective``: ``mlm`` (masked, XLM-R/X-MOD pre-training) or ``clm`` (next token). ``alpha``: language
    sampling exponent for training (None: every block once per epoch). ``holdout``: fraction of each
    language's train rows kept for validation/test when the corpus has no such splits (a single file per
    language); 0 reads the source's own validation/test splits."""

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
        self.source = SourceSpec.coerce(source)
        self.train_languages, self.eval_languages = self.spec.train_languages, self.spec.eval_languages
        self.text_column = text_column
        self.objective = objective
        self.mlm_probability = mlm_probability
        self.max_length = max_length
        self.pack = pack
        self.holdout = holdout
        self.alpha = alpha
        self._tokenizer = LazyTokenizer(tokenizer)
        self._data: dict[str, list[TaggedDataset]] = {}

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self._tokenizer.get()

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def _rows(self, lang: str, split: str) -> datasets.Dataset:
        if not self.holdout:
            return load_split(self.source, lang, split)
        ds = load_split(self.source, lang, "train")
        order = np.random.default_rng([self.spec.seed, len(ds)]).permutation(len(ds))
        n_eval = max(1, int(round(self.holdout * len(ds))))
        if n_eval >= len(ds):
            raise ValueError(
                f"{self.source.describe(lang, 'train')}: {len(ds)} rows cannot spare a holdout of {self.holdout}."
            )
        keep = order[n_eval:] if split == "train" else order[:n_eval]
        return ds.select(np.sort(keep).tolist())

    def _split(self, lang: str, split: str) -> datasets.Dataset:
        where = self.source.describe(lang, split)
        limit = self.spec.limit(split)

        def build() -> datasets.Dataset:
            ds = first_rows(self._rows(lang, split), limit)
            return encode_text(ds, self.tokenizer, self.text_column, self.max_length, self.pack, where)

        key = cache_key(
            self.source, lang, "train" if self.holdout else split, self._tokenizer.fingerprint, task="lm",
            role=split, column=self.text_column, max_length=self.max_length, pack=self.pack, holdout=self.holdout,
            seed=self.spec.seed if self.holdout else None, limit=limit,
        )  # fmt: skip
        return cached(build, key, self.spec.cache_dir, where)

    def _plan(self, stage: str | None) -> list[tuple[str, list[str], list[int]]]:
        return self.spec.stage_splits(stage, lambda split: bool(self.holdout) or self.source.has_split(split))

    def prepare_data(self) -> None:
        if self.spec.cache_dir is not None:
            tagged_splits(self._plan(None), self._split)

    def setup(self, stage: str | None = None) -> None:
        self._data.update(tagged_splits(self._plan(stage), self._split))

    def _collate(self, train: bool):
        tok = self.tokenizer
        if self.objective == "clm":
            return CausalLMCollator(tok.pad_token_id)
        return MaskedLMCollator(
            tok.pad_token_id, tok.mask_token_id, len(tok), tok.all_special_ids, self.mlm_probability,
            seed=None if train else self.spec.seed,
        )  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        return train_loader(self._data, self.source, self._collate(True), self.spec, alpha=self.alpha)

    def val_dataloader(self) -> list[DataLoader]:
        return eval_loaders(self._data, "validation", self.source, self._collate(False), self.spec)

    def test_dataloader(self) -> list[DataLoader]:
        return eval_loaders(self._data, "test", self.source, self._collate(False), self.spec)
