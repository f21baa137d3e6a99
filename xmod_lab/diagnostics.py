"""Degenerate classifiers, flagged wherever results are shown (results table, sweep summary, xmod-report).

A classifier is marked when, on an evaluation set, it

* predicts only one or two classes (of three or more): it collapsed, whatever its accuracy;
* scores within ``margin`` points of chance (100 / number of classes);
* scores within ``margin`` points of the data's shortcut ceiling or below it (the accuracy a model that reads
  only the hypothesis can reach; the synthetic data records it per language), when the data knows one.

``PredictedClasses`` (a Lightning callback in ``callbacks/default.yaml``) counts the test predictions per
evaluation set; ``assess`` turns them and the per-set accuracies into ``{"chance", "shortcut_ceiling",
"predicted_classes", "flags"}``, which xmod-train stores in ``results.json`` under ``diagnostics``;
``run_flags`` reads them back for tables. Accuracies are percentages, as in the results tables.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer

from xmod_lab.results import AVERAGES

log = logging.getLogger(__name__)

MARGIN = 3.0  # points: "within a few points" of chance or of the shortcut ceiling


def flags(acc: float, num_classes: int, predicted: Mapping[Any, int] | None = None,
          ceiling: float | None = None, margin: float = MARGIN) -> list[str]:
    """Why an accuracy (in %) should not be read as a working classifier; empty when nothing is wrong."""
    out = []
    used = sum(1 for n in (predicted or {}).values() if n > 0)
    if predicted is not None and num_classes >= 3 and used <= 2:
        out.append(f"predicts {used} of {num_classes} classes")
    chance = 100.0 / num_classes
    if acc < chance + margin:
        out.append(f"within {margin:g} points of chance ({chance:.1f})")
    if ceiling is not None and acc < ceiling + margin:
        out.append(f"not above the shortcut ceiling ({ceiling:.1f}) by {margin:g} points")
    return out


class PredictedClasses(Callback):
    """Counts test-set predictions per evaluation set and class (classification tasks only; others are left alone).

    Predictions are recomputed from the batch (one extra forward pass over the test set), so every task
    keeps its own step code."""

    def __init__(self) -> None:
        self.counts: dict[str, dict[int, int]] = {}

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.counts = {}

    @torch.no_grad()
    def on_test_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        labels = batch.get("labels") if isinstance(batch, Mapping) else None
        if labels is None or labels.dim() != 1 or "lang_ids" not in batch:
            return  # not sentence classification (tokens, spans, LM)
        logits = pl_module(**batch).logits
        if logits.dim() != 2:
            return
        slot = self.counts.setdefault(pl_module.eval_sets[dataloader_idx], {})  # one dataloader per set
        for pred in logits.argmax(-1).tolist():
            slot[pred] = slot.get(pred, 0) + 1

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Under DDP each rank counted its shard: sum the counts of every rank (all ranks call this)."""
        if trainer.world_size <= 1:
            return
        sets = list(pl_module.eval_sets)
        local = max((k + 1 for slot in self.counts.values() for k in slot), default=0)
        n_classes = int(pl_module.all_gather(torch.tensor(local, device=pl_module.device)).max())
        if n_classes == 0:  # no rank saw a classification batch
            return
        table = torch.zeros(len(sets), n_classes, dtype=torch.long, device=pl_module.device)
        for i, name in enumerate(sets):
            for k, n in self.counts.get(name, {}).items():
                table[i, k] = n
        total = pl_module.all_gather(table).reshape(-1, len(sets), n_classes).sum(0).tolist()
        self.counts = {name: {k: n for k, n in enumerate(row) if n} for name, row in zip(sets, total, strict=True)
                       if any(row)}


def assess(table: Mapping[str, Mapping[str, float]], trainer: Trainer, datamodule: Any,
           metric: str = "acc") -> dict[str, Any] | None:
    """The diagnostics of a finished classification run (None for other tasks); logs a warning per flag."""
    num_classes = getattr(datamodule, "num_labels", None)
    if not num_classes or not any(metric in row for row in table.values()):
        return None
    counter = next((c for c in trainer.callbacks if isinstance(c, PredictedClasses)), None)
    predicted = counter.counts if counter is not None else {}
    ceilings: Mapping[str, float] = getattr(datamodule, "shortcut_ceiling", None) or {}
    out: dict[str, Any] = {
        "chance": round(100.0 / num_classes, 2),
        "shortcut_ceiling": dict(ceilings),
        "predicted_classes": {lang: {str(k): v for k, v in sorted(c.items())} for lang, c in predicted.items()},
        "flags": {},
    }
    if ceilings:
        out["shortcut_ceiling_max"] = max(ceilings.values())
    for lang, row in table.items():
        if lang in AVERAGES or metric not in row:
            continue
        found = flags(row[metric], num_classes, predicted.get(lang) if counter is not None else None,
                      ceilings.get(lang))
        if found:
            out["flags"][lang] = found
            log.warning("%s: %s %.2f is degenerate: %s", lang, metric, row[metric], "; ".join(found))
    return out


def run_flags(results: Mapping[str, Any]) -> dict[str, list[str]]:
    """``{language: [flag, ...]}`` from a run's results.json (empty when it has no diagnostics)."""
    diag = results.get("diagnostics") if isinstance(results, Mapping) else None
    return {str(k): list(v) for k, v in ((diag or {}).get("flags") or {}).items()}


def flag_text(run_flags_: Mapping[str, list[str]], width: int = 60) -> str:
    """One short cell for tables: ``DEGENERATE de_DE, fr_XX`` (details in results.json)."""
    if not run_flags_:
        return ""
    return ("DEGENERATE: " + ", ".join(run_flags_))[:width]


def format_assessment(table: Mapping[str, Mapping[str, float]], diag: Mapping[str, Any], metric: str = "acc") -> str:
    """Each language's score next to chance and the shortcut ceiling, with its flags."""
    ceilings = diag.get("shortcut_ceiling") or {}
    header = f"{'eval set':<10}{metric:>8}{'chance':>8}{'shortcut':>10}  flags"
    lines = [f"{metric} next to chance and the hypothesis-only shortcut ceiling (flags: {MARGIN:g}-point margins)",
             header, "-" * len(header)]
    for lang, row in table.items():
        if metric not in row:
            continue
        ceiling = ceilings.get(lang)
        shortcut = f"{ceiling:.1f}" if ceiling is not None else "-"
        marks = "; ".join(diag.get("flags", {}).get(lang, []))
        lines.append(f"{lang:<10}{row[metric]:>8.2f}{diag['chance']:>8.1f}{shortcut:>10}  {marks}".rstrip())
    return "\n".join(lines)
