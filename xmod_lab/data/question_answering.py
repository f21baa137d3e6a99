"""Extractive QA (SQuAD v1.1, XQuAD, MLQA, TyDiQA-GoldP): features over long contexts, and back to text.

Training features: ``<s> question </s></s> context-window </s>`` with ``start_positions``/``end_positions``
(0, the ``<s>`` index, when the answer is not inside the window). Evaluation features also keep
``example_id`` and ``offset_mapping`` (character span of each context token, (-1, -1) elsewhere), so
:func:`postprocess_predictions` maps start/end logits back to answer strings, and :func:`squad_scores`
computes EM/F1 (SQuAD's normalisation; MLQA's language-aware one when ``lang`` is given).
"""

from __future__ import annotations

import collections
import logging
import re
import string
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import datasets
import numpy as np
from lightning import LightningDataModule
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from xmod_lab.data.collate import PadCollator
from xmod_lab.data.common import (
    LazyTokenizer,
    TaggedDataset,
    cache_key,
    cached,
    check_columns,
    check_values,
    data_setup,
    eval_loaders,
    eval_source_or_train,
    first_rows,
    tagged_splits,
    train_loader,
)
from xmod_lab.data.sources import SourceSpec, load_split

log = logging.getLogger(__name__)


def _answer_spans(answers: Mapping[str, Any]) -> list[tuple[int, str]]:
    return list(zip((int(s) for s in answers["answer_start"]), answers["text"], strict=True))


def check_answer_fields(ds: datasets.Dataset, answers_column: str, where: str) -> None:
    """Each row's answers are ``{"text": [...], "answer_start": [...]}`` of one length (SQuAD's schema); checked at
    setup, since evaluation reads them only after a whole training run."""
    for row, answers in enumerate(ds[answers_column], start=1):
        if not isinstance(answers, Mapping) or not {"text", "answer_start"} <= set(answers):
            raise ValueError(f"{where}, row {row}: {answers_column!r} is {answers!r}; expected "
                             '{"text": [...], "answer_start": [...]} (SQuAD\'s schema).')
        text, start = answers["text"], answers["answer_start"]
        if text is None or start is None or len(text) != len(start):
            raise ValueError(f"{where}, row {row}: {answers_column!r} has {text!r} as text and {start!r} as "
                             "answer_start; they must be lists of the same length.")


def check_answers(
    ds: datasets.Dataset, context_column: str, answers_column: str, where: str
) -> datasets.Dataset:
    """Drop (count and log) training rows whose first answer is not at its ``answer_start`` in the context;
    an error when most rows are off, which means the contexts were altered (e.g. stripped) upstream."""
    bad = []
    for row, (context, answers) in enumerate(
        zip(list(ds[context_column]), list(ds[answers_column]), strict=True)
    ):
        spans = _answer_spans(answers)
        if spans and context[spans[0][0] : spans[0][0] + len(spans[0][1])] != spans[0][1]:
            bad.append(row)
    if not bad:
        return ds
    if len(bad) > len(ds) // 2:
        raise ValueError(
            f"{where}: in {len(bad)} of {len(ds)} rows (first: row {bad[0] + 1}) the answer text does not occur at "
            "answer_start in the context. Were the contexts stripped or re-encoded after the offsets were set?"
        )
    log.warning(
        "%s: skipped %d rows whose answer does not occur at answer_start (rows %s...)",
        where,
        len(bad),
        [r + 1 for r in bad[:5]],
    )
    keep = sorted(set(range(len(ds))) - set(bad))
    return ds.select(keep)


