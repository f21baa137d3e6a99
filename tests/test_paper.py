"""The default experiment's pre-training stage, the degenerate-run flags, and `make paper` at a toy setting."""

from __future__ import annotations

import io
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from tests.tasks.run_helpers import SHRINK, compose_run, no_hydra
from xmod_lab import paper, paper_doc, paper_summary, plots, pretraining, report, runs
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


@pytest.mark.parametrize("quiet", [True, False])
def test_pretraining_stage_follows_the_runs_console_settings(quiet):
    """`trainer.enable_progress_bar=false` quiets the pre-training stage too, without a new cached backbone."""
    flags = [f"trainer.enable_progress_bar={not quiet}"]
    with no_hydra():
        cfg = compose_run("train", Path("/tmp/run"), Path("/tmp/cache"), ["pretrain=synthetic_mlm", *flags])
        pre = pretraining.pretraining_config(cfg)
        base = compose_run("train", Path("/tmp/run"), Path("/tmp/cache"), ["pretrain=synthetic_mlm"])
        key = pretraining.cache_key(pretraining.pretraining_config(base))
    assert pre.trainer.enable_progress_bar is (not quiet)
    assert pretraining.cache_key(pre) == key


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


# the flags themselves, per task and metric: tests/test_diagnostics.py


def test_a_collapsed_run_is_flagged_in_its_results(tmp_path):
    """A model that cannot learn (learning rate 0) predicts one class: results.json and the log say so."""
    run(tmp_path, tmp_path / "cache", "a", "pretrain=none", "optimizer.lr=0.0")
    diag = json.loads((tmp_path / "a" / "results.json").read_text())["diagnostics"]
    assert diag["chance"] == pytest.approx(33.33, abs=0.01) and set(diag["shortcut_ceiling"]) == set(diag["flags"])
    for lang, counts in diag["predicted_classes"].items():
        assert sum(counts.values()) == 24  # every test example of the language counted
        assert any("chance" in f for f in diag["flags"][lang]), lang


def point(mode, k, loss, sd, metric="probe_fact_loss"):
    return {"mode": mode, "languages": k, metric: loss, f"{metric}_sd": sd}


@pytest.mark.parametrize(("shared", "modular", "shows"), [
    ((3.0, 0.05, 3.5, 0.05), (3.0, 0.05, 3.0, 0.05), True),    # shared rises far beyond its spread, modular flat
    ((3.0, 0.10, 3.1, 0.10), (3.0, 0.10, 2.9, 0.10), False),   # a rise of 0.1 against 2 sd = 0.28: noise
    ((3.0, 0.05, 3.5, 0.05), (3.0, 0.05, 3.4, 0.05), False),   # modular rises too (gap 0.1 > 2 x 0.07 though)
    ((3.0, 0.01, 3.2, 0.01), (3.0, 0.01, 3.0, 0.30), False),   # modular flat but so noisy the gap is not shown
    ((3.0, None, 3.5, None), (3.0, None, 3.0, None), False),   # one seed: no spread, no verdict
])  # fmt: skip
def test_curse_verdict_weighs_the_change_against_its_spread(shared, modular, shows):
    rows = [point("shared", 1, *shared[:2]), point("shared", 16, *shared[2:]),
            point("modular", 1, *modular[:2]), point("modular", 16, *modular[2:])]  # fmt: skip
    verdict = paper_summary.curse_verdict(rows)
    assert verdict["curse_shows"] is shows
    assert verdict["probe_loss_change_smallest_to_largest_k"]["shared"] == pytest.approx(shared[2] - shared[0])
    assert verdict["gap_at_largest_k"] == pytest.approx(shared[2] - modular[2])
    if shared[1] is None:
        assert "fewer than 2 seeds" in verdict["no_verdict_because"]
    else:  # the combined sd of a difference of two means
        assert verdict["gap_at_largest_k_sd"] == pytest.approx(math.hypot(shared[3], modular[3]))


def test_curse_verdict_reads_the_metric_it_is_given():
    """The verdict reads the fact probe by default; the same rule on the MLM loss is a second call. A row
    carrying both must not let one metric's figures leak into the other's verdict."""
    figures = {("shared", 1): (0.01, 0.50), ("shared", 4): (0.80, 0.50),  # (fact probe, MLM loss)
               ("modular", 1): (0.01, 0.45), ("modular", 4): (0.01, 0.40)}
    rows = [{**point(m, k, facts, 0.02), **point(m, k, mlm, 0.02, "probe_mlm_loss")}
            for (m, k), (facts, mlm) in figures.items()]
    facts, mlm = paper_summary.curse_verdict(rows), paper_summary.curse_verdict(rows, "probe_mlm_loss")
    assert facts["metric"] == "probe_fact_loss" and facts["curse_shows"] is True
    assert facts["probe_loss_change_smallest_to_largest_k"]["shared"] == pytest.approx(0.79)
    assert mlm["metric"] == "probe_mlm_loss" and mlm["curse_shows"] is False  # shared 0.5 -> 0.5: no rise
    assert mlm["gap_at_largest_k"] == pytest.approx(0.5 - 0.40)


