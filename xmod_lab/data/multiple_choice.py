"""Multiple choice (XCOPA, COPA, SWAG-style): every choice is paired with the context -> input_ids [C, T]."""

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
)
from xmod_lab.data.sources import load_split

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
    check_values(ds, [context_column, *([question_column] if question_column else []), *choices_columns,
                      label_column], where)
    n_rows = len(ds)
    if len(choices_columns) == 1:
        choices = [list(c) for c in ds[choices_columns[0]]]
    else:
        columns = [list(ds[c]) for c in choices_columns]
        choices = [[col[i] for col in columns] for i in range(n_rows)]
    n_choices = len(choices[0])
    for row, c in enumerate(choices):
        if len(c) != n_choices or n_choices < 2:
            raise ValueError(f"{where}, row {row + 1}: {len(c)} choices; every row needs the same number (>= 2).")
    contexts = [str(c) for c in ds[context_column]]
    if question_column:
        contexts = [f"{c} {q}" for c, q in zip(contexts, ds[question_column], strict=True)]
    firsts = [ctx for ctx in contexts for _ in range(n_choices)]
    seconds = [str(x) for c in choices for x in c]
    enc = tokenizer(firsts, seconds, truncation="longest_first", max_length=max_length)["input_ids"]
    input_ids = [enc[i * n_choices : (i + 1) * n_choices] for i in range(n_rows)]
    names = [str(i) for i in range(n_choices)]
    labels = label_indices(list(ds[label_column]), names, where, label_column)
    return datasets.Dataset.from_dict({"input_ids": input_ids, "labels": labels})


class MultipleChoiceDataModule(LanguageDataModule):
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
        super().__init__(source, tokenizer, setup, eval_source)
        self.context_column = context_column
        self.question_column = question_column
        self.choices_columns = [str(c) for c in choices_columns]
        self.label_column = label_column
        self.max_length = max_length

    def _split(self, lang: str, split: str) -> datasets.Dataset:
        where = self._source(split).describe(lang, split)
        limit = self.spec.limit(split)

        def build() -> datasets.Dataset:
            ds = first_rows(load_split(self._source(split), lang, split), limit)
            return encode_choices(
                ds, self.tokenizer, self.context_column, self.question_column, self.choices_columns,
                self.label_column, self.max_length, where,
            )  # fmt: skip

        key = cache_key(
            self._source(split), lang, split, self._tokenizer.fingerprint, task="multiple_choice",
            columns=[self.context_column, self.question_column, *self.choices_columns, self.label_column],
            max_length=self.max_length, limit=limit,
        )  # fmt: skip
        return cached(build, key, self.spec.cache_dir, where)