def encode_qa(
    ds: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    columns: Mapping[str, str],
    max_length: int,
    doc_stride: int,
    train: bool,
    where: str,
) -> datasets.Dataset:
    """Question/context windows of ``max_length`` tokens overlapping by ``doc_stride`` tokens."""
    q_col, c_col, a_col, id_col = columns["question"], columns["context"], columns["answers"], columns["id"]
    required = [q_col, c_col, a_col, id_col] if not train else [q_col, c_col, a_col]
    check_columns(ds, required, where)
    check_values(ds, required, where)
    check_answer_fields(ds, a_col, where)
    if train:
        ds = check_answers(ds, c_col, a_col, where)
    # Leading spaces would only waste window tokens. A question must leave room for a context window longer
    # than the stride (the tokenizer refuses otherwise): cut it at max_length - doc_stride - 5 tokens.
    questions = [q.lstrip() for q in ds[q_col]]
    budget = max_length - doc_stride - 5  # <s> q </s></s> c </s>: 4 specials, and window > stride
    q_offsets = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    cut = 0
    for i, offsets in enumerate(q_offsets):
        keep = budget
        while len(offsets) > budget:  # re-tokenizing a cut string can give more pieces: cut again
            questions[i] = questions[i][: offsets[keep - 1][1]]
            offsets = tokenizer(questions[i], add_special_tokens=False, return_offsets_mapping=True)[
                "offset_mapping"
            ]
            keep -= 1
        cut += keep < budget
    if cut:
        log.warning("%s: cut %d questions to %d tokens (max_length - doc_stride - 5)", where, cut, budget)
    contexts = list(ds[c_col])
    enc = tokenizer(
        questions, contexts, truncation="only_second", max_length=max_length, stride=doc_stride,
        return_overflowing_tokens=True, return_offsets_mapping=True,
    )  # fmt: skip
    sample_of = enc.pop("overflow_to_sample_mapping")
    out: dict[str, list] = {"input_ids": enc["input_ids"]}
    if train:
        answers = list(ds[a_col])
        starts, ends = [], []
        for i, offsets in enumerate(enc["offset_mapping"]):
            seq_ids = enc.sequence_ids(i)
            spans = _answer_spans(answers[sample_of[i]])
            start_tok = end_tok = 0
            if spans:
                a_start, a_text = spans[0]
                a_end = a_start + len(a_text)
                ctx = [t for t, s in enumerate(seq_ids) if s == 1]
                if ctx and offsets[ctx[0]][0] <= a_start and offsets[ctx[-1]][1] >= a_end:
                    start_tok = next(t for t in ctx if offsets[t][1] > a_start)
                    end_tok = next(t for t in reversed(ctx) if offsets[t][0] < a_end)
            starts.append(start_tok)
            ends.append(end_tok)
        out.update(start_positions=starts, end_positions=ends)
    else:
        ids = list(ds[id_col])
        out["example_id"] = [str(ids[s]) for s in sample_of]
        out["offset_mapping"] = [
            [list(o) if s == 1 else [-1, -1] for o, s in zip(offsets, enc.sequence_ids(i), strict=True)]
            for i, offsets in enumerate(enc["offset_mapping"])
        ]
    return datasets.Dataset.from_dict(out)


def postprocess_predictions(
    contexts: Mapping[str, str],
    example_ids: Sequence[str],
    offset_mappings: Sequence[Sequence[Sequence[int]]],
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    n_best: int = 20,
    max_answer_length: int = 30,
) -> dict[str, str]:
    """The best-scoring valid span (start <= end, within the context, <= max_answer_length tokens) over all
    features of each example, as text; examples without a valid span get ``""``."""
    best: dict[str, tuple[float, str]] = {}
    for ex_id, offsets, s_log, e_log in zip(
        example_ids, offset_mappings, start_logits, end_logits, strict=True
    ):
        s_log, e_log = np.asarray(s_log), np.asarray(e_log)
        n = min(len(offsets), len(s_log))
        context = contexts[ex_id]
        starts = np.argsort(s_log[:n])[::-1][:n_best]
        ends = np.argsort(e_log[:n])[::-1][:n_best]
        for s in starts:
            if offsets[s][0] < 0:
                continue
            for e in ends:
                if offsets[e][0] < 0 or e < s or e - s + 1 > max_answer_length:
                    continue
                score = float(s_log[s] + e_log[e])
                if ex_id not in best or score > best[ex_id][0]:
                    best[ex_id] = (score, context[offsets[s][0] : offsets[e][1]])
    return {ex_id: best.get(ex_id, (0.0, ""))[1] for ex_id in dict.fromkeys(example_ids)}


