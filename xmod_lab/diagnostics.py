"""Degenerate runs, flagged wherever results are shown (results table, sweep summary, xmod-report, xmod-eval).

Each task's scores are set next to what a model that learned nothing scores, per metric (scores in %, as in
the results tables; MARGIN points):

* sentence classification and multiple choice, ``acc``: chance, 100 / number of classes (choices); flagged
  within MARGIN of it or below;
* token classification, ``acc``: the majority-tag baseline, the share of the most frequent gold tag (``O`` in
  NER) among the scored tokens: a model tagging everything ``O`` reaches it; flagged within MARGIN or below.
  ``f1`` (entity F1): flagged below MARGIN, and an F1 of 0 says that no entity was found;
* question answering, ``exact_match`` and ``f1``: flagged below MARGIN (no answer overlaps the gold one);
* language modelling, ``loss`` (nats per token): flagged unless at least LOSS_MARGIN below ln(vocabulary size),
  the loss of a uniform guess, or when not finite.

Classifiers (sentence and token) are also flagged when they use at most two classes, fewer than they have:
a class counts as used when it gets at least MIN_SHARE of the predictions (3 predictions in 500 is not using
a class). And, only where the data has a measured shortcut (the synthetic NLI data records the accuracy a
hypothesis-only model reaches per evaluation set), an accuracy within MARGIN of that ceiling or below it.

``PredictedClasses`` (a Lightning callback: ``callbacks/default.yaml`` for xmod-train, always in xmod-eval)
counts predicted and gold classes per evaluation set; ``assess`` turns them and the scores into the
``diagnostics`` of ``results.json``; ``run_flags`` reads the flags back for tables.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn

from xmod_lab.models import (
    XmodForCausalLM,
    XmodForMaskedLM,
    XmodForMultipleChoice,
    XmodForQuestionAnswering,
    XmodForSequenceClassification,
    XmodForTokenClassification,
)
from xmod_lab.results import AVERAGES

log = logging.getLogger(__name__)

MARGIN = 3.0  # points: "within a few points" of chance, of a baseline or of the shortcut ceiling
MIN_SHARE = 0.01  # a class is "predicted" from this share of the predictions on
LOSS_MARGIN = 0.1  # nats: how far below the uniform guess a language model's loss must be
IGNORE = -100  # gold label of positions that are not scored (sub-words, special tokens)

SENTENCE, TOKEN, SPANS, LM = "sentence_classification", "token_classification", "question_answering", "language_modeling"


def task_kind(model: Any) -> str | None:
    """Which family of checks a model's scores get (by its head), None for a head this module does not know."""
    kinds = ((XmodForTokenClassification, TOKEN), (XmodForSequenceClassification, SENTENCE),
             (XmodForMultipleChoice, SENTENCE), (XmodForQuestionAnswering, SPANS),
             (XmodForMaskedLM, LM), (XmodForCausalLM, LM))
    return next((kind for cls, kind in kinds if isinstance(model, cls)), None)


def near(score: float, reference: float, what: str, margin: float = MARGIN) -> str | None:
    """"below <what>" / "within <margin> points of <what>" for a score not clearly above a reference."""
    if score < reference - margin:
        return f"below {what} ({reference:.1f})"
    if score < reference + margin:
        return f"within {margin:g} points of {what} ({reference:.1f})"
    return None


def class_use(predicted: Mapping[Any, int] | None, num_classes: int, min_share: float = MIN_SHARE) -> str | None:
    """"predicts k of n classes" when a classifier uses at most two classes and fewer than it has; a class is used
    when it gets at least ``min_share`` of the predictions."""
    total = sum((predicted or {}).values())
    if not total or num_classes < 2:
        return None
    used = sum(1 for n in predicted.values() if n >= min_share * total)
    return f"predicts {used} of {num_classes} classes" if used < num_classes and used <= 2 else None