@pytest.mark.parametrize(("losses", "learnt"), [
    ((0.01, 0.02, 0.015), True),    # about 99 % on the true number in every seed
    ((0.01, 0.02, 0.25), False),    # one seed has not learnt its facts: mean + 2 sd above 0.11
    ((0.5, 0.6, 0.55), False),
    ((0.01,), False),               # one seed: no spread, no verdict
])  # fmt: skip
def test_knowledge_verdict_needs_the_smallest_k_to_know_its_facts_in_every_seed(losses, learnt):
    mean, sd = paper_summary.mean_sd(losses)
    rows = [point(m, k, mean if k == 1 else 2.0, sd) for m in paper_summary.MODES for k in (1, 4)]
    verdict = paper_summary.knowledge_verdict(rows, math.log(9))
    assert verdict["learnt"] is learnt and verdict["k"] == 1
    assert verdict["limit"] == pytest.approx(0.05 * math.log(9))
    assert ("fewer than 2 seeds" in (verdict["no_verdict_because"] or "")) == (len(losses) == 1)


def test_mean_and_sample_sd():
    assert paper_summary.mean_sd([1.0, 2.0, 3.0]) == (2.0, 1.0)  # ddof 1 (population sd would be 0.816)
    assert paper_summary.mean_sd([2.5]) == (2.5, None) and paper_summary.mean_sd([None, None]) == (None, None)


def curve(mode, k, *per_seed):
    n = len(per_seed[0])
    return {"mode": mode, "languages": k, "per_seed": [list(s) for s in per_seed],
            "points": [{"updates_per_language": 100.0 * (i + 1), "loss": None, "loss_sd": None} for i in range(n)]}


@pytest.mark.parametrize(("seeds", "plateaued"), [
    # 8 validations; the last quarter runs from the 6th (600 of 800) to the end
    (([4, 3, 2.5, 2.2, 2.1, 2.05, 2.04, 2.04], [4, 3, 2.6, 2.3, 2.1, 2.06, 2.05, 2.05]), True),   # drop 0.01 < 1 %
    (([4, 3, 2.5, 2.2, 2.1, 2.00, 1.90, 1.80], [4, 3, 2.6, 2.3, 2.1, 2.01, 1.91, 1.81]), False),  # still falling
    (([4, 3, 2.5, 2.2, 2.1, 2.10, 2.05, 2.04], [4, 3, 2.6, 2.3, 2.1, 2.30, 2.30, 2.34]), True),   # drop < 2 sd
    # both seeds fall by 0.06 (2 % of the loss): their levels differ by 0.3, but the fall is the same in each
    (([4, 3, 2.5, 2.2, 2.1, 2.10, 2.07, 2.04], [4, 3, 2.6, 2.3, 2.1, 2.40, 2.37, 2.34]), False),
    # every seed falls (0.06, 0.10, 0.17: mean 0.11, sd 0.056): within 2 sd of 0, but 2 standard errors (0.064)
    # say the fall is real
    (([4, 3, 2.5, 2.2, 2.1, 2.06, 2.03, 2.00], [4, 3, 2.5, 2.2, 2.1, 2.10, 2.05, 2.00],
      [4, 3, 2.5, 2.2, 2.1, 2.17, 2.08, 2.00]), False),
])  # fmt: skip
def test_plateau_verdict_reads_the_last_quarter_of_the_smallest_k(seeds, plateaued):
    curves = [curve(mode, k, *seeds) for mode in paper_summary.MODES for k in (1, 4)]
    curves[1]["per_seed"] = [[9.0] * 8, [1.0] * 8]  # K = 4 is not what the rule reads
    verdict = paper_summary.plateau_verdict(curves)
    assert verdict["plateaued"] is plateaued and verdict["k"] == 1 and verdict["no_verdict_because"] is None
    if len(seeds) == 3:
        drop = verdict["by_mode"]["shared"]
        assert drop["drop_se"] == pytest.approx(drop["drop_sd"] / math.sqrt(3)) and drop["drop"] < 2 * drop["drop_sd"]
    found = verdict["by_mode"]["shared"]
    assert (found["from_updates_per_language"], found["to_updates_per_language"]) == (600.0, 800.0)
    assert found["drop"] == pytest.approx(statistics.mean(s[5] - s[7] for s in seeds))


def test_plateau_verdict_reads_a_quarter_of_the_training_not_of_the_last_validation():
    """Validations every 100 updates up to 700, training to 800 (the last epochs without a validation): the
    window starts at 600 (75 % of 800), not at 500 (the nearest to 75 % of 700, 525)."""
    falling = [4.0, 3.0, 2.5, 2.2, 2.0, 1.8, 1.5]
    curves = [curve(m, 1, falling, [v + 0.1 for v in falling]) for m in paper_summary.MODES]
    assert paper_summary.plateau_verdict(curves)["by_mode"]["shared"]["from_updates_per_language"] == 500.0
    for c in curves:
        c["end_updates_per_language"] = 800.0
    found = paper_summary.plateau_verdict(curves)["by_mode"]["shared"]
    assert (found["from_updates_per_language"], found["to_updates_per_language"]) == (600.0, 700.0)
    assert found["drop"] == pytest.approx(0.3)