# MLQA's evaluation script: articles per language, all Unicode punctuation, CJK split into characters.
_ARTICLES = {
    "en": r"\b(a|an|the)\b",
    "es": r"\b(un|una|unos|unas|el|la|los|las)\b",
    "vi": r"\b(của|là|cái|chiếc|những)\b",
    "de": r"\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b",
    "ar": r"\sال^|ال",
}
_ASCII_PUNCT = frozenset(string.punctuation)
_CJK = re.compile(r"([\u4e00-\u9fff\u3400-\u4dbf\u3040-\u30ff\uac00-\ud7af])")


def normalize_answer(text: str, lang: str | None = None) -> list[str]:
    """Lower-case, drop punctuation and articles, split into tokens (SQuAD; MLQA rules when ``lang`` is set)."""
    text = text.lower()
    if lang is None:
        text = "".join(ch for ch in text if ch not in _ASCII_PUNCT)
        text = re.sub(_ARTICLES["en"], " ", text)
        return text.split()
    text = "".join(
        ch for ch in text if ch not in _ASCII_PUNCT and not unicodedata.category(ch).startswith("P")
    )
    if lang in _ARTICLES:
        text = re.sub(_ARTICLES[lang], " ", text)
    if lang in ("zh", "ja", "ko"):  # no spaces between words: compare characters
        text = _CJK.sub(r" \1 ", text)
    return text.split()


def _f1(pred: list[str], gold: list[str]) -> float:
    common = collections.Counter(pred) & collections.Counter(gold)
    same = sum(common.values())
    if not pred or not gold:
        return float(pred == gold)
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad_scores(
    predictions: Mapping[str, str], references: Mapping[str, Iterable[str]], lang: str | None = None
) -> dict[str, float]:
    """Exact match and F1 (0-100), max over the gold answers, averaged over ``references``; a missing
    prediction counts as wrong. ``lang``: an ISO code for MLQA's normalisation, None for SQuAD's."""
    em = f1 = 0.0
    for ex_id, golds in references.items():
        pred = normalize_answer(predictions.get(ex_id, ""), lang)
        golds = [normalize_answer(g, lang) for g in golds] or [[]]
        em += max(float(pred == g) for g in golds)
        f1 += max(_f1(pred, g) for g in golds)
    n = max(1, len(references))
    return {"exact_match": 100.0 * em / n, "f1": 100.0 * f1 / n}


