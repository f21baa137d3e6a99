"""train/loss is logged only where it is written (tasks.common.log_train_loss): the loggers get the same rows as
when every step called self.log, each row holds its own step's loss, and epoch-end callbacks read the last step's."""

from __future__ import annotations

import csv
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from tests.tasks.run_helpers import SHRINK, SYNTHETIC, compose_run, no_hydra
from xmod_lab.tasks.sequence_classification import SequenceClassificationTask
from xmod_lab.train import train

STEPS = 12  # 2 epochs of 6 batches (SYNTHETIC: 96 pairs, batches of 16)


class LossSpy(Callback):
    """Each step's training loss, and the train/loss callbacks read at each epoch's end."""

    losses: dict[int, float] = {}
    at_epoch_end: list[tuple[int, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        LossSpy.losses[trainer.global_step] = float(outputs["loss"])

    def on_train_epoch_end(self, trainer, pl_module):
        LossSpy.at_epoch_end.append((trainer.global_step, float(trainer.callback_metrics["train/loss"])))


class StopAt7(Callback):
    """Stops training after step 7, which log_every_n_steps=4 would not write: Lightning writes it anyway."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == 7:
            trainer.should_stop = True


def _run(tmp_path: Path, name: str, *overrides: str) -> dict[int, float]:
    LossSpy.losses, LossSpy.at_epoch_end = {}, []
    with no_hydra():
        cfg = compose_run("train", tmp_path / name, tmp_path.parent / "cache", [
            *SHRINK, *SYNTHETIC, "trainer.max_epochs=2", "trainer.log_every_n_steps=4",
            "+callbacks.loss_spy._target_=tests.tasks.test_train_loss_logging.LossSpy", *overrides])  # fmt: skip
    train(cfg)
    with (tmp_path / name / "csv" / "metrics.csv").open() as f:
        return {int(row["step"]): float(row["train/loss"]) for row in csv.DictReader(f) if row.get("train/loss")}


def _log_every_step(self, *_):
    loss, batch_size = self._train_loss
    self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)


def test_the_loggers_get_the_rows_they_got_when_every_step_logged(tmp_path, monkeypatch):
    written = _run(tmp_path, "gated")
    losses = dict(LossSpy.losses)
    with monkeypatch.context() as m:  # the previous behaviour: self.log on every step
        m.setattr(SequenceClassificationTask, "on_train_batch_end", _log_every_step)
        reference = _run(tmp_path, "every_step")
    assert written == reference
    assert sorted(written) == [3, 7, 11]  # Lightning's rule: every 4th step
    for step, value in written.items():  # each row holds its own step's loss (global_step counts after the step)
        assert abs(value - losses[step + 1]) <= 1e-6 * max(1.0, abs(value))


def test_a_stop_between_two_writes_writes_that_steps_own_loss(tmp_path):
    written = _run(tmp_path, "stopped", "+callbacks.stop._target_=tests.tasks.test_train_loss_logging.StopAt7")
    assert max(LossSpy.losses) == 7  # training stopped after step 7
    assert sorted(written) == [3, 6]  # the stop's row (Lightning's step 6 is the 7th step)
    assert abs(written[6] - LossSpy.losses[7]) <= 1e-6 * max(1.0, abs(written[6]))
    assert written[6] != written[3]  # not the previous write's value


def test_epoch_end_callbacks_read_the_last_steps_loss(tmp_path):
    _run(tmp_path, "epochs", "trainer.log_every_n_steps=50")  # no step is written: only the epochs' last batches
    assert [step for step, _ in LossSpy.at_epoch_end] == [6, 12]
    for step, value in LossSpy.at_epoch_end:
        assert abs(value - LossSpy.losses[step]) <= 1e-6 * max(1.0, abs(value))
