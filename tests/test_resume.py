"""A resumed run keeps the run's memory: best checkpoint, best score and top-k, so it tests the checkpoint an
uninterrupted run tests.

The monitored score is scripted per epoch (best at epoch 1, a later epoch re-entering the top 2), so the
ranking does not hang on what a tiny model happens to learn; the weights and test scores are real.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from tests.tasks.run_helpers import SHRINK, SYNTHETIC, compose_run, no_hydra
from xmod_lab.checkpoints import adopt_checkpoints, load_checkpoint
from xmod_lab.train import train

SCORES = [1.0, 5.0, 3.0, 2.0, 4.0]  # per epoch: best 1, then 4 beats 2 for the second place
KILLED_AT = 3  # the first run dies as epoch 3 starts: after its best epoch, before the end


class ScriptedScore(Callback):
    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            pl_module.log("val/en/scripted", SCORES[trainer.current_epoch])


class Kill(Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == KILLED_AT:
            raise RuntimeError("killed")


COMMON = [f"trainer.max_epochs={len(SCORES)}", "monitor=val/en/scripted", "monitor_mode=max",
          "callbacks.model_checkpoint.save_top_k=2", f"+callbacks.score._target_={__name__}.ScriptedScore"]


def run(tmp: Path, name: str, *overrides: str) -> tuple[dict, Path]:
    with no_hydra():
        cfg = compose_run("train", tmp / name, tmp / "cache", [*SHRINK, *SYNTHETIC, *COMMON, *overrides])
    train(cfg)
    return json.loads((tmp / name / "results.json").read_text()), tmp / name


def top_k(run_dir: Path) -> dict[str, float]:
    state = next(v for k, v in load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["callbacks"].items()
                 if k.startswith("XmodCheckpoint"))
    return {Path(p).name: float(v) for p, v in state["best_k_models"].items()}


def test_a_resumed_run_tests_the_checkpoint_an_uninterrupted_run_tests(tmp_path):
    whole, whole_dir = run(tmp_path, "uninterrupted")
    assert Path(whole["checkpoint"]).name.startswith("epoch01-") and whole["best_score"] == 5.0

    with pytest.raises(RuntimeError, match="killed"):
        run(tmp_path, "first", f"+callbacks.kill._target_={__name__}.Kill")
    first_ckpts = sorted(p.name for p in (tmp_path / "first" / "checkpoints").iterdir())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed, resumed_dir = run(tmp_path, "resumed", f"ckpt_path={tmp_path / 'first' / 'checkpoints' / 'last.ckpt'}")
    said = [str(w.message) for w in caught]
    assert not [m for m in said if "dirpath has changed" in m or "could not find the monitored key" in m], said

    assert resumed["global_step"] == whole["global_step"]
    # the same checkpoint (by epoch and step), the same score, inside the resumed run's own directory
    assert Path(resumed["checkpoint"]).name == Path(whole["checkpoint"]).name
    assert Path(resumed["checkpoint"]).parent == resumed_dir / "checkpoints"
    assert resumed["best_score"] == whole["best_score"] == 5.0
    torch.testing.assert_close(load_checkpoint(resumed["checkpoint"])["state_dict"],
                               load_checkpoint(whole["checkpoint"])["state_dict"])
    assert resumed["test"] == whole["test"]
    # top-k: epoch 4 pushed the adopted epoch 2 out, as it did in the uninterrupted run
    assert top_k(resumed_dir) == top_k(whole_dir) and sorted(top_k(whole_dir).values()) == [4.0, 5.0]
    on_disk = sorted(p.name for p in (resumed_dir / "checkpoints").iterdir())
    assert on_disk == sorted(p.name for p in (whole_dir / "checkpoints").iterdir())
    # the killed run's files are left alone
    assert sorted(p.name for p in (tmp_path / "first" / "checkpoints").iterdir()) == first_ckpts


def test_a_moved_run_directory_still_resumes_with_its_best_checkpoint(tmp_path):
    with pytest.raises(RuntimeError, match="killed"):
        run(tmp_path, "first", f"+callbacks.kill._target_={__name__}.Kill")
    (tmp_path / "first").rename(tmp_path / "moved")
    resumed, resumed_dir = run(tmp_path, "resumed", f"ckpt_path={tmp_path / 'moved' / 'checkpoints' / 'last.ckpt'}")
    assert Path(resumed["checkpoint"]).name.startswith("epoch01-") and resumed["best_score"] == 5.0
    assert Path(resumed["checkpoint"]).is_file()


def test_a_missing_top_k_file_is_left_out_with_a_warning(tmp_path, caplog):
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    (old / "epoch01-step12.ckpt").write_bytes(b"best")
    state = {"monitor": "val/en/acc", "best_k_models": {str(old / "epoch01-step12.ckpt"): torch.tensor(5.0),
                                                         str(old / "epoch02-step18.ckpt"): torch.tensor(3.0)}}
    adopted = adopt_checkpoints(state, new, resumed_from=None, write=True)
    assert adopted == {str(new / "epoch01-step12.ckpt"): torch.tensor(5.0)}
    assert (new / "epoch01-step12.ckpt").read_bytes() == b"best" and (old / "epoch01-step12.ckpt").is_file()
    assert "epoch02-step18.ckpt" in caplog.text and "missing" in caplog.text