def majority_share(gold: Mapping[Any, int] | None) -> float | None:
    """The accuracy (in %) of always predicting the most frequent gold class; None without counts."""
    total = sum((gold or {}).values())
    return 100.0 * max(gold.values()) / total if total else None


def flags(kind: str, row: Mapping[str, float], *, num_classes: int | None = None,
          predicted: Mapping[Any, int] | None = None, gold: Mapping[Any, int] | None = None,
          ceiling: float | None = None, vocab_size: int | None = None, margin: float = MARGIN) -> list[str]:
    """Why one evaluation set's scores (``{metric: value}``) should not be read as a working model; empty when
    nothing is wrong. What is checked depends on the task ``kind`` (module docstring)."""
    out: list[str | None] = []
    if kind in (SENTENCE, TOKEN) and num_classes:
        out.append(class_use(predicted, num_classes))
    acc = row.get("acc")
    if kind == SENTENCE and acc is not None:
        if num_classes:
            out.append(near(acc, 100.0 / num_classes, "chance", margin))
        if ceiling is not None and acc < ceiling + margin:
            out.append(f"not above the shortcut ceiling ({ceiling:.1f}) by {margin:g} points")
    if kind == TOKEN:
        baseline = majority_share(gold)
        if acc is not None and baseline is not None:
            out.append(near(acc, baseline, "the majority-tag baseline", margin))
        if "f1" in row:
            out.append("entity F1 0: no entity found" if row["f1"] == 0 else
                       f"entity F1 below {margin:g}" if row["f1"] < margin else None)
    if kind == SPANS:
        for metric, name in (("exact_match", "exact match"), ("f1", "F1")):
            if metric in row and row[metric] < margin:
                out.append(f"{name} below {margin:g}")
    if kind == LM and "loss" in row:
        loss = row["loss"]
        uniform = math.log(vocab_size) if vocab_size else None
        if not math.isfinite(loss):
            out.append("loss is not finite")
        elif uniform is not None and loss > uniform - LOSS_MARGIN:
            out.append(f"loss not below a uniform guess (ln {vocab_size} = {uniform:.2f}) by {LOSS_MARGIN:g}")
    return [f for f in out if f]


