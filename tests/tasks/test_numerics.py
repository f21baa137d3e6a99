"""A run that goes non-finite fails; a precision the device cannot train in is refused; metrics stay float32."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from tests.tasks.run_helpers import SHRINK, SYNTHETIC, compose_run, no_hydra
from tests.tasks.test_tasks import CASES, COMMON, batch, loader, trainer
from xmod_lab.tasks import QuestionAnsweringTask, SequenceClassificationTask
from xmod_lab.train import train


class PoisonWeights(Callback):
    """Turns the classifier weights to NaN before the third step: a run diverging mid-training."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 2:
            with torch.no_grad():
                for p in pl_module.model.classifier.parameters():
                    p.fill_(float("nan"))


def run(tmp_path, *overrides):
    with no_hydra():
        cfg = compose_run("train", tmp_path / "run", tmp_path / "cache", [*SHRINK, *SYNTHETIC, *overrides])
    return train(cfg)


def test_nan_loss_stops_the_run_with_a_clear_error_and_no_results(tmp_path):
    with pytest.raises(FloatingPointError, match=r"training loss is nan at step 2 \(epoch 0\).*diverged"):
        run(tmp_path, "+callbacks.poison._target_=tests.tasks.test_numerics.PoisonWeights")
    assert not (tmp_path / "run" / "run_complete").exists()
    assert not (tmp_path / "run" / "results.json").exists()


@pytest.mark.parametrize(("cls", "extra", "kind", "metrics"), CASES, ids=[c[0].__name__ for c in CASES])
def test_every_task_refuses_a_non_finite_training_loss(cls, extra, kind, metrics):
    task = cls(**COMMON, **extra)
    with torch.no_grad():
        next(p for p in task.model.parameters() if p.requires_grad).fill_(float("inf"))
    with pytest.raises(FloatingPointError, match="training loss is"):
        trainer(max_steps=1).fit(task, train_dataloaders=loader(kind))


def test_fp16_on_cpu_is_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"trainer.precision=16-true on CPU.*32-true"):
        run(tmp_path, "trainer.precision=16-true")
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before any step


@pytest.mark.parametrize("cls", [SequenceClassificationTask, QuestionAnsweringTask])
def test_metrics_accumulate_in_float32_under_bf16_true(cls):
    """precision=bf16-true casts the whole module; its metric states must not follow (0.734 read 73.44)."""
    task = cls(**COMMON, **({"label_names": ["a", "b", "c"]} if cls is SequenceClassificationTask else {}))
    task.to(torch.bfloat16)
    metrics = task.metrics["test"] if cls is SequenceClassificationTask else task.scores["test"]
    metric = next(iter(metrics.values()))
    metric.update(torch.tensor([1.0] * 734 + [0.0] * 266, dtype=torch.bfloat16))
    assert float(metric.compute()) == pytest.approx(0.734, abs=1e-6)


def test_bf16_true_evaluation_reports_float32_accuracy():
    task = SequenceClassificationTask(**COMMON, label_names=["a", "b", "c"])
    batches = [batch("seq", b=2, seed=i) for i in range(500)]
    runner = trainer(precision="bf16-true")
    runner.test(task, dataloaders=torch.utils.data.DataLoader(batches, batch_size=None), verbose=False)
    # one dataloader is one evaluation set ("en", whatever the rows' adapters): 1000 examples, steps of 0.1%
    accuracy = float(runner.callback_metrics["test/en/acc"])
    assert accuracy * 10 == pytest.approx(round(accuracy * 10), abs=1e-3)  # a multiple of 100/1000
