"""Multiple choice (XCOPA, COPA, SWAG-style): every choice is paired with the context -> input_ids [C, T]."""

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


def encode_choices(
    ds: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    context_column: str,
    question_column: str | None,
    choices_columns: Sequence[str],
    label_column: str,
    max_length: int,
    where: str,
) -> datasets.Dataset:
    """``<s> context [question] </s></s> choice </s>`` per choice. ``choices_columns``: one column per choice,
    or a single column holding a list of choices (then every row must have the same number)."""
    check_columns(
        ds,
        [context_column, *([question_column] if question_column else []), *choices_columns, label_column],
        where,
    )
    n_rows = len(ds)
    if len(choices_columns) == 1:
        choices = [list(c) for c in ds[choices_columns[0]]]
    else:
        columns = [list(ds[c]) for c in choices_columns]
        choices = [[col[i] for col in columns] for i in range(n_rows)]
    n_choices = len(choices[0])
    for row, c in enumerate(choices):
        if len(c) != n_choices or n_choices < 2:
            raise ValueError(f"{where}, row {row}: {len(c)} choices; every row needs the same number (>= 2).")
    contexts = [str(c) for c in ds[context_column]]
    if question_column:
        contexts = [f"{c} {q}" for c, q in zip(contexts, ds[question_column], strict=True)]
    firsts = [ctx for ctx in contexts for _ in range(n_choices)]
    seconds = [str(x) for c in choices for x in c]
    enc = tokenizer(firsts, seconds, truncation="longest_first", max_length=max_length)["input_ids"]
    input_ids = [enc[i * n_choices : (i + 1) * n_choices] for i in range(n_rows)]
    names = [str(i) for i in range(n_choices)]
    labels = [label_index(v, names, where, row) for row, v in enumerate(ds[label_column])]
    return datasets.Dataset.from_dict({"input_ids": input_ids, "labels": labels})


class MultipleChoiceDataModule(LightningDataModule):
    """Languages, batching and one eval loader per language as in :class:`SentencePairDataModule`;
    batches hold ``input_ids``/``attention_mask`` of shape [B, C, T] and ``labels`` [B] (choice index)."""

    def __init__(
        self,
        source: Mapping[str, Any] | str,
        tokenizer: str,
        languages: Sequence[str],
        train_langs: Sequence[str],
        eval_langs: Sequence[str] | None = None,
        context_column: str = "premise",
        question_column: str | None = "question",
        choices_columns: Sequence[str] = ("choice1", "choice2"),
        label_column: str = "label",
        max_length: int = 128,
        batch_size: int = 16,
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
        self.context_column = context_column
        self.question_column = question_column
        self.choices_columns = [str(c) for c in choices_columns]
        self.label_column = label_column
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
            return encode_choices(
                ds, tokenizer, self.context_column, self.question_column, self.choices_columns, self.label_column,
                self.max_length, where,
            )  # fmt: skip

        key = cache_key(
            self._source(split), lang, split, self._tokenizer_fp, task="multiple_choice",
            columns=[self.context_column, self.question_column, *self.choices_columns, self.label_column],
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
        if self.cache_dir is not None:
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
