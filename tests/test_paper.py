"""The default experiment's pre-training stage, the degenerate-run flags, and `make paper` at a toy setting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.tasks.run_helpers import SHRINK, compose_run, no_hydra
from xmod_lab import diagnostics, pretraining
from xmod_lab.train import train

ROOT = Path(__file__).resolve().parents[1]
DATA = ["data.n_train=48", "data.n_eval=24", "data.n_corpus=60", "data.batch_size=16", "data.eval_batch_size=24"]
# the default experiment's stage, cut to 2 updates
QUICK_PRETRAIN = "pretrain.overrides=['task=masked_lm','data=synthetic_mlm','freeze=none','trainer.max_steps=2']"


def run(tmp: Path, cache: Path, name: str, *overrides: str):
    with no_hydra():
        cfg = compose_run("train", tmp / name, cache, [*SHRINK, *DATA, "trainer.max_steps=2", *overrides])
    return cfg, train(cfg)


def test_pretrain_stage_runs_once_then_fine_tunes_its_export(tmp_path):
    cache = tmp_path / "cache"
    cfg, _ = run(tmp_path, cache, "a", QUICK_PRETRAIN)
    (folder,) = (cache / "pretrained").iterdir()
    saved = OmegaConf.load(tmp_path / "a" / "config.yaml")  # the config the run used and saved
    assert saved.model.pretrained == str(folder) and pretraining.is_complete(folder)
    assert cfg.model.pretrained is None  # the composed config itself is never changed
    pre = pretraining.pretraining_results(folder)
    # pre-trained by MLM on every adapter language (dataset codes), evaluated on all of them
    assert pre["task"].endswith("MaskedLMTask") and pre["train_languages"] == ["en", "de", "fr", "ru", "zh"]
    assert set(pre["test"]) == {"en", "de", "fr", "ru", "zh", "avg"}  # every set trained on: no zs_avg
    saved = (tmp_path / "a" / "config.yaml").read_text()
    assert f"pretrained: {folder}" in saved and "policy: paper" in saved
    results = json.loads((tmp_path / "a" / "results.json").read_text())
    assert results["parameters"]["frozen"] > 0  # embeddings and adapters of the pre-trained model

    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    # a sweep of fine-tuning settings, defaults written out and irrelevant keys: one backbone, pre-trained once
    sweep = [["languages.eval=[de,fr]"], ["adapter.adapter_reduction_factor=2", "adapter.adapter_mode=modular"],
             ["+languages.map.hi_rom=hi_IN", "optimizer.lr=1e-4", "freeze=none", "seed=7"]]
    for i, point in enumerate(sweep):
        run(tmp_path, cache, f"b{i}", QUICK_PRETRAIN, *point)
        assert f"pretrained: {folder}" in (tmp_path / f"b{i}" / "config.yaml").read_text()
    assert [p.name for p in (cache / "pretrained").iterdir()] == [folder.name]
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    run(tmp_path, cache, "c", QUICK_PRETRAIN, "model.config.intermediate_size=32")  # the backbone changes
    assert len(list((cache / "pretrained").iterdir())) == 2


def test_pretrain_with_a_given_checkpoint_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="use pretrain=none"):
        run(tmp_path, tmp_path / "cache", "a", "pretrain=synthetic_mlm", QUICK_PRETRAIN,
            "model.pretrained=facebook/xmod-base")


def test_pretrain_needs_synthetic_languages(tmp_path):
    with pytest.raises(ValueError, match=r"\['sw_KE'\] have no synthetic language"):
        run(tmp_path, tmp_path / "cache", "a", "pretrain=synthetic_mlm", QUICK_PRETRAIN,
            "languages.adapters=[en_XX,sw_KE]", "languages.eval=[en]")


@pytest.mark.parametrize(("overrides", "reason"), [
    (["data=panx"], "is not synthetic"),
    (["languages=xmod13", "languages.eval=[en,ar,hi]"], "are not all synthetic languages"),
    (["model.pretrained=facebook/xmod-base"], "is loaded"),
])
def test_default_pretrain_stage_applies_to_synthetic_runs_only(tmp_path, overrides, reason):
    """pretrain=auto (the default): the default experiment's stage, never forced on other data or languages."""
    with no_hydra():
        cfg = compose_run("train", tmp_path / "run", tmp_path / "cache", ["pretrain=auto", *overrides])
    assert reason in pretraining.applicable(cfg) and not pretraining.wanted(cfg)
    with no_hydra():
        cfg = compose_run("train", tmp_path / "run", tmp_path / "cache", ["pretrain=auto"])
    assert pretraining.applicable(cfg) is None and pretraining.wanted(cfg)


