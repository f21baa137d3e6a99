"""Sentence-pair classification (XNLI, PAWS-X, synthetic NLI): ``<s> A </s></s> B </s>`` -> a class label."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import datasets
from transformers import PreTrainedTokenizerBase

from xmod_lab.data.common import (
    LanguageDataModule,
    cache_key,
    cached,
    check_columns,
    check_values,
    data_setup,
    first_rows,
    label_indices,
    with_skipped,
)
from xmod_lab.data.sources import load_split

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
    """Check columns and labels, drop unlabeled rows (label -1, as in SNLI/MNLI; listed and counted), tokenize.
    Any other label must be one of ``label_names`` (an index or a name): decimals, booleans and nulls are errors."""
    check_columns(ds, [*text_columns, label_column], where)
    check_values(ds, [*text_columns, label_column], where)
    raw = list(ds[label_column])
    unlabeled = [row for row, value in enumerate(raw) if value == -1 and not isinstance(value, bool | float)
                 or value == "-1"]
    if len(unlabeled) == len(raw):
        raise ValueError(f"{where}: no labeled rows (every {label_column!r} is -1).")
    labels = label_indices(raw, label_names, where, label_column, skip=unlabeled)
    if unlabeled:
        ds = ds.select(sorted(set(range(len(raw))) - set(unlabeled)))
    texts = [[str(t) for t in ds[c]] for c in text_columns]
    enc = tokenizer(*texts, truncation=True, max_length=max_length)
    out = datasets.Dataset.from_dict({"input_ids": enc["input_ids"], "labels": labels})
    return with_skipped(out, [r + 1 for r in unlabeled], f"{label_column} -1: unlabeled", where)


class SentencePairDataModule(LanguageDataModule):
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
        group_by_length: bool | None = None,
        sort_eval_by_length: bool | None = None,
        language_map: Mapping[str, str] | None = None,
        cache_dir: str | None = None,
        num_workers: int = 0,
        seed: int = 0,
        max_train_examples: int | None = None,
        max_eval_examples: int | None = None,
        eval_source: Mapping[str, Any] | str | None = None,
    ) -> None:
        setup = data_setup(
            languages, train_langs, eval_langs, language_map, batch_size, eval_batch_size, batching, cache_dir,
            num_workers, seed, max_train_examples, max_eval_examples, group_by_length, sort_eval_by_length,
        )  # fmt: skip
        if len(text_columns) not in (1, 2):
            raise ValueError(f"text_columns must name one or two columns, got {list(text_columns)}.")
        super().__init__(source, tokenizer, setup, eval_source)
        self.text_columns = [str(c) for c in text_columns]
        self.label_column = label_column
        self.label_names = [str(x) for x in label_names]
        self.max_length = max_length

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def _split(self, lang: str, split: str) -> datasets.Dataset:
        where = self._source(split).describe(lang, split)
        limit = self.spec.limit(split)

        def build() -> datasets.Dataset:
            ds = first_rows(load_split(self._source(split), lang, split), limit)
            return encode_sentence_pairs(
                ds, self.tokenizer, self.text_columns, self.label_column, self.label_names, self.max_length,
                where,
            )  # fmt: skip

        key = cache_key(
            self._source(split), lang, split, self._tokenizer.fingerprint, task="sentence_pair",
            columns=self.text_columns, label_column=self.label_column, labels=self.label_names,
            max_length=self.max_length, limit=limit,
        )  # fmt: skip
        return cached(build, key, self.spec.cache_dir, where)
