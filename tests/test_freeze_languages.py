"""freeze=adapters_only with freeze.languages: adapters the model lacks, or that no training language reaches,
are refused before the run starts with one message and the fix (an unreached adapter used to fail inside torch
in the first step: "element 0 of tensors does not require grad")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.tasks.run_helpers import SHRINK, SYNTHETIC, compose_run, no_hydra
from xmod_lab.models import XmodConfig, XmodModel
from xmod_lab.train import train

SMALL = [*SHRINK, *SYNTHETIC, "freeze=adapters_only"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("xmod-cache")


@pytest.fixture(scope="module")
def backbone(tmp_path_factory, cache_dir) -> Path:
    """A saved backbone of the shrunk model with the 5 synthetic adapters (adapters_only needs a loaded one:
    a model built from scratch may not keep its embeddings frozen)."""
    tmp = tmp_path_factory.mktemp("backbone")
    with no_hydra():
        cfg = compose_run("train", tmp / "run", cache_dir, SMALL)
    config = OmegaConf.to_container(cfg.model.config, resolve=True)
    XmodModel(XmodConfig(languages=list(cfg.languages.adapters), **config)).save_pretrained(tmp / "model")
    return tmp / "model"


def run_train(tmp_path: Path, cache_dir: Path, *overrides: str) -> dict[str, float]:
    with no_hydra():
        cfg = compose_run("train", tmp_path / "run", cache_dir, [*SMALL, *overrides])
    return train(cfg)


@pytest.mark.parametrize(("overrides", "message"), [
    (["freeze.languages=[de]"], r"freeze.languages \['de'\]: the model has no such adapter .* it takes adapter "
                                r"codes: freeze.languages=\[de_DE\]"),
    (["freeze.languages=[en_XX,rm_CH]"], r"freeze.languages \['rm_CH'\]: the model has no such adapter .*"
                                         r"\+languages.add.<code>=<init_from_language>"),
    (["freeze.languages=[de_DE]", "languages.train=[en]"],
     r"no training language goes through \['de_DE'\] \(languages.train=\['en'\] uses \['en_XX'\]\): they would get "
     r"no gradient\. .* freeze.languages=\[en_XX\]"),
    (["freeze.languages=[en_XX,fr_XX]", "languages.train=[en,de]"], r"no training language goes through \['fr_XX'\]"),
], ids=["dataset-code", "no-such-adapter", "unreached", "one-of-two-unreached"])
def test_adapters_that_cannot_train_are_refused_before_the_run(tmp_path, cache_dir, backbone, overrides, message):
    with pytest.raises(ValueError, match=message):
        run_train(tmp_path, cache_dir, f"model.pretrained={backbone}", *overrides)
    assert not (tmp_path / "run" / "config.yaml").exists()  # refused before the run started


@pytest.mark.parametrize("overrides", [["freeze.languages=[de]"], ["freeze.languages=[de_DE]", "languages.train=[en]"]],
                         ids=["dataset-code", "unreached"])
def test_refused_before_the_pre_training_stage(tmp_path, overrides):
    """The default experiment pre-trains first (minutes): a freeze.languages that cannot train is refused before."""
    with pytest.raises(ValueError, match="freeze.languages"):
        run_train(tmp_path, tmp_path / "cache", "pretrain=auto", *overrides)
    assert not (tmp_path / "cache" / "pretrained").exists()


def test_the_adapters_of_the_training_languages_train(tmp_path, cache_dir, backbone):
    """The check refuses nothing that trains: the training language's adapter listed, the run trains it."""
    metrics = run_train(tmp_path, cache_dir, f"model.pretrained={backbone}", "freeze.languages=[de_DE]",
                        "languages.train=[de]", "languages.eval=[de]", "test=false")
    assert "val/de/acc" in metrics
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert 0 < results["parameters"]["trainable"] < results["parameters"]["frozen"]


def test_the_command_prints_one_message_without_a_traceback(tmp_path, backbone):
    out = subprocess.run(
        [str(Path(sys.executable).with_name("xmod-train")), *SMALL, f"model.pretrained={backbone}", "pretrain=none",
         "freeze.languages=[de_DE]", "languages.train=[en]", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**{k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}, "XMOD_CACHE": str(tmp_path / "cache")},
    )
    assert out.returncode == 1
    assert out.stderr.count("xmod-train: error: ") == 1
    assert "xmod-train: error: freeze=adapters_only trains the adapters of freeze.languages" in out.stderr
    assert "Traceback" not in out.stderr and "requires_grad" not in out.stderr and "grad_fn" not in out.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
