"""Masked LM (pre-training, adding a language) and causal LM: loss and perplexity per evaluation set.

Two LightningModules that differ only in the head class and in how labels line up with logits;
the collator builds the labels (MLM: masked positions, -100 elsewhere; CLM: the input ids, -100
on padding; the causal shift happens here and in the head).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from lightning import LightningModule
from torch import nn

from xmod_lab.data.collate import model_inputs
from xmod_lab.data.language_modeling import LanguageModelingDataModule
from xmod_lab.models import XmodForCausalLM, XmodForMaskedLM
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


def _token_losses(logits: torch.Tensor, labels: torch.Tensor, causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token cross-entropy (B, T') and the mask of tokens that count."""
    if causal:  # position t predicts token t+1
        logits, labels = logits[:, :-1], labels[:, 1:]
    losses = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100, reduction="none")
    return losses.view(labels.shape), labels != -100


def _lm_scores(metrics: nn.ModuleDict, names: list[str]) -> dict[str, dict[str, float]]:
    return {name: {"loss": loss, "ppl": math.exp(min(loss, 50.0))} for name, loss in compute_means(metrics, names).items()}


class MaskedLMTask(LightningModule):
    """X-MOD + MLM head; logs `{val,test}/<eval set>/loss` and `/ppl` (token-weighted within a language).

    The arguments are those of `SequenceClassificationTask` (no labels: the vocabulary is the label set).
    For adding a language use `+languages.add.<new>=<init_from>` and `freeze.policy=adapters_only`.
    """

    DATA = LanguageModelingDataModule  # the datamodule it trains on (xmod_lab.runs.check_task_fits_data)
    OBJECTIVE = "mlm"  # the data's `objective`

    main_metric, monitor_mode = "loss", "min"
    causal = False

    def __init__(
        self,
        model: Mapping[str, Any],
        languages: Mapping[str, Any],
        adapter: Mapping[str, Any] | None = None,
        freeze: Mapping[str, Any] | None = None,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        model_config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        setup_task(self, XmodForMaskedLM)
        self.losses = per_set_means(len(self.eval_sets))

    def forward(self, **batch: Any):
        return self.model(**model_inputs(batch))

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        # MLM: run the (250k-word) LM head on the masked positions only, as fairseq does: the same loss,
        # about twice the step throughput at base size (docs/benchmarks.md)
        extra = {} if self.causal else {"masked_logits_only": True}
        loss = self.model(**model_inputs(batch), **extra).loss
        check_finite_loss(self, loss)
        keep_train_loss(self, loss, batch["input_ids"].shape[0])
        return loss

    def _eval_step(self, batch: Mapping[str, Any], stage: str, dataloader_idx: int) -> None:
        logits = self(**{k: v for k, v in batch.items() if k != "labels"}).logits
        losses, counted = _token_losses(logits, batch["labels"], self.causal)
        self.losses[stage][str(eval_set(self, dataloader_idx))].update(losses[counted])

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, "val", dataloader_idx)

    def test_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, "test", dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        log_eval_scores(self, "val", _lm_scores(self.losses["val"], self.eval_sets))

    def on_test_epoch_end(self) -> None:
        log_eval_scores(self, "test", _lm_scores(self.losses["test"], self.eval_sets))

    on_fit_start = fit_in_train_mode
    on_train_batch_end = log_train_loss

    def configure_optimizers(self):
        return configure_adamw(self, self.hparams.optimizer, self.hparams.scheduler)


class CausalLMTask(LightningModule):
    """X-MOD as a decoder (`is_decoder=True`) + LM head; logs `{val,test}/<eval set>/loss` and `/ppl`."""

    DATA = LanguageModelingDataModule  # the datamodule it trains on (xmod_lab.runs.check_task_fits_data)
    OBJECTIVE = "clm"  # the data's `objective`

    main_metric, monitor_mode = "loss", "min"
    causal = True

    def __init__(
        self,
        model: Mapping[str, Any],
        languages: Mapping[str, Any],
        adapter: Mapping[str, Any] | None = None,
        freeze: Mapping[str, Any] | None = None,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        model_config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        setup_task(self, XmodForCausalLM, {"is_decoder": True})
        self.losses = per_set_means(len(self.eval_sets))

    forward = MaskedLMTask.forward
    training_step = MaskedLMTask.training_step
    _eval_step = MaskedLMTask._eval_step
    validation_step = MaskedLMTask.validation_step
    test_step = MaskedLMTask.test_step
    on_validation_epoch_end = MaskedLMTask.on_validation_epoch_end
    on_test_epoch_end = MaskedLMTask.on_test_epoch_end
    on_fit_start = MaskedLMTask.on_fit_start
    on_train_batch_end = MaskedLMTask.on_train_batch_end
    configure_optimizers = MaskedLMTask.configure_optimizers
