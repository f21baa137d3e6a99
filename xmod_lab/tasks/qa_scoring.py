"""Scoring extractive QA: the best span of each example as text, then exact match and F1 against its gold
answers, normalised by the rules of the benchmark (``scoring`` of the QA datamodule):

* SQuAD v1.1's script (SQuAD, XQuAD and TyDiQA-GoldP in XTREME): lower case, ASCII punctuation and English
  articles removed, whitespace tokens;
* MLQA's script: all Unicode punctuation, the articles of the answer's language, CJK compared by character.
  The answer's language is the context's (``en-zh``: an English context, answers in English).

Everything needed arrives in the evaluation batches (``example_id``, ``offset_mapping``, ``context``,
``answers``, ``answer_language``), so each process scores exactly the examples it saw.
"""

from __future__ import annotations

import collections
import re
import string
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np


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



class QAScorer:
    """Collects the features of one evaluation set during an epoch, then scores them.

    ``add`` takes a batch's metadata and the start/end logits (padding cut); ``scores`` returns
    ``({"exact_match": .., "f1": ..}, number of examples)`` over the examples added, and forgets them.
    """

    def __init__(self, n_best: int = 20, max_answer_length: int = 30) -> None:
        self.n_best, self.max_answer_length = n_best, max_answer_length
        self._features: dict[str, list] = collections.defaultdict(list)

    def add(self, batch: Mapping[str, Any], start_logits: Sequence[np.ndarray], end_logits: Sequence[np.ndarray]) -> None:
        missing = [k for k in ("example_id", "offset_mapping", "context", "answers", "answer_language") if k not in batch]
        if missing:
            raise ValueError(f"QA evaluation batches need {missing} (xmod_lab.data.QuestionAnsweringDataModule's "
                             "evaluation loaders carry them)")
        for key in ("example_id", "offset_mapping", "context", "answers", "answer_language"):
            self._features[key] += list(batch[key])
        self._features["start"] += list(start_logits)
        self._features["end"] += list(end_logits)

    def scores(self) -> tuple[dict[str, float], int]:
        f, self._features = self._features, collections.defaultdict(list)
        if not f["example_id"]:
            return {}, 0
        contexts = dict(zip(f["example_id"], f["context"], strict=True))
        golds = dict(zip(f["example_id"], f["answers"], strict=True))
        languages = set(f["answer_language"])
        if len(languages) > 1:
            raise ValueError(f"one evaluation set mixes answer languages {sorted(map(str, languages))}")
        predictions = postprocess_predictions(contexts, f["example_id"], f["offset_mapping"], f["start"], f["end"],
                                              self.n_best, self.max_answer_length)
        return squad_scores(predictions, golds, languages.pop()), len(golds)
