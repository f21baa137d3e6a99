"""Fine-tuning trains in training mode, whatever state the model was loaded in; evaluation runs in eval mode.

``from_pretrained`` returns a model in eval mode and Lightning 2.x keeps the mode it finds, so a task that
does not switch itself would fine-tune a loaded model with dropout off. A probe callback records the module
modes at the first training batch of every fit, and during validation and test, for each way a user loads
a model: ``model.pretrained=`` an export, a hub-format directory, ``ckpt_path=`` resume, the cached
pre-training stage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning import Callback
from torch import nn

from tests.tasks.run_helpers import SHRINK, SYNTHETIC, compose_run, no_hydra
from xmod_lab.train import train

# the tiny preset trains without dropout; the paper presets use 0.1
DROPOUT = ["model.config.hidden_dropout_prob=0.1", "model.config.attention_probs_dropout_prob=0.1"]
QUICK_PRETRAIN = "pretrain.overrides=['task=masked_lm','data=synthetic_mlm','freeze=none','trainer.max_steps=2']"


class ModeProbe(Callback):
    """Records, per fit, the modes at its first training batch and whether any eval batch ran in train mode."""

    fits: list[dict[str, Any]] = []  # class-level: Hydra instantiates the callback, the test reads this

    def on_fit_start(self, trainer, pl_module) -> None:
        self.record: dict[str, Any] = {"eval_in_train_mode": []}
        ModeProbe.fits.append(self.record)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if "dropouts" in self.record:
            return
        self.record["dropouts"] = {name: m.training for name, m in pl_module.named_modules()
                                   if isinstance(m, nn.Dropout) and m.p > 0}
        self.record["eval_modules"] = [name for name, m in pl_module.named_modules() if not m.training]
        self.record["trainable"] = sum(p.numel() for p in pl_module.parameters() if p.requires_grad)

    def _check_eval(self, pl_module, stage: str) -> None:
        if any(m.training for m in pl_module.modules()):
            self.record["eval_in_train_mode"].append(stage)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._check_eval(pl_module, "validation")

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._check_eval(pl_module, "test")


PROBE = f"+callbacks.mode_probe._target_={ModeProbe.__module__}.ModeProbe"


def run(tmp: Path, name: str, *overrides: str) -> tuple[dict, Path]:
    ModeProbe.fits.clear()
    with no_hydra():
        cfg = compose_run("train", tmp / name, tmp / "cache", [*SHRINK, *SYNTHETIC, *DROPOUT, PROBE, *overrides])
    train(cfg)
    return ModeProbe.fits[-1], tmp / name  # the fine-tuning fit (after a pre-training stage's, if any)


def assert_trains_with_dropout(fit: dict, run_dir: Path) -> None:
    assert fit["dropouts"], "the model has dropout modules with p > 0 (else this test could not fail)"
    off = [name for name, training in fit["dropouts"].items() if not training]
    assert not off, f"{len(off)} of {len(fit['dropouts'])} dropout modules not training at the first batch: {off[:4]}"
    assert fit["eval_modules"] == []
    # train() left the freezing policy alone: what trains is what the run reports as trainable
    assert fit["trainable"] == json.loads((run_dir / "results.json").read_text())["parameters"]["trainable"]
    assert fit["eval_in_train_mode"] == []  # validation and test batches ran in eval mode


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A 1-epoch run from scratch (freeze=paper: embeddings and adapters frozen), exported."""
    tmp = tmp_path_factory.mktemp("source")
    fit, run_dir = run(tmp, "scratch", f"export_dir={tmp / 'export'}")
    assert_trains_with_dropout(fit, run_dir)  # a model built from scratch is in training mode anyway
    return tmp


def test_fine_tuning_an_export_trains_with_dropout(source, tmp_path):
    fit, run_dir = run(tmp_path, "ft", f"model.pretrained={source / 'export'}")
    assert_trains_with_dropout(fit, run_dir)
    assert fit["trainable"] < sum(json.loads((source / "scratch" / "results.json").read_text())["parameters"].values())


def test_fine_tuning_a_hub_format_directory_trains_with_dropout(source, tmp_path):
    """The layout of facebook/xmod-base: transformers' own XmodForMaskedLM, a pytorch_model.bin, no tokenizer."""
    transformers = pytest.importorskip("transformers")
    hub = tmp_path / "hub"
    theirs = transformers.XmodForMaskedLM.from_pretrained(source / "export")
    theirs.config.save_pretrained(hub)
    torch.save(theirs.state_dict(), hub / "pytorch_model.bin")
    fit, run_dir = run(tmp_path, "ft", f"model.pretrained={hub}")
    assert_trains_with_dropout(fit, run_dir)


def test_resuming_a_fine_tuning_run_trains_with_dropout(source, tmp_path):
    _, first = run(tmp_path, "first", f"model.pretrained={source / 'export'}")
    fit, run_dir = run(tmp_path, "resumed", f"model.pretrained={source / 'export'}",
                       f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}", "trainer.max_epochs=2")
    assert json.loads((run_dir / "results.json").read_text())["global_step"] > 0
    assert_trains_with_dropout(fit, run_dir)


def test_fine_tuning_after_the_pretraining_stage_trains_with_dropout(tmp_path):
    fit, run_dir = run(tmp_path, "ft", QUICK_PRETRAIN, "trainer.max_steps=2")
    assert len(list((tmp_path / "cache" / "pretrained").iterdir())) == 1  # the backbone came from the stage
    assert_trains_with_dropout(fit, run_dir)
