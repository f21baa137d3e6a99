"""Extractive QA (SQuAD -> XQuAD / MLQA / TyDiQA-GoldP): exact match and F1 per evaluation set.

Scores are computed on text answers: the task keeps each evaluation feature's start/end logits with the
metadata its batch carries (offsets, context, gold answers, answer language), and at the end of the epoch
its :class:`~xmod_lab.tasks.qa_scoring.QAScorer` turns them into answer strings and scores them by the
benchmark's rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from lightning import LightningModule
from torch import nn

from xmod_lab.data.collate import model_inputs
from xmod_lab.data.question_answering import QuestionAnsweringDataModule
from xmod_lab.models import XmodForQuestionAnswering
from xmod_lab.tasks.common import (
    FloatMean,
    check_finite_loss,
    configure_adamw,
    eval_set,
    fit_in_train_mode,
    keep_train_loss,
    log_eval_scores,
    log_train_loss,
    setup_task,
)
from xmod_lab.tasks.qa_scoring import QAScorer

SCORES = ("exact_match", "f1")


class QuestionAnsweringTask(LightningModule):
    """X-MOD + span head; logs `{val,test}/<eval set>/exact_match` and `/f1`, and their averages.

    Args:
        n_best: start and end candidates per feature when choosing the answer span.
        max_answer_length: the longest answer span, in tokens.
        The other arguments are those of `SequenceClassificationTask` (no label set: spans are positions).
    """

    DATA = QuestionAnsweringDataModule  # the datamodule it trains on (xmod_lab.runs.check_task_fits_data)

    main_metric, monitor_mode = "f1", "max"

    def __init__(
        self,
        model: Mapping[str, Any],
        languages: Mapping[str, Any],
        n_best: int = 20,
        max_answer_length: int = 30,
        adapter: Mapping[str, Any] | None = None,
        freeze: Mapping[str, Any] | None = None,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        model_config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        setup_task(self, XmodForQuestionAnswering)
        # the per-rank scores, weighted by the rank's examples: their cross-rank mean is the set's score
        self.scores = nn.ModuleDict({
            stage: nn.ModuleDict({f"{i}-{name}": FloatMean() for i in range(len(self.eval_sets)) for name in SCORES})
            for stage in ("val", "test")
        })
        self.scorers = [QAScorer(n_best, max_answer_length) for _ in self.eval_sets]

    def forward(self, **batch: Any):
        return self.model(**model_inputs(batch))

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self(**batch).loss
        check_finite_loss(self, loss)
        keep_train_loss(self, loss, batch["input_ids"].shape[0])
        return loss

    def _eval_step(self, batch: Mapping[str, Any], dataloader_idx: int) -> None:
        inputs = {k: v for k, v in batch.items() if k not in ("start_positions", "end_positions")}
        out = self(**inputs)
        lengths = batch["attention_mask"].sum(-1).tolist()  # padding positions never hold an answer
        self.scorers[eval_set(self, dataloader_idx)].add(
            batch,
            [out.start_logits[i, :n].float().cpu().numpy() for i, n in enumerate(lengths)],
            [out.end_logits[i, :n].float().cpu().numpy() for i, n in enumerate(lengths)],
        )

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, dataloader_idx)

    def test_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, dataloader_idx)

    def _log_epoch(self, stage: str) -> None:
        metrics = self.scores[stage]
        for i, scorer in enumerate(self.scorers):
            scores, n = scorer.scores()
            for name in SCORES:  # every rank updates every set (compute() syncs), a rank without examples by 0
                value = torch.tensor(scores.get(name, 0.0))
                metrics[f"{i}-{name}"].update(value, weight=n)
        by_set: dict[str, dict[str, float]] = {}
        for key, metric in metrics.items():
            index, name = key.split("-", 1)
            value = float(metric.compute())
            metric.reset()
            if value == value:  # NaN: no example of this set was seen
                by_set.setdefault(self.eval_sets[int(index)], {})[name] = value
        log_eval_scores(self, stage, by_set)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    on_fit_start = fit_in_train_mode
    on_train_batch_end = log_train_loss

    def configure_optimizers(self):
        return configure_adamw(self, self.hparams.optimizer, self.hparams.scheduler)