def budget_study(tmp_path, at_budget, longer, updates_long=200):
    """A study's K = 1 rows (100 updates per run) and its budget control's runs, as the summary reads them."""
    for seed, loss in enumerate(longer):
        run = tmp_path / paper_summary.BUDGET_DIR / paper_summary.run_name("shared", 1, seed)
        run.mkdir(parents=True)
        (run / "run_complete").write_text("")
        (run / "results.json").write_text(json.dumps({"global_step": updates_long}))
        (run / paper_summary.PROBE_FILE).write_text(json.dumps({"language": "en", "private_fact_loss": loss}))
    mean, sd = paper_summary.mean_sd(at_budget)
    return [{"mode": mode, "languages": 1, "probe_fact_loss": mean, "probe_fact_loss_sd": sd,
             "per_seed": [{"seed": s, "probe_fact_loss": v, "updates": 100} for s, v in enumerate(at_budget)]}
            for mode in paper_summary.MODES]  # fmt: skip


@pytest.mark.parametrize(("longer", "enough"), [
    ([0.049, 0.041, 0.054], True),   # twice the training moves each seed by +-0.001: no fall the seeds agree on
    ([0.030, 0.020, 0.035], False),  # every seed lower by 0.02: the budget was too short
])  # fmt: skip
def test_budget_verdict_pairs_each_seed_with_its_longer_run(tmp_path, longer, enough):
    at_budget = [0.050, 0.040, 0.055]
    verdict = paper_summary.budget_verdict(tmp_path, budget_study(tmp_path, at_budget, longer), [0, 1, 2])
    assert verdict["enough"] is enough and (verdict["updates"], verdict["updates_long"]) == (100, 200)
    assert verdict["drop"] == pytest.approx(statistics.mean(a - b for a, b in zip(at_budget, longer, strict=True)))
    assert verdict["fact_loss_long"] == pytest.approx(statistics.mean(longer))


def test_budget_verdict_refuses_longer_runs_of_another_length(tmp_path):
    curse = budget_study(tmp_path, [0.05, 0.04], [0.05, 0.04], updates_long=300)  # a resumed study, other settings
    with pytest.raises(ValueError, match=r"made \[3.0\] times the updates of the study's K = 1 runs, not 2"):
        paper_summary.budget_verdict(tmp_path, curse, [0, 1])


@pytest.mark.parametrize("overrides", [[], ["trainer.max_steps=5"], ["trainer.max_epochs=3"]])
def test_budget_overrides_double_the_pre_training(overrides):
    longer = paper.budget_overrides(overrides)
    with no_hydra(), initialize_config_module("xmod_lab.conf", version_base="1.3"):
        before, after = (compose("train", overrides=["experiment=paper_mlm", *overrides, *extra]).trainer
                         for extra in ([], longer))  # fmt: skip
    assert after.max_epochs == 2 * before.max_epochs
    assert after.max_steps == (2 * before.max_steps if before.max_steps > 0 else before.max_steps)


def test_plateau_verdict_at_the_largest_k_for_one_mode():
    """The shared model's fact probe at the largest K: a shortfall that has stopped shrinking, while modular's
    (not asked) still falls."""
    stuck, falling = [0.9, 0.7, 0.62, 0.61, 0.62, 0.61, 0.61, 0.62], [0.9, 0.5, 0.3, 0.2, 0.1, 0.06, 0.03, 0.01]
    curves = [curve("shared", 1, falling, falling), curve("modular", 1, falling, falling),
              curve("shared", 4, stuck, [s + 0.05 for s in stuck]), curve("modular", 4, falling, falling)]
    verdict = paper_summary.plateau_verdict(curves, 4, ("shared",), "fact probe (own entries)")
    assert verdict["k"] == 4 and set(verdict["by_mode"]) == {"shared"} and verdict["plateaued"] is True
    assert verdict["rule"].startswith("the fact probe (own entries) at K = 4 fell")
    assert paper_summary.plateau_verdict(curves, 4)["plateaued"] is False  # modular at K = 4 still falls
    with pytest.raises(ValueError, match="no learning curve of shared at K = 8"):
        paper_summary.plateau_verdict(curves, 8, ("shared",))


def test_plateau_verdict_without_a_learning_curve_says_why():
    verdict = paper_summary.plateau_verdict([curve(m, 1, [3.0], [3.1]) for m in paper_summary.MODES])
    assert verdict["plateaued"] is False and "fewer than 2 validations" in verdict["no_verdict_because"]


def zs_row(mode, k, acc, sd, flagged=0):
    return {"mode": mode, "languages": k, "zero_shot_avg_acc": acc, "zero_shot_avg_acc_sd": sd,
            "flagged_seeds": flagged, "seeds": [0, 1, 2]}


@pytest.mark.parametrize(("modular", "not_worse", "no_degradation"), [
    ((50.0, 51.0), True, True),
    ((50.0, 44.0), False, False),   # modular 6 points below shared at K = 4 (2 sd = 2.8), and down 6 from K = 2
    ((50.0, 49.0), True, True),     # 1 point down: within the spread
])  # fmt: skip
def test_zero_shot_verdict_weighs_modular_against_shared_with_the_spread(modular, not_worse, no_degradation):
    rows = [zs_row("shared", 1, None, None), zs_row("modular", 1, None, None),
            zs_row("shared", 2, 50.0, 1.0), zs_row("shared", 4, 50.0, 1.0, flagged=1),
            zs_row("modular", 2, modular[0], 1.0), zs_row("modular", 4, modular[1], 1.0)]  # fmt: skip
    verdict = paper_summary.zero_shot_verdict(rows)
    assert (verdict["modular_not_worse"], verdict["modular_does_not_degrade"]) == (not_worse, no_degradation)
    assert verdict["flagged_runs"] == 1 and verdict["runs"] == 12
    assert verdict["modular_minus_shared"][4]["sd"] == pytest.approx(math.sqrt(2))


