"""Sentence(-pair) classification (XNLI, PAWS-X): accuracy per evaluation set."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from lightning import LightningModule

from xmod_lab.data.collate import model_inputs
from xmod_lab.data.sentence_pair import SentencePairDataModule
from xmod_lab.models import XmodForSequenceClassification
from xmod_lab.tasks.common import (
    check_finite_loss,
    compute_means,
    configure_adamw,
    eval_set,
    fit_in_train_mode,
    keep_train_loss,
    log_eval_scores,
    log_train_loss,
    per_set_means,
    setup_task,
)


def label_head(label_names: Sequence[str]) -> dict[str, Any]:
    """The head's XmodConfig fields for a label set (transformers' pipelines read id2label)."""
    names = [str(n) for n in label_names]
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"label_names {names}: need at least one label, each once (data.label_names)")
    return {"num_labels": len(names), "id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}


class SequenceClassificationTask(LightningModule):
    """X-MOD + classification head; logs `{val,test}/<eval set>/acc` and the averages `avg`, `zs_avg`.

    Args:
        model: {pretrained, config} (conf/model), see `build_model`.
        languages: {adapters, add, train, eval} (conf/languages); `eval` names the evaluation sets.
        label_names: class names in label-id order (defined once, in the data config).
        adapter: XmodConfig adapter fields (conf/adapter).
        freeze: arguments of `xmod_lab.models.freezing.apply_freeze_policy` (conf/freeze).
        optimizer: {lr, betas, eps, weight_decay} for AdamW (needed to train).
        scheduler: {name: constant|linear, warmup_steps, warmup_ratio}.
        model_config: set by the task itself (the built XmodConfig) so `load_from_checkpoint`
            rebuilds the exact architecture without downloading anything.
    """

    DATA = SentencePairDataModule  # the datamodule it trains on (xmod_lab.runs.check_task_fits_data)

    main_metric, monitor_mode = "acc", "max"

    def __init__(
        self,
        model: Mapping[str, Any],
        languages: Mapping[str, Any],
        label_names: Sequence[str],
        adapter: Mapping[str, Any] | None = None,
        freeze: Mapping[str, Any] | None = None,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        model_config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        setup_task(self, XmodForSequenceClassification, label_head(label_names))
        self.metrics = per_set_means(len(self.eval_sets))

    def forward(self, **batch: Any):
        return self.model(**model_inputs(batch))

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self(**batch).loss
        check_finite_loss(self, loss)
        keep_train_loss(self, loss, batch["input_ids"].shape[0])
        return loss

    def _eval_step(self, batch: Mapping[str, Any], stage: str, dataloader_idx: int) -> dict[str, torch.Tensor]:
        logits = self(**{k: v for k, v in batch.items() if k != "labels"}).logits
        correct = (logits.argmax(-1) == batch["labels"]).float()
        self.metrics[stage][str(eval_set(self, dataloader_idx))].update(correct)
        return {"logits": logits}  # the scored predictions, counted by diagnostics.PredictedClasses

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        return self._eval_step(batch, "val", dataloader_idx)

    def test_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        return self._eval_step(batch, "test", dataloader_idx)

    def _log_epoch(self, stage: str) -> None:
        means = compute_means(self.metrics[stage], self.eval_sets)
        log_eval_scores(self, stage, {name: {"acc": 100.0 * value} for name, value in means.items()})

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    on_fit_start = fit_in_train_mode
    on_train_batch_end = log_train_loss

    def configure_optimizers(self):
        return configure_adamw(self, self.hparams.optimizer, self.hparams.scheduler)
