"""Token classification (PAN-X / WikiANN NER, UD-POS): one tag per word, predicted on its first subword."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import datasets
from lightning import LightningDataModule
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from xmod_lab.data.collate import IGNORE_INDEX, PadCollator
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

PANX_LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")
UPOS_LABELS = ("ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN", "PUNCT",
               "SCONJ", "SYM", "VERB", "X")  # fmt: skip


def encode_tagged_words(
    ds: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    tokens_column: str,
    tags_column: str,
    label_names: Sequence[str],
    max_length: int,
    where: str,
) -> datasets.Dataset:
    """Tokenize pre-split words; the first subword of a word carries its tag, other subwords and specials -100.

    Words cut by truncation (or that the tokenizer maps to no subword) get no label; they are counted.
    """
    check_columns(ds, [tokens_column, tags_column], where)
    words_all, tags_all = list(ds[tokens_column]), list(ds[tags_column])
    for row, (words, tags) in enumerate(zip(words_all, tags_all, strict=True)):
        if len(words) != len(tags):
            raise ValueError(f"{where}, row {row}: {len(words)} tokens but {len(tags)} tags.")
    enc = tokenizer(words_all, is_split_into_words=True, truncation=True, max_length=max_length)
    labels, unlabeled = [], 0
    for row, tags in enumerate(tags_all):
        tag_ids = [label_index(t, label_names, where, row) for t in tags]
        seq, previous = [], None
        for word in enc.word_ids(row):
            seq.append(tag_ids[word] if word is not None and word != previous else IGNORE_INDEX)
            previous = word
        unlabeled += len(tag_ids) - sum(1 for x in seq if x != IGNORE_INDEX)
        labels.append(seq)
    if unlabeled:
        log.warning(
            "%s: %d words got no label (cut at max_length=%d or no subword)", where, unlabeled, max_length
        )
    return datasets.Dataset.from_dict({"input_ids": enc["input_ids"], "labels": labels})


class TokenClassificationDataModule(LightningDataModule):
    """Like :class:`~xmod_lab.data.SentencePairDataModule` (languages, batching, one eval loader per
    language), for word-tagging data: ``tokens`` (list of words) and a tag column (indices or tag names)."""

    def __init__(
        self,
        source: Mapping[str, Any] | str,
        tokenizer: str,
        languages: Sequence[str],
        train_langs: Sequence[str],
        eval_langs: Sequence[str] | None = None,
        tokens_column: str = "tokens",
        tags_column: str = "ner_tags",
        label_names: Sequence[str] = PANX_LABELS,
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
        self.tokens_column = tokens_column
        self.tags_column = tags_column
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
        self._data: dict[str, list[TaggedDataset]] = {}

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
        tokenizer = self.tokenizer

        def build() -> datasets.Dataset:
            ds = load_split(self._source(split), lang, split)
            if limit is not None:
                ds = ds.select(range(min(limit, len(ds))))
            return encode_tagged_words(
                ds, tokenizer, self.tokens_column, self.tags_column, self.label_names, self.max_length, where
            )

        key = cache_key(
            self._source(split), lang, split, self._tokenizer_fp, task="token_classification",
            columns=[self.tokens_column, self.tags_column], labels=self.label_names, max_length=self.max_length,
            limit=limit,
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
        if self.cache_dir is not None:  # one process per node fills the cache; setup() then only reads
            for split, langs, _ in self._stage_splits(None):
                for lang in langs:
                    self._split(lang, split)

    def setup(self, stage: str | None = None) -> None:
        for split, langs, ids in self._stage_splits(stage):
            self._data[split] = [
                TaggedDataset([(self._split(lang, split), lid)]) for lang, lid in zip(langs, ids, strict=True)
            ]

    def _collate(self) -> PadCollator:
        return PadCollator(self.tokenizer.pad_token_id)

    def train_dataloader(self) -> DataLoader:
        data = TaggedDataset([p.parts[0] for p in loaded(self._data, "train", self._source("train"))])
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
