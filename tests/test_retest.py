"""Re-testing reproduces the run's table: `xmod-eval ckpt_path=<run dir>` tests the checkpoint results.json
names (not last.ckpt) and writes the same diagnostics and flags as the training run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.tasks.run_helpers import SHRINK, SYNTHETIC, compose_run, no_hydra
from xmod_lab.checkpoints import load_checkpoint
from xmod_lab.eval import evaluate
from xmod_lab.train import train


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """2 epochs; monitoring `epoch` in min mode keeps epoch 0 the best, so the tested checkpoint is not last.ckpt."""
    tmp = tmp_path_factory.mktemp("retest")
    with no_hydra():
        cfg = compose_run("train", tmp / "run", tmp / "cache", [*SHRINK, *SYNTHETIC, "trainer.max_epochs=2",
                                                                "monitor=epoch", "monitor_mode=min"])
    train(cfg)
    return tmp / "run"


def retest(run: Path, out: Path, *overrides: str) -> dict:
    with no_hydra():  # the checkpoint alone: everything else from the run's config.yaml, as a user would
        cfg = compose_run("eval", out, run.parent / "cache", ["trainer.enable_progress_bar=false", *overrides])
    evaluate(cfg)
    return json.loads((out / "results.json").read_text())


def test_a_run_directory_retests_the_checkpoint_the_run_tested(run_dir, tmp_path):
    trained = json.loads((run_dir / "results.json").read_text())
    tested = Path(trained["checkpoint"])
    assert tested.name.startswith("epoch00-")  # the precondition: the tested checkpoint is not the latest state
    last = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["state_dict"]
    assert any(not torch.equal(last[k], v) for k, v in load_checkpoint(tested)["state_dict"].items())

    again = retest(run_dir, tmp_path / "eval", f"ckpt_path={run_dir}")
    assert again["checkpoint"] == str(tested)
    assert again["test"] == trained["test"]
    assert again["diagnostics"] == trained["diagnostics"] and again["diagnostics"]["flags"]  # flags included


def test_a_moved_run_directory_retests_its_own_checkpoint(run_dir, tmp_path):
    trained = json.loads((run_dir / "results.json").read_text())
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("config.yaml", "results.json"):
        (moved / name).write_bytes((run_dir / name).read_bytes())
    (moved / "checkpoints").mkdir()
    (moved / "checkpoints" / Path(trained["checkpoint"]).name).write_bytes(Path(trained["checkpoint"]).read_bytes())
    Path(trained["checkpoint"]).rename(tmp_path / "elsewhere.ckpt")  # the recorded path no longer exists
    try:
        again = retest(moved, tmp_path / "eval", f"ckpt_path={moved}")
    finally:
        (tmp_path / "elsewhere.ckpt").rename(trained["checkpoint"])
    assert Path(again["checkpoint"]).parent == moved / "checkpoints" and again["test"] == trained["test"]


def test_a_directory_that_is_not_a_finished_run_is_a_clear_error(run_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="without results.json: not a finished xmod-train run"):
        retest(run_dir, tmp_path / "eval", f"ckpt_path={run_dir / 'checkpoints'}")