def test_pretraining_cache_key_is_canonical():
    """Equal weights, equal key (defaults written out, the map); another backbone, another key."""
    def key(*overrides: str) -> str:
        with no_hydra():
            cfg = compose_run("train", Path("/tmp/run"), Path("/tmp/cache"), ["pretrain=synthetic_mlm", *overrides])
            return pretraining.cache_key(pretraining.pretraining_config(cfg))

    base = key()
    assert key("adapter.adapter_reduction_factor=2", "adapter.adapter_mode=modular") == base
    assert key("+languages.map.hi_rom=hi_IN", "optimizer.lr=1e-4", "name=other") == base
    assert key("adapter.adapter_reduction_factor=4") != base
    assert key("languages=synthetic4") != base
    assert key("data.n_corpus=2000") != base  # other pre-training text


@pytest.mark.parametrize(("acc", "predicted", "ceiling", "expected"), [
    (71.0, {0: 40, 1: 30, 2: 30}, 34.0, []),
    (71.0, {0: 60, 2: 40}, None, ["predicts 2 of 3 classes"]),
    (35.1, {0: 40, 1: 30, 2: 30}, None, ["within 3 points of chance (33.3)"]),
    (77.0, {0: 40, 1: 30, 2: 30}, 75.5, ["not above the shortcut ceiling (75.5) by 3 points"]),
    (33.4, {1: 100}, 33.0, ["predicts 1 of 3 classes", "within 3 points of chance (33.3)",
                            "not above the shortcut ceiling (33.0) by 3 points"]),
])  # fmt: skip
def test_degenerate_classifiers_are_flagged(acc, predicted, ceiling, expected):
    assert diagnostics.flags(acc, 3, predicted, ceiling) == expected


def test_a_collapsed_run_is_flagged_in_its_results(tmp_path):
    """A model that cannot learn (learning rate 0) predicts one class: results.json and the log say so."""
    run(tmp_path, tmp_path / "cache", "a", "pretrain=none", "optimizer.lr=0.0")
    diag = json.loads((tmp_path / "a" / "results.json").read_text())["diagnostics"]
    assert diag["chance"] == pytest.approx(33.33, abs=0.01) and set(diag["shortcut_ceiling"]) == set(diag["flags"])
    for lang, counts in diag["predicted_classes"].items():
        assert sum(counts.values()) == 24  # every test example of the language counted
        assert any("chance" in f for f in diag["flags"][lang]), lang


@pytest.mark.slow
def test_paper_study_at_a_toy_setting(tmp_path):
    """`make paper` end to end (K = 1, 2; 2 updates per run): summary schema, post-hoc changes, outputs."""
    out = tmp_path / "paper"
    done = subprocess.run(
        [sys.executable, "-m", "xmod_lab.paper", "--out", str(out), "--ks", "1,2", "--posthoc-k", "2",
         "trainer.max_steps=2", *DATA],
        cwd=ROOT, capture_output=True, text=True, timeout=900, env={**os.environ, "XMOD_CACHE": str(tmp_path / "c")},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert [(r["mode"], r["languages"]) for r in summary["curse"]] == [
        ("shared", 1), ("shared", 2), ("modular", 1), ("modular", 2)]
    for row in summary["curse"]:
        assert isinstance(row["probe_mlm_loss"], float) and row["probe_mlm_loss"] > 0
        assert (row["zero_shot_acc"] is None) == (row["languages"] == 1)  # no other language at K = 1
        assert row["zero_shot_acc"] is None or 0.0 <= row["zero_shot_acc"] <= 100.0
    posthoc = {r["mode"]: r for r in summary["posthoc"]}
    assert set(posthoc) == {"shared", "modular"}
    assert posthoc["modular"]["old_languages_max_loss_change"] == 0.0  # old adapters and body untouched
    assert posthoc["shared"]["old_languages_max_loss_change"] > 0.0  # its one adapter serves every language
    assert set(posthoc["modular"]["old_languages_loss_change"]) == {"en", "de"}
    assert isinstance(summary["wall_seconds"], float) and summary["wall_seconds"] > 0
    assert "## Curse of multilinguality" in (out / "README.md").read_text()
    assert (out / "probe_loss_vs_k.png").stat().st_size > 0 and (out / "mlm" / "sweep_summary.csv").is_file()