def fake_summary(n_seeds: int) -> dict:
    """A summary as main() writes it, for K = 1, 4: shared's probe loss rises by 0.3, modular's stays."""
    sd = 0.02 if n_seeds > 1 else None
    curse = []
    for mode in paper_summary.MODES:
        for k in (1, 4):
            loss = 3.3 if (mode, k) == ("shared", 4) else 3.0
            facts = 0.9 if (mode, k) == ("shared", 4) else 0.01
            row = {"mode": mode, "languages": k, "flags": {}, "flagged_seeds": 0, "seeds": list(range(n_seeds))}
            for key, value in (("probe_fact_loss", facts), ("probe_shared_fact_loss", 0.02), ("probe_mlm_loss", loss), ("mlm_loss_avg", loss), ("updates", 250.0 * k),
                               ("zero_shot_acc", None if k == 1 else 41.0), ("en_acc", None if k == 1 else 60.0),
                               ("zero_shot_avg_acc", None if k == 1 else 40.0)):  # fmt: skip
                row[key], row[f"{key}_sd"] = value, (sd if value is not None else None)
            curse.append(row)
    posthoc = []
    for mode, change in (("shared", 0.5), ("modular", 0.0)):
        row = {"mode": mode, "old_languages_max_loss_change": change, "old_languages_loss_change": {"en": change}}
        for key, value in (("new_language_mlm_loss", 3.4), ("new_language_mlm_loss_before", 5.0),
                           ("old_languages_mlm_loss", 3.1), ("new_minus_old_mlm_loss", 0.3)):  # fmt: skip
            row[key], row[f"{key}_sd"] = value, sd
        posthoc.append(row)
    runs = {"mlm": {"model": {"hidden_size": 64}, "epochs": 12}, "nli": {"epochs": 3}, "posthoc": {"epochs": 12}}
    curves = [{"mode": mode, "languages": k, "points": [
        {"updates_per_language": x, "loss": loss, "loss_sd": sd} for x, loss in ((100.0, 4.0), (200.0, 3.2), (300.0, 3.0))],
        "per_seed": [[4.0, 3.2, 3.0 + i / 100] for i in range(n_seeds)]} for mode in paper_summary.MODES for k in (1, 4)]
    return {"curse": curse, "posthoc": posthoc, "wall_seconds": 100.0, "runs_reused": 0,
            "seeds": list(range(n_seeds)), "verdict": paper_summary.curse_verdict(curse),
            "mlm_loss_verdict": paper_summary.curse_verdict(curse, "probe_mlm_loss"),
            "knowledge_verdict": paper_summary.knowledge_verdict(curse, math.log(9)), "no_knowledge": math.log(9),
            "budget_verdict": {"k": 1, "factor": 2, "updates": 250, "updates_long": 500, "fact_loss": 0.01,
                               "fact_loss_sd": sd, "fact_loss_long": 0.008, "fact_loss_long_sd": sd, "drop": 0.002,
                               "drop_sd": sd, "limit": 0.004, "enough": n_seeds > 1, "rule": "the budget rule",
                               "no_verdict_because": None if n_seeds > 1 else "fewer than 2 seeds"},
            "posthoc_verdict": paper_summary.posthoc_verdict(posthoc), "chance": 100 / 3, "shortcut_ceiling": 33.0,
            "learning_curves": curves, "plateau_verdict": paper_summary.plateau_verdict(curves),
            "zero_shot_verdict": paper_summary.zero_shot_verdict(curse),
            "ambiguity": [{"languages": 1, "facts_alike": 0, "private_facts": 64, "mixture_fact_loss": 0.0},
                          {"languages": 4, "facts_alike": 4, "private_facts": 64, "mixture_fact_loss": 0.0578}],
            "date": "2026-12-01 00:00 UTC", "command": "python -m xmod_lab.paper", "plots": ["probe_loss_vs_k.png"],
            "settings": {"ks": [1, 4], "posthoc_k": 4, "seeds": list(range(n_seeds)), "overrides": [], "runs": runs}}


