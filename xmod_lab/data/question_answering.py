"""Extractive QA (SQuAD v1.1, XQuAD, MLQA, TyDiQA-GoldP): features over long contexts, and back to text.

Training features: ``<s> question </s></s> context-window </s>`` with ``start_positions``/``end_positions``
(0, the ``<s>`` index, when the answer is not inside the window). Evaluation features also keep
``example_id`` and ``offset_mapping`` (character span of each context token, (-1, -1) elsewhere) and carry
what scoring needs: the context, the gold answer texts and the answer language whose normalisation applies
(``scoring``: ``squad`` for SQuAD/XQuAD/TyDiQA as XTREME scores them, ``mlqa`` for MLQA). The task turns
logits back into answer strings and scores them (``xmod_lab.tasks.qa_scoring``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import datasets
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from xmod_lab.data.common import (
    LanguageDataModule,
    TaggedDataset,
    cache_key,
    cached,
    check_columns,
    check_script,
    check_values,
    data_setup,
    eval_loaders,
    first_rows,
    with_skipped,
)
from xmod_lab.data.sources import load_split

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
) -> tuple[datasets.Dataset, list[int]]:
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
        return ds, []
    if len(bad) > len(ds) // 2:
        raise ValueError(
            f"{where}: in {len(bad)} of {len(ds)} rows (first: row {bad[0] + 1}) the answer text does not occur at "
            "answer_start in the context. Were the contexts stripped or re-encoded after the offsets were set?"
        )
    keep = sorted(set(range(len(ds))) - set(bad))
    return ds.select(keep), [r + 1 for r in bad]  # logged and recorded with the features (with_skipped)


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
    skipped: list[int] = []
    if train:
        ds, skipped = check_answers(ds, c_col, a_col, where)
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
    return with_skipped(datasets.Dataset.from_dict(out), skipped, "answer does not occur at answer_start", where)


# MLQA's languages take its own normalisation; other codes name no rule set and are refused with scoring=mlqa.
_ISO = re.compile(r"^(?P<lang>[a-z]{2,3})(?:[-_][A-Za-z]+)?$")
_PAIR = re.compile(r"^(?P<context>[a-z]{2,3})-(?P<question>[a-z]{2,3})$")
SCORING_RULES = ("squad", "mlqa")


def answer_language(eval_set: str) -> str:
    """The language of an evaluation set's answers, for MLQA's normalisation: the context language of a
    cross-lingual pair (``en-ar``: context en, question ar), else the set's own language (``de``, ``zh-Hans``)."""
    pair = _PAIR.match(eval_set)
    if pair:
        return pair["context"]
    single = _ISO.match(eval_set)
    if single:
        return single["lang"]
    raise ValueError(
        f"scoring=mlqa normalises answers by their language, but evaluation set {eval_set!r} is not an ISO code "
        "(de) or a context-question pair (en-ar); name the set by its language or use scoring=squad"
    )


def with_references(features: datasets.Dataset, raw: datasets.Dataset, columns: Mapping[str, str],
                    language: str | None) -> datasets.Dataset:
    """Evaluation features with what scoring needs beside the logits: each feature's context, its example's
    gold answer texts, and the language whose normalisation applies (None: SQuAD's)."""
    ids = [str(i) for i in raw[columns["id"]]]
    contexts = dict(zip(ids, raw[columns["context"]], strict=True))
    answers = {i: [str(t) for t in a["text"]] for i, a in zip(ids, raw[columns["answers"]], strict=True)}
    feature_ids = features["example_id"]
    return (features.add_column("context", [contexts[i] for i in feature_ids])
            .add_column("answers", [answers[i] for i in feature_ids])
            .add_column("answer_language", [language] * len(feature_ids)))


class QuestionAnsweringDataModule(LanguageDataModule):
    """Extractive QA with one eval dataloader per evaluation set. Evaluation batches carry ``example_id``,
    ``offset_mapping``, ``context``, ``answers`` and ``answer_language`` (not model inputs).

    ``scoring``: the benchmark's answer normalisation, ``squad`` (SQuAD v1.1's script: XQuAD and TyDiQA-GoldP
    in XTREME) or ``mlqa`` (MLQA's, by the answer's language: the context language of a pair ``en-ar``)."""

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
        scoring: str = "squad",
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
        if not 0 <= doc_stride < max_length - 8:
            raise ValueError(f"doc_stride={doc_stride} must be in [0, max_length - 8 = {max_length - 8}).")
        super().__init__(source, tokenizer, setup, eval_source)
        self.columns = {"question": question_column, "context": context_column, "answers": answers_column,
                        "id": id_column}  # fmt: skip
        self.max_length = max_length
        self.doc_stride = doc_stride
        if scoring not in SCORING_RULES:
            raise ValueError(f"scoring={scoring!r}; choose one of {SCORING_RULES} (the benchmark's answer normalisation)")
        self.answer_languages = [answer_language(code) if scoring == "mlqa" else None for code in self.spec.eval_langs]

    def _raw_split(self, lang: str, split: str) -> datasets.Dataset:
        return first_rows(load_split(self._source(split), lang, split), self.spec.limit(split))

    def _split(self, lang: str, split: str, raw: datasets.Dataset | None = None) -> datasets.Dataset:
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

    def setup(self, stage: str | None = None) -> None:
        for split, langs, ids in self._plan(stage):
            parts = []
            for i, (lang, lid) in enumerate(zip(langs, ids, strict=True)):
                if split == "train":
                    features = self._split(lang, split)
                    check_script(features, lang, lid, self.spec, self.tokenizer)
                    parts.append(TaggedDataset([(features, lid)]))
                else:
                    raw = self._raw_split(lang, split)
                    features = with_references(self._split(lang, split, raw), raw, self.columns,
                                               self.answer_languages[i])
                    check_script(features, lang, lid, self.spec, self.tokenizer)
                    parts.append(TaggedDataset([(features, lid)]))
            self._data[split] = parts

    def _eval_loaders(self, split: str) -> list[DataLoader]:
        def groups(data: TaggedDataset) -> list[str]:  # shards end on example boundaries
            return data.parts[0][0]["example_id"]

        return eval_loaders(self._data, split, self._source(split), self._collate(), self.spec, groups)
