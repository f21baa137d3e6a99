"""Extractive QA (SQuAD -> XQuAD / MLQA / TyDiQA-GoldP): SQuAD exact match and F1 per language.

Scores are computed on text answers: the task keeps each evaluation feature's start/end logits and
offsets, and at the end of the epoch the datamodule (which holds contexts and gold answers) turns
them into answer strings and scores them (`QuestionAnsweringDataModule.score`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from lightning import LightningModule
from torch import nn

from xmod_lab.models import XmodForQuestionAnswering
from xmod_lab.tasks.common import (
    FloatMean,
    apply_freeze,
    build_model,
    check_finite_loss,
    check_languages,
    compute_means,
    configure_adamw,
    eval_languages,
    log_per_language,
    model_inputs,
    plain,
)


class QuestionAnsweringTask(LightningModule):
    """X-MOD + span head; logs `{val,test}/<lang>/exact_match` and `/f1`, and their averages.

    The arguments are those of `SequenceClassificationTask` (no label set: spans are positions).
    """

    monitor, monitor_mode = "val/avg/f1", "max"

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
        self.hparams.update({k: plain(v) for k, v in self.hparams.items()})
        hp = self.hparams
        self.model = build_model(XmodForQuestionAnswering, hp.model, hp.languages, hp.adapter, None, model_config)
        self.hparams["model_config"] = self.model.config.to_dict()
        self.eval_languages = eval_languages(hp.languages)
        check_languages(self.model, self.eval_languages, "languages.eval")
        self.parameter_counts = apply_freeze(self.model, **(hp.freeze or {}))
        self.scores = nn.ModuleDict({
            stage: nn.ModuleDict({
                f"{lang}-{name}": FloatMean() for lang in self.eval_languages for name in ("exact_match", "f1")
            })
            for stage in ("val", "test")
        })
        self._features: dict[int, dict[str, list]] = {}

    def forward(self, **batch: Any):
        return self.model(**model_inputs(batch))

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self(**batch).loss
        check_finite_loss(self, loss)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        return loss

    def _eval_step(self, batch: Mapping[str, Any], dataloader_idx: int) -> None:
        inputs = {k: v for k, v in batch.items() if k not in ("start_positions", "end_positions")}
        out = self(**inputs)
        lengths = batch["attention_mask"].sum(-1).tolist()
        store = self._features.setdefault(dataloader_idx, {"ids": [], "offsets": [], "start": [], "end": []})
        store["ids"] += list(batch["example_id"])
        store["offsets"] += list(batch["offset_mapping"])
        for i, n in enumerate(lengths):  # padding positions never hold an answer
            store["start"].append(out.start_logits[i, :n].float().cpu().numpy())
            store["end"].append(out.end_logits[i, :n].float().cpu().numpy())

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, dataloader_idx)

    def test_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, dataloader_idx)

    def _log_epoch(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if not hasattr(datamodule, "score"):
            raise TypeError("QuestionAnsweringTask scores text answers through its datamodule's score() "
                            "(xmod_lab.data.QuestionAnsweringDataModule); fit/test it with datamodule=...")
        split = "validation" if stage == "val" else "test"
        metrics = self.scores[stage]
        for idx, feats in sorted(self._features.items()):
            lang = datamodule.eval_languages[idx]
            scores = datamodule.score(split, idx, feats["ids"], feats["offsets"], feats["start"], feats["end"],
                                      only_seen=self.trainer.world_size > 1)
            n = len(set(feats["ids"]))  # examples of this rank's shard: weights the cross-rank mean
            for name in ("exact_match", "f1"):
                metrics[f"{lang}-{name}"].update(torch.tensor(scores[name]), weight=n)
        self._features = {}
        by_lang: dict[str, dict[str, float]] = {}
        for key, value in compute_means(metrics).items():
            lang, name = key.rsplit("-", 1)
            by_lang.setdefault(lang, {})[name] = value
        log_per_language(self, stage, by_lang)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def configure_optimizers(self):
        return configure_adamw(self, self.hparams.optimizer or {"lr": 3e-5}, self.hparams.scheduler or {})