class QuestionAnsweringDataModule(LightningDataModule):
    """Extractive QA with one eval dataloader per language. Evaluation batches carry ``example_id`` and
    ``offset_mapping`` (not model inputs); :meth:`references` gives each eval language's contexts and gold
    answers for :func:`postprocess_predictions` and :func:`squad_scores`."""

    def __init__(
        self,
        source: Mapping[str, Any] | str,
        tokenizer: str,
        languages: Sequence[str],
        train_langs: Sequence[str],
        eval_langs: Sequence[str] | None = None,
        question_column: str = "question",
        context_column: str = "context",
        answers_column: str = "answers",
        id_column: str = "id",
        max_length: int = 384,
        doc_stride: int = 128,
        n_best: int = 20,
        max_answer_length: int = 30,
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
        self.spec = data_setup(
            languages, train_langs, eval_langs, language_map, batch_size, eval_batch_size, batching, cache_dir,
            num_workers, seed, max_train_examples, max_eval_examples,
        )  # fmt: skip
        if not 0 <= doc_stride < max_length - 8:
            raise ValueError(f"doc_stride={doc_stride} must be in [0, max_length - 8 = {max_length - 8}).")
        self.source = SourceSpec.coerce(source)
        self.eval_source = eval_source_or_train(self.source, eval_source)
        self.train_languages, self.eval_languages = self.spec.train_languages, self.spec.eval_languages
        self.columns = {"question": question_column, "context": context_column, "answers": answers_column,
                        "id": id_column}  # fmt: skip
        self.max_length = max_length
        self.doc_stride = doc_stride
        self.n_best = n_best
        self.max_answer_length = max_answer_length
        self._tokenizer = LazyTokenizer(tokenizer)
        self._data: dict[str, list[TaggedDataset]] = {}
        self._raw: dict[str, list[datasets.Dataset]] = {}

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self._tokenizer.get()

    def _raw_split(self, lang: str, split: str) -> datasets.Dataset:
        return first_rows(load_split(self._source(split), lang, split), self.spec.limit(split))

    def _features(self, lang: str, split: str, raw: datasets.Dataset | None = None) -> datasets.Dataset:
        where = self._source(split).describe(lang, split)
        train = split == "train"

        def build() -> datasets.Dataset:
            ds = raw if raw is not None else self._raw_split(lang, split)
            return encode_qa(ds, self.tokenizer, self.columns, self.max_length, self.doc_stride, train, where)

        key = cache_key(
            self._source(split), lang, split, self._tokenizer.fingerprint, task="qa", columns=self.columns,
            max_length=self.max_length, doc_stride=self.doc_stride, train=train, limit=self.spec.limit(split),
        )  # fmt: skip
        return cached(build, key, self.spec.cache_dir, where)

    def _source(self, split: str) -> SourceSpec:
        return self.source if split == "train" else self.eval_source

    def _plan(self, stage: str | None) -> list[tuple[str, list[str], list[int]]]:
        return self.spec.stage_splits(stage, lambda split: self._source(split).has_split(split))

    def prepare_data(self) -> None:
        if self.spec.cache_dir is not None:
            tagged_splits(self._plan(None), self._features)

    def setup(self, stage: str | None = None) -> None:
        for split, langs, ids in self._plan(stage):
            parts, raws = [], []
            for lang, lid in zip(langs, ids, strict=True):
                raw = None if split == "train" else self._raw_split(lang, split)
                parts.append(TaggedDataset([(self._features(lang, split, raw), lid)]))
                raws.append(raw)
            self._data[split] = parts
            if split != "train":
                self._raw[split] = raws

    def references(self, split: str, index: int) -> tuple[dict[str, str], dict[str, list[str]]]:
        """(contexts, gold answer texts) by example id for eval language ``index`` (``eval_languages`` order)."""
        raw = self._raw[split][index]
        c = self.columns
        ids = [str(i) for i in raw[c["id"]]]
        contexts = dict(zip(ids, raw[c["context"]], strict=True))
        answers = {i: list(a["text"]) for i, a in zip(ids, raw[c["answers"]], strict=True)}
        return contexts, answers

    def score(
        self,
        split: str,
        index: int,
        example_ids: Sequence[str],
        offset_mappings: Sequence[Sequence[Sequence[int]]],
        start_logits: Sequence[np.ndarray],
        end_logits: Sequence[np.ndarray],
        only_seen: bool = False,
    ) -> dict[str, float]:
        """EM/F1 of eval language ``index`` from features' logits. ``only_seen``: score only the examples
        present in ``example_ids`` (one DDP rank's shard; every example's features sit on one rank)."""
        contexts, answers = self.references(split, index)
        preds = postprocess_predictions(
            contexts,
            example_ids,
            offset_mappings,
            start_logits,
            end_logits,
            self.n_best,
            self.max_answer_length,
        )
        if only_seen:
            answers = {i: answers[i] for i in preds}
        iso = self.eval_languages[index].split("_")[0]
        return squad_scores(preds, answers, lang=iso if iso != "en" else None)

    def _collate(self) -> PadCollator:
        return PadCollator(self.tokenizer.pad_token_id)

    def train_dataloader(self) -> DataLoader:
        return train_loader(self._data, self._source("train"), self._collate(), self.spec)

    def _eval_loaders(self, split: str) -> list[DataLoader]:
        def groups(data: TaggedDataset) -> list[str]:  # shards end on example boundaries
            return data.parts[0][0]["example_id"]

        return eval_loaders(self._data, split, self._source(split), self._collate(), self.spec, groups)

    def val_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("validation")

    def test_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("test")
