"""Token classification (PAN-X NER, UD-POS): seqeval entity F1 and token accuracy per evaluation set."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from lightning import LightningModule
from torch import nn
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from xmod_lab.data.collate import model_inputs
from xmod_lab.data.token_classification import TokenClassificationDataModule
from xmod_lab.models import XmodForTokenClassification
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
from xmod_lab.tasks.sequence_classification import label_head

IGNORE = -100  # label of sub-words after the first and of special tokens (set by the collator)


class SeqevalF1(Metric):
    """Entity-level micro F1 (seqeval, CoNLL rules) over word-level tag ids; -100 positions ignored.

    Sequences are stored flat with a -1 separator so the states are tensors that sync across ranks.
    """

    full_state_update = False

    def __init__(self, label_names: Sequence[str]) -> None:
        super().__init__()
        self.label_names = list(label_names)
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:  # both (B, T)
        for p, t in zip(preds, target, strict=True):
            keep = t != IGNORE
            self.preds.append(torch.cat([p[keep], p.new_tensor([-1])]))
            self.target.append(torch.cat([t[keep], t.new_tensor([-1])]))

    def compute(self) -> torch.Tensor:
        from seqeval.metrics import f1_score

        if not self.target:
            return torch.tensor(float("nan"))
        y_true, y_pred = self._sentences(dim_zero_cat(self.target)), self._sentences(dim_zero_cat(self.preds))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # seqeval warns about sentences without entities
            return torch.tensor(float(f1_score(y_true, y_pred, zero_division=0)))

    def _sentences(self, flat: torch.Tensor) -> list[list[str]]:
        sentences, current = [], []
        for tag in flat.tolist():
            if tag == -1:
                sentences.append(current)
                current = []
            else:
                current.append(self.label_names[tag])
        return sentences


_ENTITY_PREFIXES = ("B-", "I-", "E-", "S-", "L-", "U-")


def is_entity_scheme(label_names: Sequence[str]) -> bool:
    """Whether tags are a BIO/IOBES entity scheme (`O`, `B-PER`, ...), the only ones seqeval's F1 reads."""
    return any(n.startswith("B-") for n in label_names) and all(
        n == "O" or n.startswith(_ENTITY_PREFIXES) for n in label_names)


class TokenClassificationTask(LightningModule):
    """X-MOD + token classification head; logs `{val,test}/<eval set>/f1` (seqeval) and `/acc`.

    Args:
        label_names: tag names in label-id order (defined once, in the data config).
        seqeval: report seqeval entity F1 (and monitor it); None: when the tags are a BIO/IOBES scheme
            (PAN-X), not for other tag sets (UD-POS: token accuracy only).
        The other arguments are those of `SequenceClassificationTask`.
    """

    DATA = TokenClassificationDataModule  # the datamodule it trains on (xmod_lab.runs.check_task_fits_data)

    def __init__(
        self,
        model: Mapping[str, Any],
        languages: Mapping[str, Any],
        label_names: Sequence[str],
        seqeval: bool | None = None,
        adapter: Mapping[str, Any] | None = None,
        freeze: Mapping[str, Any] | None = None,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        model_config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        names = [str(n) for n in label_names]
        if seqeval is None:
            seqeval = is_entity_scheme(names)
        elif seqeval and not is_entity_scheme(names):
            raise ValueError(f"seqeval=true needs BIO-style tags (O, B-X, I-X, ...); {names} are not: entity F1 "
                             "over them would be meaningless. Use task.seqeval=null (token accuracy).")
        setup_task(self, XmodForTokenClassification, label_head(names))
        self.main_metric, self.monitor_mode = ("f1" if seqeval else "acc"), "max"
        self.accuracy = per_set_means(len(self.eval_sets))
        self.f1 = nn.ModuleDict({
            stage: nn.ModuleDict({str(i): SeqevalF1(names) for i in range(len(self.eval_sets))})
            for stage in ("val", "test")
        }) if seqeval else None

    def forward(self, **batch: Any):
        return self.model(**model_inputs(batch))

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self(**batch).loss
        check_finite_loss(self, loss)
        keep_train_loss(self, loss, batch["input_ids"].shape[0])
        return loss

    def _eval_step(self, batch: Mapping[str, Any], stage: str, dataloader_idx: int) -> dict[str, torch.Tensor]:
        labels = batch["labels"]
        logits = self(**{k: v for k, v in batch.items() if k != "labels"}).logits
        preds = logits.argmax(-1)  # (B, T)
        index = str(eval_set(self, dataloader_idx))
        self.accuracy[stage][index].update((preds == labels).float()[labels != IGNORE])
        if self.f1 is not None:
            self.f1[stage][index].update(preds, labels)
        return {"logits": logits}  # the scored predictions, counted by diagnostics.PredictedClasses

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        return self._eval_step(batch, "val", dataloader_idx)

    def test_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        return self._eval_step(batch, "test", dataloader_idx)

    def _log_epoch(self, stage: str) -> None:
        scores = {name: {"acc": 100.0 * v} for name, v in compute_means(self.accuracy[stage], self.eval_sets).items()}
        if self.f1 is not None:
            for index, metric in self.f1[stage].items():
                value = float(metric.compute())
                metric.reset()
                if not math.isnan(value):
                    scores.setdefault(self.eval_sets[int(index)], {})["f1"] = 100.0 * value
        log_eval_scores(self, stage, scores)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    on_fit_start = fit_in_train_mode
    on_train_batch_end = log_train_loss

    def configure_optimizers(self):
        return configure_adamw(self, self.hparams.optimizer, self.hparams.scheduler)
