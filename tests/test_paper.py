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
from xmod_lab import paper, plots, pretraining, report
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
    run(tmp_path, cache, "b", QUICK_PRETRAIN, "languages.eval=[de,fr]")  # fine-tuning settings: same backbone
    assert [p.name for p in (cache / "pretrained").iterdir()] == [folder.name]
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    run(tmp_path, cache, "c", QUICK_PRETRAIN, "model.config.intermediate_size=32")  # the backbone changes
    assert len(list((cache / "pretrained").iterdir())) == 2


def test_pretrain_with_a_given_checkpoint_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="use pretrain=none"):
        run(tmp_path, tmp_path / "cache", "a", QUICK_PRETRAIN, "model.pretrained=facebook/xmod-base")


def test_pretrain_needs_synthetic_languages(tmp_path):
    with pytest.raises(ValueError, match=r"\['sw_KE'\] have no synthetic language"):
        run(tmp_path, tmp_path / "cache", "a", QUICK_PRETRAIN, "languages.adapters=[en_XX,sw_KE]",
            "languages.eval=[en]")


# the flags themselves, per task and metric: tests/test_diagnostics.py


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
    # the figures: one style per mode, the same as xmod-report's plot of the same MLM runs (whose folders list
    # modular first); degenerate zero-shot runs crossed out
    figures = paper.curse_figures(summary)
    by_k = plots.plot_against_languages(report.collect_sweep(out / "mlm"), "loss").axes[0]
    report_lines = {c.get_label(): c.lines[0] for c in by_k.containers}
    for fig in figures.values():
        lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
        for mode in ("shared", "modular"):
            assert lines[mode].get_color() == plots.MODE_STYLE[mode]["color"]
            assert report_lines[f"adapter_mode={mode}"].get_color() == plots.MODE_STYLE[mode]["color"]
    crosses = [x for line in figures["zero_shot_vs_k.png"].axes[0].get_lines() if line.get_gid() == "degenerate"
               for x in line.get_xdata()]
    assert len(crosses) == sum(1 for r in summary["curse"] if r["flags"] and r["zero_shot_acc"] is not None)
