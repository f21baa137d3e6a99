"""Sentence-pair classification (XNLI, PAWS-X, synthetic NLI): ``<s> A </s></s> B </s>`` -> a class label."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import datasets
from lightning import LightningDataModule
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from xmod_lab.data.collate import PadCollator
from xmod_lab.data.common import (
    TaggedDataset,
    cache_key,
    cached,
    check_columns,
    eval_loaders,
    label_index,
    loaded,
    resolve_languages,
    train_loader,
)
from xmod_lab.data.sampling import BATCHING_MODES
from xmod_lab.data.sources import SourceSpec, load_split
from xmod_lab.data.tokenizer import load_tokenizer, tokenizer_fingerprint

log = logging.getLogger(__name__)

XNLI_LABELS = ("entailment", "neutral", "contradiction")


def encode_sentence_pairs(
    ds: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    text_columns: Sequence[str],
    label_column: str,
    label_names: Sequence[str],
    max_length: int,
    where: str,
) -> datasets.Dataset:
    """Check columns and labels, drop unlabeled rows (label -1, as in SNLI/MNLI; counted), tokenize."""
    check_columns(ds, [*text_columns, label_column], where)
    raw = list(ds[label_column])
    keep, labels, skipped = [], [], 0
    for row, value in enumerate(raw):
        if value is None or (not isinstance(value, str) and int(value) == -1):
            skipped += 1
            continue
        keep.append(row)
        labels.append(label_index(value, label_names, where, row))
    if skipped:
        log.warning("%s: skipped %d unlabeled rows (label -1 or null)", where, skipped)
    if not keep:
        raise ValueError(f"{where}: no labeled rows.")
    ds = ds.select(keep) if skipped else ds
    texts = [[str(t) for t in ds[c]] for c in text_columns]
    enc = tokenizer(*texts, truncation=True, max_length=max_length)
    return datasets.Dataset.from_dict({"input_ids": enc["input_ids"], "labels": labels})


class SentencePairDataModule(LightningDataModule):
    """Train on ``train_langs``, validate/test on each of ``eval_langs`` separately (one dataloader each,
    named in ``self.eval_languages``). Languages are dataset codes (``de``); ``languages`` is the model's
    adapter list (``config.languages``) that ``lang_ids`` index into."""

    def __init__(
        self,
        source: Mapping[str, Any] | str,
        tokenizer: str,
        languages: Sequence[str],
        train_langs: Sequence[str],
        eval_langs: Sequence[str] | None = None,
        text_columns: Sequence[str] = ("premise", "hypothesis"),
        label_column: str = "label",
        label_names: Sequence[str] = XNLI_LABELS,
        max_length: int = 128,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        batching: str = "mixed",
        language_map: Mapping[str, str] | None = None,
        cache_dir: str | None = None,
        num_workers: int = 0,
        seed: int = 0,
        max_train_examples: int | None = None,
        max_eval_examples: int | None = None,
        eval_source: Mapping[str, Any] | str | None = None,
    ) -> None:
        super().__init__()
        if batching not in BATCHING_MODES:
            raise ValueError(f"Unknown batching {batching!r}; choose one of {BATCHING_MODES}.")
        if len(text_columns) not in (1, 2):
            raise ValueError(f"text_columns must name one or two columns, got {list(text_columns)}.")
        self.source = SourceSpec.coerce(source)
        # zero-shot setups often train on one dataset (MNLI, SQuAD, COPA) and evaluate on another (XNLI, ...)
        self.eval_source = SourceSpec.coerce(eval_source) if eval_source is not None else self.source
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
        self.text_columns = [str(c) for c in text_columns]
        self.label_column = label_column
        self.label_names = [str(x) for x in label_names]
        self.max_length = max_length
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
        self._data: dict[str, Any] = {}

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.tokenizer_name)
            self._tokenizer_fp = tokenizer_fingerprint(self._tokenizer)
        return self._tokenizer

    def _split(self, lang: str, split: str) -> datasets.Dataset:
        where = self._source(split).describe(lang, split)
        limit = self.max_train_examples if split == "train" else self.max_eval_examples

        def build() -> datasets.Dataset:
            ds = load_split(self._source(split), lang, split)
            if limit is not None:
                ds = ds.select(range(min(limit, len(ds))))
            return encode_sentence_pairs(
                ds,
                self.tokenizer,
                self.text_columns,
                self.label_column,
                self.label_names,
                self.max_length,
                where,
            )

        self.tokenizer  # noqa: B018 (loads it and its fingerprint)
        key = cache_key(
            self._source(split), lang, split, self._tokenizer_fp, task="sentence_pair",
            columns=self.text_columns, label_column=self.label_column, labels=self.label_names,
            max_length=self.max_length, limit=limit,
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
        return [p for p in plan if self._source(p[0]).has_split(p[0])]

    def _source(self, split: str) -> SourceSpec:
        return self.source if split == "train" else self.eval_source

    def prepare_data(self) -> None:
        # Runs on one process per node: fill the cache so the other ranks only read it in setup().
        if self.cache_dir is not None:
            for split, langs, _ in self._stage_splits(None):
                for lang in langs:
                    self._split(lang, split)

    def setup(self, stage: str | None = None) -> None:
        for split, langs, ids in self._stage_splits(stage):
            parts = [
                TaggedDataset([(self._split(lang, split), lid)]) for lang, lid in zip(langs, ids, strict=True)
            ]
            self._data[split] = parts

    def _collate(self) -> PadCollator:
        return PadCollator(self.tokenizer.pad_token_id)

    def train_dataloader(self) -> DataLoader:
        parts = loaded(self._data, "train", self._source("train"))
        data = TaggedDataset([p.parts[0] for p in parts])
        return train_loader(
            data, self._collate(), self.batch_size, self.batching, self.seed, self.num_workers
        )

    def val_dataloader(self) -> list[DataLoader]:
        return eval_loaders(
            loaded(self._data, "validation", self._source("validation")),
            self._collate(),
            self.eval_batch_size,
            self.num_workers,
        )

    def test_dataloader(self) -> list[DataLoader]:
        return eval_loaders(
            loaded(self._data, "test", self._source("test")),
            self._collate(),
            self.eval_batch_size,
            self.num_workers,
        )