@pytest.mark.parametrize("n_seeds", [3, 1])
def test_the_document_states_the_summary_figures_and_verdicts(n_seeds):
    text = paper_doc.document(fake_summary(n_seeds))
    curse_line = next(line for line in text.splitlines() if line.startswith("| A shared model"))
    if n_seeds == 3:
        assert "**shows**: shared fact probe (own entries) K = 1 -> 4: +0.890 (2 sd = 0.057)" in curse_line
        assert "held-out MLM loss: **shows**: shared MLM loss K = 1 -> 4: +0.300 (2 sd = 0.057)" in curse_line
        assert "| shared | 4 | 1000 | 0.900 ± 0.020 | 0.020 ± 0.020 | 3.300 ± 0.020 | 3.300 ± 0.020 |" in text
        assert "**learnt**: shared fact probe (own entries) 0.010 ± 0.020" in text
        assert "the budget row asks by training longer." not in text  # the fake summary has no fact curves
        assert ("**enough**: K = 1 fact probe (own entries) 0.010 ± 0.020 after 250 updates, 0.008 ± 0.020 after 500 "
                "(2 times longer, `budget/`); the longer runs are lower by +0.002 ± 0.020 (limit 0.004)") in text
        assert "| modular | 3.400 ± 0.020 | 3.400 ± 0.020 |" not in text  # the before/after columns differ
        assert "| modular | 5.000 ± 0.020 | 3.400 ± 0.020 | 3.100 ± 0.020 | 0.300 ± 0.020 | 0 |" in text
    else:  # one seed: no spread, so no verdict, and no "± sd" that is not there
        assert "**does not show** (fewer than 2 seeds" in curse_line
        assert "| shared | 4 | 1000 | 0.900 | 0.020 | 3.300 | 3.300 |" in text and "±" not in text.split("## Curse")[1]
        assert "**not learnt** (fewer than 2 seeds" in text
        assert "**not enough** (fewer than 2 seeds): K = 1 fact probe (own entries) 0.010 after 250 updates" in text
    assert "**shown**: modular largest change of an old language's loss" in text
    assert "K = 1: 0 of 64 alike, 0.000; K = 4: 4 of 64 alike, 0.058." in text
    assert "At K = 1 one run serves both modes" in text
    assert "| modular | 1 | - | - | - | - |" in text  # no NLI run at K = 1: no accuracy, and no '0 of N flagged'
    assert "| modular | 4 | 60.0" in text
    assert "model: hidden_size 64; epochs 12" in text and "![probe_loss_vs_k.png](img/paper_probe_loss_vs_k.png)" in text


def test_a_study_that_mixes_two_worlds_is_refused(tmp_path):
    """Resuming after a change of the world would put runs of two data settings in one table."""
    data = {"n_corpus": 60, "n_train": 48, "n_eval": 24, "seed": 0, "vocab_size": 1000, "shared_facts": 64,
            "private_facts": 128, "vocab_overlap": 0.0, "orders": None}  # fmt: skip
    dirs = list(dict.fromkeys(tmp_path / step / paper_summary.run_name(mode, k, seed)
                              for step, ks in (("mlm", (1, 2)), ("nli", (2,))) for mode in paper_summary.MODES
                              for k in ks for seed in (0, 1)))  # K = 1: one run, and no NLI
    dirs += [tmp_path / "posthoc" / f"{mode}_k2_seed{seed}_train{t}" for mode in paper_summary.MODES for seed in (0, 1)
             for t in (True, False)]  # fmt: skip
    dirs += [tmp_path / paper_summary.BUDGET_DIR / paper_summary.run_name("shared", 1, seed) for seed in (0, 1)]
    for run_dir in dirs:
        run_dir.mkdir(parents=True)
        OmegaConf.save({"data": data}, run_dir / "config.yaml")
    paper_summary.check_one_world(tmp_path, [1, 2], [0, 1], 2)
    OmegaConf.save({"data": {**data, "private_facts": 256}}, dirs[5] / "config.yaml")
    with pytest.raises(ValueError, match=rf"{dirs[5]} generated its data with other settings .*private_facts"):
        paper_summary.check_one_world(tmp_path, [1, 2], [0, 1], 2)
    OmegaConf.save({"data": data}, dirs[5] / "config.yaml")
    OmegaConf.save({"data": {**data, "vocab_overlap": 0.5}}, dirs[-1] / "config.yaml")  # the budget's control
    with pytest.raises(ValueError, match=rf"{dirs[-1]} generated its data with other settings .*vocab_overlap"):
        paper_summary.check_one_world(tmp_path, [1, 2], [0, 1], 2)


