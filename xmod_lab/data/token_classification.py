"""Token classification (PAN-X / WikiANN NER, UD-POS): one tag per word, predicted on its first subword."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import datasets
from transformers import PreTrainedTokenizerBase

from xmod_lab.data.collate import IGNORE_INDEX
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
    check_values(ds, [tokens_column, tags_column], where)
    words_all, tags_all = list(ds[tokens_column]), list(ds[tags_column])
    for row, (words, tags) in enumerate(zip(words_all, tags_all, strict=True)):
        if len(words) != len(tags):
            raise ValueError(f"{where}, row {row + 1}: {len(words)} tokens but {len(tags)} tags.")
    tag_ids_all = label_indices(tags_all, label_names, where, tags_column)  # decimals, nulls, booleans: errors
    enc = tokenizer(words_all, is_split_into_words=True, truncation=True, max_length=max_length)
    labels, unlabeled = [], 0
    for row, tag_ids in enumerate(tag_ids_all):
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


class TokenClassificationDataModule(LanguageDataModule):
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
        self.tokens_column = tokens_column
        self.tags_column = tags_column
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
            return encode_tagged_words(
                ds, self.tokenizer, self.tokens_column, self.tags_column, self.label_names, self.max_length, where
            )  # fmt: skip

        key = cache_key(
            self._source(split), lang, split, self._tokenizer.fingerprint, task="token_classification",
            columns=[self.tokens_column, self.tags_column], labels=self.label_names, max_length=self.max_length,
            limit=limit,
        )  # fmt: skip
        return cached(build, key, self.spec.cache_dir, where)
