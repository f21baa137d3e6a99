"""Sentence(-pair) classification (XNLI, PAWS-X): accuracy per evaluation language."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from lightning import LightningModule

from xmod_lab.models import XmodForSequenceClassification
from xmod_lab.tasks.common import (
    apply_freeze,
    build_model,
    check_finite_loss,
    check_languages,
    compute_means,
    configure_adamw,
    eval_languages,
    language_metric,
    log_per_language,
    model_inputs,
    per_language_means,
    plain,
    split_by_language,
)


class SequenceClassificationTask(LightningModule):
    """X-MOD + classification head; logs `{val,test}/<lang>/acc` and `{val,test}/avg/acc`.

    Args:
        model: {pretrained, config} (conf/model), see `build_model`.
        languages: {adapters, add, train, eval} (conf/languages).
        num_labels: number of classes (defined once, in the data config).
        adapter: adapter architecture options (conf/adapter).
        freeze: arguments of `xmod_lab.models.freezing.apply_freeze_policy` (conf/freeze).
        optimizer: {lr, betas, eps, weight_decay} for AdamW.
        scheduler: {name: constant|linear, warmup_steps, warmup_ratio}.
        model_config: set by the task itself (the built XmodConfig) so `load_from_checkpoint`
            rebuilds the exact architecture without downloading anything.
    """

    monitor, monitor_mode = "val/avg/acc", "max"

    def __init__(
        self,
        model: Mapping[str, Any],
        languages: Mapping[str, Any],
        num_labels: int,
        adapter: Mapping[str, Any] | None = None,
        freeze: Mapping[str, Any] | None = None,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        model_config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.hparams.update({k: plain(v) for k, v in self.hparams.items()})
        hp = self.hparams
        self.model = build_model(XmodForSequenceClassification, hp.model, hp.languages, hp.adapter,
                                 {"num_labels": num_labels}, model_config)
        self.hparams["model_config"] = self.model.config.to_dict()
        self.eval_languages = eval_languages(hp.languages)
        check_languages(self.model, self.eval_languages, "languages.eval")
        self.parameter_counts = apply_freeze(self.model, **(hp.freeze or {}))
        self.metrics = per_language_means(self.eval_languages)

    def forward(self, **batch: Any):
        return self.model(**model_inputs(batch))

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self(**batch).loss
        check_finite_loss(self, loss)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        return loss

    def _eval_step(self, batch: Mapping[str, Any], stage: str) -> None:
        logits = self(**{k: v for k, v in batch.items() if k != "labels"}).logits
        correct = (logits.argmax(-1) == batch["labels"]).float()
        for lang, mask in split_by_language(batch["lang_ids"], self.model.config.languages).items():
            language_metric(self.metrics[stage], lang).update(correct[mask])

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, "test")

    def _log_epoch(self, stage: str) -> None:
        scores = {lang: {"acc": 100.0 * value} for lang, value in compute_means(self.metrics[stage]).items()}
        log_per_language(self, stage, scores)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def configure_optimizers(self):
        return configure_adamw(self, self.hparams.optimizer or {"lr": 2e-5}, self.hparams.scheduler or {})

