"""Multiple choice (one X-MOD pass per choice, a score per choice): accuracy per evaluation language."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning import LightningModule

from xmod_lab.models import XmodForMultipleChoice
from xmod_lab.tasks.common import (
    apply_freeze,
    build_model,
    check_languages,
    eval_languages,
    per_language_means,
    plain,
)
from xmod_lab.tasks.sequence_classification import SequenceClassificationTask


class MultipleChoiceTask(LightningModule):
    """X-MOD + multiple-choice head; batches hold input_ids (B, C, T) and one lang_id per question (B).

    Logs `{val,test}/<lang>/acc` and `{val,test}/avg/acc`.

    Args:
        model: {pretrained, config} (conf/model), see `build_model`.
        languages: {adapters, add, train, eval} (conf/languages).
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
        self.model = build_model(XmodForMultipleChoice, hp.model, hp.languages, hp.adapter,
                                 None, model_config)
        self.hparams["model_config"] = self.model.config.to_dict()
        self.eval_languages = eval_languages(hp.languages)
        check_languages(self.model, self.eval_languages, "languages.eval")
        self.parameter_counts = apply_freeze(self.model, **(hp.freeze or {}))
        self.metrics = per_language_means(self.eval_languages)

    # Choices are scored like single sequences (the head flattens (B, C, T) and reshapes the logits to (B, C)),
    # so steps, metrics and the optimizer are SequenceClassificationTask's, reused rather than repeated.
    forward = SequenceClassificationTask.forward
    training_step = SequenceClassificationTask.training_step
    _eval_step = SequenceClassificationTask._eval_step
    validation_step = SequenceClassificationTask.validation_step
    test_step = SequenceClassificationTask.test_step
    _log_epoch = SequenceClassificationTask._log_epoch
    on_validation_epoch_end = SequenceClassificationTask.on_validation_epoch_end
    on_test_epoch_end = SequenceClassificationTask.on_test_epoch_end
    configure_optimizers = SequenceClassificationTask.configure_optimizers