@pytest.mark.slow
def test_paper_study_at_a_toy_setting(tmp_path):
    """`make paper` end to end (K = 1, 2; 2 seeds; 2 updates per run): summary schema with the spread over
    seeds, post-hoc identity in every seed, and the document generated from summary.json."""
    out, doc = tmp_path / "paper", tmp_path / "docs" / "paper.md"
    done = subprocess.run(
        [sys.executable, "-m", "xmod_lab.paper", "--out", str(out), "--ks", "1,2", "--posthoc-k", "2",
         "--seeds", "2", "--doc", str(doc), "trainer.max_steps=2", "trainer.check_val_every_n_epoch=1",
         "trainer.val_check_interval=1", *DATA],
        cwd=ROOT, capture_output=True, text=True, timeout=900, env={**os.environ, "XMOD_CACHE": str(tmp_path / "c")},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert {"curse", "posthoc", "wall_seconds", "verdict", "seeds"} <= set(summary) and summary["seeds"] == [0, 1]
    assert [(r["mode"], r["languages"]) for r in summary["curse"]] == [
        ("shared", 1), ("shared", 2), ("modular", 1), ("modular", 2)]
    for row in summary["curse"]:
        probe = json.loads((out / "mlm" / paper_summary.run_name(row['mode'], row['languages'], 0) / "fact_probe.json").read_text())
        assert probe["language"] == "en" and probe["adapter"] == "en_XX"
        world = OmegaConf.load(ROOT / "xmod_lab" / "conf" / "world" / "paper.yaml")
        assert [e["private"] for e in probe["entries"]] == [False] * world.shared_facts + [True] * world.private_facts
        assert row["per_seed"][0]["probe_fact_loss"] == pytest.approx(
            statistics.mean(e["loss"] for e in probe["entries"] if e["private"]))
        assert all(0.0 < e["loss"] < 20.0 for e in probe["entries"])  # 2 updates: no knowledge yet, a finite loss
        export = out / "mlm" / paper_summary.run_name(row['mode'], row['languages'], 0) / "export"
        # the probe pads its clauses during training: the exported tokenizer must not remember it
        assert json.loads((export / "tokenizer.json").read_text())["padding"] is None
        losses = [r["probe_mlm_loss"] for r in row["per_seed"]]
        assert [r["seed"] for r in row["per_seed"]] == [0, 1] and all(v > 0 for v in losses)
        assert row["probe_mlm_loss"] == pytest.approx(statistics.mean(losses))
        assert row["probe_mlm_loss_sd"] == pytest.approx(statistics.stdev(losses))
        assert losses[0] != losses[1]  # the seed reaches the runs: a spread of 0 would fake certainty
        assert (out / "mlm" / paper_summary.run_name(row['mode'], row['languages'], 1) / "run_complete").is_file()
        assert (row["zero_shot_acc"] is None) == (row["languages"] == 1)  # no other language at K = 1
        assert row["zero_shot_acc"] is None or 0.0 <= row["zero_shot_acc"] <= 100.0
    # K = 1: one run per seed serves both modes (the same model)
    assert not list(out.glob("*/shared_synthetic1_*"))
    assert len(list(out.glob("*/modular_synthetic1_seed*"))) == 4  # mlm and the budget control, 2 seeds each
    assert not list((out / "nli").glob("*synthetic1_*"))  # no language to transfer to at K = 1: no NLI run
    rows = {(r["mode"], r["languages"]): r for r in summary["curse"]}
    assert rows["modular", 1]["en_acc"] is None and rows["modular", 2]["en_acc"] is not None
    assert rows["shared", 1]["per_seed"] == rows["modular", 1]["per_seed"]
    assert rows["shared", 2]["per_seed"] != rows["modular", 2]["per_seed"]
    assert [(a["languages"], a["facts_alike"]) for a in summary["ambiguity"]][0] == (1, 0)
    assert summary["ambiguity"][1]["private_facts"] == world.private_facts
    verdict = summary["verdict"]
    assert isinstance(verdict["curse_shows"], bool) and verdict["no_verdict_because"] is None
    assert verdict["gap_at_largest_k_sd"] is not None and (verdict["smallest_k"], verdict["largest_k"]) == (1, 2)
    # the learning curves: a validation after each of the 2 updates, per language at K = 2
    curves = {(c["mode"], c["languages"]): c for c in summary["learning_curves"]}
    assert set(curves) == {(m, k) for m in ("shared", "modular") for k in (1, 2)}
    assert [p["updates_per_language"] for p in curves["modular", 1]["points"]] == [1.0, 2.0]
    assert [p["updates_per_language"] for p in curves["modular", 2]["points"]] == [0.5, 1.0]
    assert curves["modular", 1]["end_updates_per_language"] == 2.0 and curves["shared", 2]["end_updates_per_language"] == 1.0
    for c in curves.values():
        assert len(c["per_seed"]) == 2 and c["points"][-1]["loss"] == pytest.approx(statistics.mean(
            seed[-1] for seed in c["per_seed"]))
    plateau = summary["plateau_verdict"]
    assert plateau["k"] == 1 and isinstance(plateau["plateaued"], bool) and set(plateau["by_mode"]) == set(paper_summary.MODES)
    # the fact probe's learning curve: logged at the same validations (callbacks.fact_probe of paper_mlm)
    facts = {(c["mode"], c["languages"]): c for c in summary["fact_learning_curves"]}
    assert set(facts) == set(curves)
    for key, c in facts.items():
        assert [p["updates_per_language"] for p in c["points"]] == [p["updates_per_language"] for p in curves[key]["points"]]
        assert all(0.0 < p["loss"] < 20.0 for p in c["points"]) and c["points"][0]["loss"] != curves[key]["points"][0]["loss"]
    assert summary["fact_plateau_verdict"]["k"] == 1 and set(summary["fact_plateau_verdict"]["by_mode"]) == {"shared", "modular"}
    stalled = summary["shared_fact_plateau_verdict"]
    assert stalled["k"] == 2 and set(stalled["by_mode"]) == {"shared"} and "fact probe" in stalled["rule"]
    budget = summary["budget_verdict"]  # K = 1 pre-trained twice as long: 4 updates (trainer.max_steps=2 doubled)
    assert (budget["k"], budget["updates"], budget["updates_long"]) == (1, 2, 4) and isinstance(budget["enough"], bool)
    long_probe = json.loads((out / "budget" / paper_summary.run_name("shared", 1, 1) / "fact_probe.json").read_text())
    assert [r["seed"] for r in budget["per_seed"]] == [0, 1]
    assert budget["per_seed"][1]["probe_fact_loss_long"] == long_probe["private_fact_loss"]
    assert budget["per_seed"][1]["probe_fact_loss"] == rows["modular", 1]["per_seed"][1]["probe_fact_loss"]
    assert "(the condition, the budget)" in doc.read_text() and "the budget row asks by training longer. |" in doc.read_text()
    (long_curve,) = [c for c in summary["budget_fact_learning_curves"] if c["mode"] == "modular"]
    assert [p["updates_per_language"] for p in long_curve["points"]] == [1.0, 2.0, 3.0, 4.0]  # a validation per update
    assert long_curve["end_updates_per_language"] == 4.0
    fig = paper_doc.curves_figure(summary)  # the control drawn dashed beside the K = 1 curve, on both rows
    dashed = [line for ax in fig.axes for line in ax.get_lines() if line.get_gid() == "budget"]
    assert len(dashed) == 4 and list(dashed[-1].get_xdata()) == [1.0, 2.0, 3.0, 4.0]
    assert list(dashed[-1].get_ydata()) == [p["loss"] for p in long_curve["points"]]
    zero_shot = summary["zero_shot_verdict"]
    assert zero_shot["runs"] == 4 and set(zero_shot["modular_minus_shared"]) == {"2"}  # JSON keys
    posthoc = {r["mode"]: r for r in summary["posthoc"]}
    assert set(posthoc) == {"shared", "modular"}
    for seed_row in posthoc["modular"]["per_seed"]:
        assert seed_row["old_languages_max_loss_change"] == 0.0  # old adapters and body untouched, every seed
        assert seed_row["new_minus_old_mlm_loss"] == pytest.approx(
            seed_row["new_language_mlm_loss"] - seed_row["old_languages_mlm_loss"])
    assert posthoc["modular"]["old_languages_max_loss_change"] == 0.0
    assert posthoc["shared"]["old_languages_max_loss_change"] > 0.0  # its one adapter serves every language
    assert set(posthoc["modular"]["old_languages_loss_change"]) == {"en", "de"}
    assert posthoc["modular"]["new_language_mlm_loss_sd"] is not None
    assert isinstance(summary["wall_seconds"], float) and summary["wall_seconds"] > 0
    text = doc.read_text()
    assert text == (out / "README.md").read_text() == paper_doc.document(summary)  # a function of summary.json
    assert "## Verdicts" in text and "## Curse of multilinguality" in text
    for row in summary["curse"]:  # every figure of the table, with its spread
        assert f"{row['probe_mlm_loss']:.3f} ± {row['probe_mlm_loss_sd']:.3f}" in text
        assert f"{row['probe_fact_loss']:.3f} ± {row['probe_fact_loss_sd']:.3f}" in text
    assert summary["verdict"]["metric"] == "probe_fact_loss" and summary["mlm_loss_verdict"]["metric"] == "probe_mlm_loss"
    assert isinstance(summary["knowledge_verdict"]["learnt"], bool)
    assert (out / "fact_probe_vs_k.png").stat().st_size > 0
    assert (doc.parent / "img" / "paper_probe_loss_vs_k.png").stat().st_size > 0
    assert (doc.parent / "img" / "paper_learning_curves.png").stat().st_size > 0 and "### Learning curves" in text
    assert "updates/lang: fact probe, own entries" in text and "(the condition, on the fact probe)" in text
    assert (out / "probe_loss_vs_k.png").stat().st_size > 0 and (out / "mlm" / "sweep_summary.csv").is_file()
    # the figures: one style per mode, the same as xmod-report's plot of the same MLM runs (whose folders list
    # modular first); degenerate zero-shot runs crossed out
    figures = paper_doc.curse_figures(summary)
    by_k = plots.plot_against_languages(report.collect_sweep(out / "mlm"), "loss").axes[0]
    report_lines = {c.get_label(): c.lines[0] for c in by_k.containers}
    for fig in figures.values():
        lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
        for mode in ("shared", "modular"):
            assert lines[mode].get_color() == plots.MODE_STYLE[mode]["color"]
            assert report_lines[f"adapter_mode={mode}"].get_color() == plots.MODE_STYLE[mode]["color"]
    crosses = [x for line in figures["zero_shot_vs_k.png"].axes[0].get_lines() if line.get_gid() == "degenerate"
               for x in line.get_xdata()]
    assert len(crosses) == sum(1 for r in summary["curse"] if r["flags"] and r["zero_shot_avg_acc"] is not None)


def test_curse_figures_draw_the_spread_over_seeds_and_no_bar_for_one_seed():
    rows = [
        {"mode": mode, "languages": k, "probe_mlm_loss": 3.0 + k / 10, "probe_mlm_loss_sd": sd,
         "probe_fact_loss": k / 10, "probe_fact_loss_sd": sd,
         "zero_shot_avg_acc": None if k == 1 else 50.0, "zero_shot_avg_acc_sd": None, "flags": {}}
        for mode, sd in (("shared", 0.2), ("modular", None)) for k in (1, 2)
    ]
    figures = paper_doc.curse_figures({"curse": rows, "chance": 33.33})
    ax = figures["probe_loss_vs_k.png"].axes[0]
    bars = [c for c in ax.containers if c.lines[2]]  # errorbar containers: (line, caps, bar collections)
    assert len(bars) == 1  # shared has an sd; modular's is undefined (one seed): no bar, not a bar of 0
    (segments,) = [b.lines[2][0].get_segments() for b in bars]
    assert [round(seg[1][1] - seg[0][1], 6) for seg in segments] == [0.4, 0.4]  # mean ± sd
    assert not [c for c in figures["zero_shot_vs_k.png"].axes[0].containers if c.lines[2]]
    facts = figures["fact_probe_vs_k.png"].axes[0]  # the verdict's metric, drawn the same way
    assert [list(line.get_ydata()) for line in facts.get_lines() if line.get_label() == "shared"] == [[0.1, 0.2]]
    assert len([c for c in facts.containers if c.lines[2]]) == 1


@pytest.mark.parametrize("sd", [None, 0.05])  # one seed, several
def test_curse_figures_of_a_study_with_one_k(sd):
    """A study of one K (`--ks 1`): the probe's loss at K = 1 per mode; the zero-shot panel (no language to transfer
    to at K = 1) says it has nothing to plot instead of showing an empty axis with the modes in its legend."""
    rows = [{"mode": mode, "languages": 1, "probe_mlm_loss": loss, "probe_mlm_loss_sd": sd, "probe_fact_loss": 0.1,
             "probe_fact_loss_sd": sd, "zero_shot_avg_acc": None,
             "zero_shot_avg_acc_sd": None, "flags": {"en": ["seed 0: predicts 1 of 3 classes"]}}
            for mode, loss in (("shared", 6.5), ("modular", 6.4))]  # fmt: skip
    figures = paper_doc.curse_figures({"curse": rows, "chance": 33.33})
    loss = figures["probe_loss_vs_k.png"].axes[0]
    lines = {line.get_label(): line for line in loss.get_lines()}
    for mode, value in (("shared", 6.5), ("modular", 6.4)):
        assert list(lines[mode].get_ydata()) == [value]
        assert lines[mode].get_xdata()[0] == pytest.approx(1.0, rel=0.1)  # K = 1, offset sideways
    assert lines["shared"].get_xdata()[0] != lines["modular"].get_xdata()[0]
    assert [t.get_text() for t in loss.get_xticklabels()] == ["1"] and loss.get_xlim()[0] < 1 < loss.get_xlim()[1]
    assert len([c for c in loss.containers if c.lines[2]]) == (0 if sd is None else 2)
    zero_shot = figures["zero_shot_vs_k.png"].axes[0]
    assert [line.get_label() for line in zero_shot.get_lines()] == ["chance"]
    assert [t.get_text() for t in zero_shot.texts if t.get_gid() == "empty"] == [
        "nothing to plot: no zero-shot NLI accuracy (mean over the other languages) at K = 1"]
    assert not [t for t in loss.texts if t.get_gid() == "empty"]
    for fig in figures.values():
        fig.savefig(io.BytesIO(), format="png")  # draws: the layout and the log axis work with one K


@pytest.mark.parametrize(("argv", "needle"), [
    (["--ks", "1"], "--posthoc-k 8 is not among --ks 1: the post-hoc step adds a language to models of one of "
                    "those K; pass it, e.g. --ks 1,8"),
    (["--ks", "1", "--posthoc-k", "1"], "--posthoc-k 1: with one language the shared and modular models are one "
                                        "model"),
    (["--ks", "0,2", "--posthoc-k", "2"], "--ks 0,2: each K must lie in 1..16"),
])  # fmt: skip
def test_study_settings_that_cannot_run_are_refused_before_any_run(tmp_path, capsys, argv, needle):
    with pytest.raises(SystemExit):
        paper.main([*argv, "--out", str(tmp_path / "out")])
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_at_one_language_the_shared_and_modular_models_are_one_model(tmp_path):
    """Why one run serves both modes at K = 1 (paper_summary.run_mode): built from the paper presets with the same
    seed, the shared model's one adapter and the modular model's adapter for en are the same parameters, drawn in
    the same order, and compute the same function; at K = 2 they differ (two adapters against one)."""
    def model(mode: str, k: int):
        with no_hydra():
            cfg = compose_run("train", tmp_path / f"{mode}{k}", tmp_path / "c",
                              ["experiment=paper_mlm", f"languages=synthetic{k}", f"adapter.adapter_mode={mode}"])
        torch.manual_seed(cfg.seed)
        return runs.build(cfg.task).model

    shared, modular = model("shared", 1), model("modular", 1)
    assert shared.config.adapter_mode == "shared" and modular.config.adapter_mode == "modular"
    assert shared.config.languages == modular.config.languages == ["en_XX"]
    pairs = list(zip(shared.named_parameters(), modular.named_parameters(), strict=True))
    assert {(a.replace("adapter_modules.shared", "adapter_modules.en_XX"), b) for (a, _), (b, _) in pairs} == {
        (b, b) for _, (b, _) in pairs}
    assert all(torch.equal(p, q) for (_, p), (_, q) in pairs)
    ids = torch.randint(5, shared.config.vocab_size, (2, 12))
    lang = torch.zeros(2, dtype=torch.long)
    shared.eval(), modular.eval()
    assert torch.equal(shared(ids, lang_ids=lang).logits, modular(ids, lang_ids=lang).logits)
    assert paper_summary.run_name("shared", 1, 0) == paper_summary.run_name("modular", 1, 0) == "modular_synthetic1_seed0"
    assert paper_summary.missing(tmp_path, "shared", [1, 2], 0) == [2]  # the shared sweep never runs K = 1
    assert sum(p.numel() for p in model("modular", 2).parameters()) > sum(p.numel() for p in model("shared", 2).parameters())
