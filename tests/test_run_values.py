"""Bad values and missing files stop a run before its directory holds anything, with one message naming the key
or the file; what config.yaml records is what the run used; a run that cannot go on ends in one message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.tasks.run_helpers import SHRINK, SYNTHETIC, compose_run, no_hydra
from tests.test_cli import cli
from xmod_lab.cli import explain
from xmod_lab.eval import evaluate
from xmod_lab.runs import check_run_values
from xmod_lab.tasks.common import check_finite_loss
from xmod_lab.train import train


def run(tmp_path: Path, command: str, *overrides: str, data: tuple[str, ...] = tuple(SYNTHETIC)) -> Path:
    shrink = SHRINK if command == "train" else [o for o in SHRINK if not o.startswith("callbacks.")]
    with no_hydra():
        cfg = compose_run(command, tmp_path / "run", tmp_path.parent / "cache", [*shrink, *data, *overrides])
    (train if command == "train" else evaluate)(cfg)
    return tmp_path / "run"


@pytest.mark.parametrize(("command", "override", "refusal"), [
    ("train", "data.batch_size=-1", r"^data.batch_size=-1: a batch size is a positive number"),
    ("train", "data.batch_size=0", r"^data.batch_size=0:"),
    ("train", "data.eval_batch_size=-4", r"^data.eval_batch_size=-4:"),
    ("eval", "data.eval_batch_size=0", r"^data.eval_batch_size=0:"),
    ("train", "trainer.precision=16-true", r"^trainer.precision=16-true on CPU"),
    ("train", "trainer.precision=16-mixed", r"^trainer.precision=16-mixed on CPU"),
    ("eval", "trainer.precision=16", r"^trainer.precision=16 on CPU"),
    ("train", "trainer.precision=half", r"^trainer.precision=half: choose one of"),
    ("train", "trainer.max_epochs=0", r"^trainer.max_epochs=0, trainer.max_steps=-1: the fit would train nothing"),
    ("train", "trainer.max_steps=0", r"trainer.max_steps=0: the fit would train nothing"),
    ("eval", "split=tset", r"^split='tset'; choose test or validation"),
])
def test_a_bad_value_stops_before_the_run_directory(tmp_path, command, override, refusal):
    with pytest.raises(ValueError, match=refusal):
        run(tmp_path, command, override)
    assert not (tmp_path / "run").exists()


def test_max_epochs_0_is_fine_when_max_steps_or_no_training_decides():
    cfg = OmegaConf.create({"data": {"batch_size": 2}, "train": True,
                            "trainer": {"accelerator": "cpu", "precision": "32", "max_epochs": 0, "max_steps": 5}})
    checked = check_run_values(cfg, training=True)
    assert checked.trainer.precision == "32-true"  # the name the run uses is the one config.yaml records
    assert cfg.trainer.precision == "32"  # the composed config itself is not changed
    check_run_values(OmegaConf.merge(cfg, {"train": False, "trainer": {"max_steps": -1}}), training=True)


def test_a_missing_data_file_stops_before_the_run_directory(tmp_path):
    source = tmp_path / "xnli"
    (source / "en").mkdir(parents=True)
    row = json.dumps({"premise": "a", "hypothesis": "b", "label": 0})
    for split in ("train", "validation", "test"):
        (source / "en" / f"{split}.jsonl").write_text(row + "\n")
    overrides = ["data=xnli", f"data.source.path='{source}/{{lang}}/{{split}}.jsonl'", "data.tokenizer=unused/tokenizer",
                 "languages.train=[en]", "languages.eval=[en,de]", "data.num_workers=0"]
    with pytest.raises(FileNotFoundError, match=r"^Data file not found: .*xnli/de/validation.jsonl \(config 'de'\) \[language 'de'"):
        run(tmp_path, "train", *overrides, data=())
    assert not (tmp_path / "run").exists()
    with pytest.raises(FileNotFoundError, match=r"^Data file not found: .*xnli/de/test.jsonl \(config 'de'\) \[language 'de'"):
        run(tmp_path, "eval", *overrides, data=())
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("holdout", [0.0, 0.2])
def test_a_missing_corpus_file_stops_before_the_run_directory(tmp_path, holdout):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for split in ("train", "validation", "test"):
        (corpus / f"en.{split}.txt").write_text("a line of text\n" * 20)
    missing = "de.train.txt" if holdout else "de.validation.txt"  # held-out blocks come from the train split
    overrides = ["data=mlm_text", "task=masked_lm", f"data.source.path='{corpus}/{{lang}}.{{split}}.txt'",
                 "data.tokenizer=unused/tokenizer", "languages.train=[en]", "languages.eval=[en,de]",
                 f"data.holdout={holdout}", "data.num_workers=0"]
    with pytest.raises(FileNotFoundError, match=rf"^Data file not found: .*corpus/{missing}"):
        run(tmp_path, "train", *overrides, data=())
    assert not (tmp_path / "run").exists()


def test_xmod_train_with_a_bad_value_names_the_key_and_leaves_no_directory(tmp_path):
    out = cli("xmod-train", "pretrain=none", "data.batch_size=-1", cwd=tmp_path)
    assert out.returncode == 1
    assert "xmod-train: error: data.batch_size=-1: a batch size is a positive number of examples" in out.stderr
    assert "Traceback" not in out.stderr
    runs = tmp_path / "outputs" / "default" / "runs"
    assert not runs.exists() or not list(runs.iterdir()), list(runs.iterdir())


def test_a_diverged_loss_is_one_message_on_the_console(capsys):
    """The traceback goes to the run's log and run_failed (xmod_lab.run_dir.record_failure), not the console."""
    try:
        check_finite_loss(None, torch.tensor(float("nan")))
    except FloatingPointError as err:
        assert explain(err, "train", [])
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("xmod-train: error: training loss is nan: the run diverged, stopping.")
    assert len(lines) == 2 and "Traceback" not in lines[1]