class PredictedClasses(Callback):
    """Counts predicted and gold classes per evaluation set, for sentence and token classification (other
    tasks are left alone): on test batches, and on validation batches of a plain ``validate`` (xmod-eval
    split=validation), never during fit.

    The predictions counted are the ones the task scored: its ``test_step`` / ``validation_step`` returns
    ``{"logits": ...}`` (no second forward pass, and under mixed precision the same numbers as the scores).
    """

    def __init__(self) -> None:
        self.predicted: dict[str, dict[int, int]] = {}
        self.gold: dict[str, dict[int, int]] = {}
        self.num_classes: dict[str, int] = {}
        self._warned = False

    def _start(self) -> None:
        self.predicted, self.gold, self.num_classes = {}, {}, {}

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start()

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:
            self._start()

    @torch.no_grad()
    def _count(self, pl_module: LightningModule, outputs: Any, batch: Any, dataloader_idx: int) -> None:
        labels = batch.get("labels") if isinstance(batch, Mapping) else None
        kind = task_kind(getattr(pl_module, "model", None))
        if labels is None or kind not in (SENTENCE, TOKEN):
            return
        logits = outputs.get("logits") if isinstance(outputs, Mapping) else None
        if logits is None:
            if not self._warned:  # no counts: the degenerate-run flags cannot see a collapsed classifier
                log.warning("%s's evaluation step returns no {'logits': ...}: predicted classes are not counted "
                            "and a classifier predicting one class is not flagged", type(pl_module).__name__)
                self._warned = True
            return
        if logits.dim() != labels.dim() + 1:
            return
        keep = labels != IGNORE
        name = pl_module.eval_sets[dataloader_idx]  # one dataloader per set
        self.num_classes[name] = int(logits.shape[-1])
        for table, values in ((self.predicted, logits.argmax(-1)[keep]), (self.gold, labels[keep])):
            slot = table.setdefault(name, {})
            for k, n in zip(*torch.unique(values, return_counts=True), strict=True):
                slot[int(k)] = slot.get(int(k), 0) + int(n)

    def on_test_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        self._count(pl_module, outputs, batch, dataloader_idx)

    def on_validation_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:
            self._count(pl_module, outputs, batch, dataloader_idx)

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._sync(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:
            self._sync(trainer, pl_module)

    def _sync(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Under DDP each rank counted its shard: sum the counts of every rank (all ranks call this)."""
        if trainer.world_size <= 1:
            return
        sets = list(pl_module.eval_sets)
        local = max((k + 1 for table in (self.predicted, self.gold) for slot in table.values() for k in slot),
                    default=0)
        n_classes = int(pl_module.all_gather(torch.tensor(local, device=pl_module.device)).max())
        if n_classes == 0:  # no rank saw a classification batch
            return
        table = torch.zeros(2, len(sets), n_classes, dtype=torch.long, device=pl_module.device)
        for t, counts in enumerate((self.predicted, self.gold)):
            for i, name in enumerate(sets):
                for k, n in counts.get(name, {}).items():
                    table[t, i, k] = n
        total = pl_module.all_gather(table).reshape(-1, 2, len(sets), n_classes).sum(0).tolist()
        self.predicted, self.gold = ({name: {k: n for k, n in enumerate(row) if n}
                                      for name, row in zip(sets, total[t], strict=True) if any(row)} for t in (0, 1))
        widths = [self.num_classes.get(name, 0) for name in sets]
        gathered = pl_module.all_gather(torch.tensor(widths, device=pl_module.device)).reshape(-1, len(sets))
        self.num_classes = {name: int(w) for name, w in zip(sets, gathered.max(0).values.tolist(), strict=True) if w}


def assess(table: Mapping[str, Mapping[str, float]], trainer: Trainer, datamodule: Any) -> dict[str, Any] | None:
    """The diagnostics of a finished run (None for a task without checks); logs a warning per flag."""
    model = getattr(trainer.lightning_module, "model", None)
    kind = task_kind(model)
    if kind is None or not table:
        return None
    counter = next((c for c in trainer.callbacks if isinstance(c, PredictedClasses)), None)
    predicted = counter.predicted if counter is not None else {}
    gold = counter.gold if counter is not None else {}
    config = getattr(model, "config", None)
    num_classes = {name: counter.num_classes.get(name) for name in table} if counter is not None else {}
    if kind == TOKEN or isinstance(model, XmodForSequenceClassification):
        num_classes = {name: int(config.num_labels) for name in table}  # the label set, not what was seen
    vocab_size = int(config.vocab_size) if kind == LM else None
    ceilings: Mapping[str, float] = (getattr(datamodule, "shortcut_ceiling", None) or {}) if kind == SENTENCE else {}
    out: dict[str, Any] = {"task": kind, "margin": MARGIN, "min_share": MIN_SHARE,
                           "chance": _uniform_chance(kind, num_classes, vocab_size), "baselines": {}, "flags": {}}
    if kind in (SENTENCE, TOKEN):
        out["predicted_classes"] = {s: {str(k): v for k, v in sorted(c.items())} for s, c in predicted.items()}
        out["gold_classes"] = {s: {str(k): v for k, v in sorted(c.items())} for s, c in gold.items()}
    if ceilings:
        out["shortcut_ceiling"] = dict(ceilings)
        out["shortcut_ceiling_max"] = max(ceilings.values())
    for name, row in table.items():
        if name in AVERAGES:
            continue
        baseline = _baselines(kind, row, num_classes.get(name), gold.get(name), vocab_size)
        if baseline:
            out["baselines"][name] = baseline
        found = flags(kind, row, num_classes=num_classes.get(name),
                      predicted=predicted.get(name) if counter is not None else None, gold=gold.get(name),
                      ceiling=ceilings.get(name), vocab_size=vocab_size)
        if found:
            out["flags"][name] = found
            log.warning("%s: %s is degenerate: %s", name, ", ".join(f"{m} {v:.2f}" for m, v in row.items()),
                        "; ".join(found))
    return out


def _uniform_chance(kind: str, num_classes: Mapping[str, int | None], vocab_size: int | None) -> float | None:
    """The one chance level of the run's main score, where there is one: sentence-classification accuracy
    (100 / classes), a language model's loss (ln vocabulary size)."""
    widths = {n for n in num_classes.values() if n}
    if kind == SENTENCE and len(widths) == 1:
        return round(100.0 / widths.pop(), 2)
    if kind == LM and vocab_size:
        return round(math.log(vocab_size), 4)
    return None


def _baselines(kind: str, row: Mapping[str, float], num_classes: int | None, gold: Mapping[int, int] | None,
               vocab_size: int | None) -> dict[str, float]:
    """``{metric: what a model that learned nothing scores}`` for one evaluation set."""
    out: dict[str, float] = {}
    if kind == SENTENCE and num_classes and "acc" in row:
        out["acc"] = 100.0 / num_classes
    if kind == TOKEN:
        share = majority_share(gold)
        if share is not None and "acc" in row:
            out["acc"] = share
        if "f1" in row:
            out["f1"] = 0.0
    if kind == SPANS:
        out.update({m: 0.0 for m in ("exact_match", "f1") if m in row})
    if kind == LM and vocab_size and "loss" in row:
        out["loss"] = math.log(vocab_size)
    return {m: round(v, 4) for m, v in out.items()}


def run_flags(results: Mapping[str, Any]) -> dict[str, list[str]]:
    """``{evaluation set: [flag, ...]}`` from a run's results.json (empty when it has no diagnostics)."""
    diag = results.get("diagnostics") if isinstance(results, Mapping) else None
    return {str(k): list(v) for k, v in ((diag or {}).get("flags") or {}).items()}


def flag_text(run_flags_: Mapping[str, list[str]], width: int = 60) -> str:
    """One short cell for tables: ``DEGENERATE de, fr`` (details in results.json)."""
    if not run_flags_:
        return ""
    return ("DEGENERATE: " + ", ".join(run_flags_))[:width]


def format_assessment(table: Mapping[str, Mapping[str, float]], diag: Mapping[str, Any]) -> str:
    """Each evaluation set's scores next to chance (what a model that learned nothing scores), the shortcut
    ceiling where the data has one, and the flags."""
    baselines = diag.get("baselines") or {}
    ceilings = diag.get("shortcut_ceiling") or {}
    metrics = list(dict.fromkeys(m for row in baselines.values() for m in row))
    header = f"{'eval set':<10}" + "".join(f"{m:>12}{'chance':>8}" for m in metrics)
    header += f"{'shortcut':>10}" if ceilings else ""
    header += "  flags"
    lines = [f"scores next to chance: what a model that learned nothing scores (flags: {MARGIN:g}-point margins; "
             f"a class counts as predicted from {MIN_SHARE:.0%} of the predictions)", header, "-" * len(header)]
    for name, row in table.items():
        if name in AVERAGES:
            continue
        cells = "".join(
            f"{row[m]:>12.2f}{baselines.get(name, {}).get(m, float('nan')):>8.1f}" if m in row else f"{'-':>12}{'-':>8}"
            for m in metrics)
        if ceilings:
            ceiling = ceilings.get(name)
            cells += f"{ceiling:>10.1f}" if ceiling is not None else f"{'-':>10}"
        marks = "; ".join(diag.get("flags", {}).get(name, []))
        lines.append(f"{name:<10}{cells}  {marks}".rstrip())
    return "\n".join(lines)
