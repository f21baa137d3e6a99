"""Multiple choice (one X-MOD pass per choice, a score per choice): accuracy per evaluation language."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning import LightningModule

from xmod_lab.data.multiple_choice import MultipleChoiceDataModule
from xmod_lab.models import XmodForMultipleChoice
from xmod_lab.tasks.common import per_set_means, setup_task
from xmod_lab.tasks.sequence_classification import SequenceClassificationTask


class MultipleChoiceTask(LightningModule):
    """X-MOD + multiple-choice head; batches hold input_ids (B, C, T) and one lang_id per question (B).

    Logs `{val,test}/<eval set>/acc` and the averages `avg`, `zs_avg`.

    Args:
        model: {pretrained, config} (conf/model), see `build_model`.
        languages: {adapters, add, train, eval} (conf/languages).
        adapter: XmodConfig adapter fields (conf/adapter).
        freeze: arguments of `xmod_lab.models.freezing.apply_freeze_policy` (conf/freeze).
        optimizer: {lr, betas, eps, weight_decay} for AdamW.
        scheduler: {name: constant|linear, warmup_steps, warmup_ratio}.
        model_config: set by the task itself (the built XmodConfig) so `load_from_checkpoint`
            rebuilds the exact architecture without downloading anything.
    """

    DATA = MultipleChoiceDataModule  # the datamodule it trains on (xmod_lab.runs.check_task_fits_data)

    main_metric, monitor_mode = "acc", "max"

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
        setup_task(self, XmodForMultipleChoice)
        self.metrics = per_set_means(len(self.eval_sets))

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
    on_fit_start = SequenceClassificationTask.on_fit_start
    on_train_batch_end = SequenceClassificationTask.on_train_batch_end
    configure_optimizers = SequenceClassificationTask.configure_optimizers
