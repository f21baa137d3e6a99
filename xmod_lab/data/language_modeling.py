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
    TaggedDataset,
    cache_key,
    cached,
    check_columns,
    eval_loaders,
    loaded,
    resolve_languages,
    train_loader,
)
from xmod_lab.data.sampling import BATCHING_MODES
from xmod_lab.data.sources import SourceSpec, load_split
from xmod_lab.data.tokenizer import load_tokenizer, tokenizer_fingerprint

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
        if batching not in BATCHING_MODES:
            raise ValueError(f"Unknown batching {batching!r}; choose one of {BATCHING_MODES}.")
        if not 0.0 <= holdout < 1.0:
            raise ValueError(f"holdout must be in [0, 1), got {holdout}.")
        if max_length < 8:
            raise ValueError(f"max_length={max_length} is too short for language modelling blocks.")
        self.source = SourceSpec.coerce(source)
        self.tokenizer_name = str(tokenizer)
        self.languages = [str(x) for x in languages]
        self.language_map = dict(language_map) if language_map else None
        self.train_langs = [str(x) for x in train_langs]
        self.eval_langs = [str(x) for x in (eval_langs if eval_langs is not None else train_langs)]
        self.train_languages, self.train_lang_ids = resolve_languages(
            self.train_langs, self.languages, self.language_map, "train"
        )
        self.eval_languages, self.eval_lang_ids = resolve_languages(
            self.eval_langs, self.languages, self.language_map, "eval"
        )
        self.text_column = text_column
        self.objective = objective
        self.mlm_probability = mlm_probability
        self.max_length = max_length
        self.pack = pack
        self.holdout = holdout
        self.alpha = alpha
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.batching = batching
        self.cache_dir = cache_dir
        self.num_workers = num_workers
        self.seed = seed
        self.max_train_examples = max_train_examples
        self.max_eval_examples = max_eval_examples
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._tokenizer_fp = ""
        self._data: dict[str, list[TaggedDataset]] = {}

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.tokenizer_name)
            self._tokenizer_fp = tokenizer_fingerprint(self._tokenizer)
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def _rows(self, lang: str, split: str) -> datasets.Dataset:
        if not self.holdout:
            return load_split(self.source, lang, split)
        ds = load_split(self.source, lang, "train")
        order = np.random.default_rng([self.seed, len(ds)]).permutation(len(ds))
        n_eval = max(1, int(round(self.holdout * len(ds))))
        if n_eval >= len(ds):
            raise ValueError(
                f"{self.source.describe(lang, 'train')}: {len(ds)} rows cannot spare a holdout of {self.holdout}."
            )
        keep = order[n_eval:] if split == "train" else order[:n_eval]
        return ds.select(np.sort(keep).tolist())

    def _split(self, lang: str, split: str) -> datasets.Dataset:
        where = self.source.describe(lang, split)
        limit = self.max_train_examples if split == "train" else self.max_eval_examples
        tokenizer = self.tokenizer

        def build() -> datasets.Dataset:
            ds = self._rows(lang, split)
            if limit is not None:
                ds = ds.select(range(min(limit, len(ds))))
            return encode_text(ds, tokenizer, self.text_column, self.max_length, self.pack, where)

        key = cache_key(
            self.source, lang, "train" if self.holdout else split, self._tokenizer_fp, task="lm", role=split,
            column=self.text_column, max_length=self.max_length, pack=self.pack, holdout=self.holdout,
            seed=self.seed if self.holdout else None, limit=limit,
        )  # fmt: skip
        return cached(build, key, self.cache_dir, where)

    def _stage_splits(self, stage: str | None) -> list[tuple[str, list[str], list[int]]]:
        plan = []
        if stage in (None, "fit"):
            plan.append(("train", self.train_langs, self.train_lang_ids))
        if stage in (None, "fit", "validate"):
            plan.append(("validation", self.eval_langs, self.eval_lang_ids))
        if stage in (None, "test"):
            plan.append(("test", self.eval_langs, self.eval_lang_ids))
        return [p for p in plan if self.holdout or self.source.has_split(p[0])]

    def prepare_data(self) -> None:
        if self.cache_dir is not None:
            for split, langs, _ in self._stage_splits(None):
                for lang in langs:
                    self._split(lang, split)

    def setup(self, stage: str | None = None) -> None:
        for split, langs, ids in self._stage_splits(stage):
            self._data[split] = [
                TaggedDataset([(self._split(lang, split), lid)]) for lang, lid in zip(langs, ids, strict=True)
            ]

    def _collate(self, train: bool):
        tok = self.tokenizer
        if self.objective == "clm":
            return CausalLMCollator(tok.pad_token_id)
        return MaskedLMCollator(
            tok.pad_token_id, tok.mask_token_id, len(tok), tok.all_special_ids, self.mlm_probability,
            seed=None if train else self.seed,
        )  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        data = TaggedDataset([p.parts[0] for p in loaded(self._data, "train", self.source)])
        return train_loader(
            data,
            self._collate(True),
            self.batch_size,
            self.batching,
            self.seed,
            self.num_workers,
            alpha=self.alpha,
        )

    def val_dataloader(self) -> list[DataLoader]:
        return eval_loaders(
            loaded(self._data, "validation", self.source),
            self._collate(False),
            self.eval_batch_size,
            self.num_workers,
        )

    def test_dataloader(self) -> list[DataLoader]:
        return eval_loaders(
            loaded(self._data, "test", self.source),
            self._collate(False),
            self.eval_batch_size,
            self.num_workers,
        )
