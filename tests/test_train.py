"""xmod-train end to end on tiny CPU runs: run directory contents, resume, export, bad input."""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from tests.tasks.run_helpers import SHRINK, SYNTHETIC, compose_run, no_hydra
from xmod_lab.train import train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("xmod-cache")


def run_train(tmp_path: Path, cache_dir: Path, *overrides: str, name: str = "run"):
    run_dir = tmp_path / name
    with no_hydra():
        cfg = compose_run("train", run_dir, cache_dir, [*SHRINK, *SYNTHETIC, *overrides])
    return train(cfg), run_dir


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache_dir):
    """One shrunk default run (1 epoch), exported, shared by the tests below."""
    tmp = tmp_path_factory.mktemp("trained")
    metrics, run_dir = run_train(tmp, cache_dir, f"export_dir={tmp / 'export'}")
    return metrics, run_dir, tmp / "export"


def test_run_directory_holds_config_git_checkpoints_and_results(trained):
    metrics, run_dir, _ = trained
    for name in ("config.yaml", "git.txt", "results.json", "results.csv", "run_complete", "checkpoints/last.ckpt"):
        assert (run_dir / name).is_file(), name
    saved = (run_dir / "config.yaml").read_text()
    assert "${" not in saved, "the saved config must be resolved"
    assert "monitor: val/en/acc" in saved  # zero-shot: checkpoints chosen on the training language only
    results = json.loads((run_dir / "results.json").read_text())
    sets = ["en", "de", "fr", "ru", "zh"]  # evaluation sets (dataset codes), each with the adapter that scored it
    assert list(results["test"]) == [*sets, "zs_avg", "avg"]
    assert results["adapters"] == dict(zip(sets, ["en_XX", "de_DE", "fr_XX", "ru_RU", "zh_CN"], strict=True))
    assert results["parameters"]["trainable"] > 0 and results["train_languages"] == ["en"]
    # the score "best run" is chosen on in reports: the checkpoint's validation score, not a test score
    assert results["monitor"] == "val/en/acc" and results["monitor_mode"] == "max"
    with (run_dir / "csv" / "metrics.csv").open() as f:
        logged = [float(row["val/en/acc"]) for row in csv.DictReader(f) if row.get("val/en/acc")]
    assert len(logged) == 1 and results["best_score"] == pytest.approx(logged[0], abs=1e-3)
    assert results["test"]["de"]["acc"] == pytest.approx(metrics["test/de/acc"], abs=1e-3)
    rows = (run_dir / "results.csv").read_text().splitlines()
    assert rows[0] == "eval_set,adapter,acc" and rows[1].startswith("en,en_XX,") and rows[-1].startswith("avg,")
    assert len(rows) == 8  # header, 5 evaluation sets, zs_avg, avg


def test_parameter_counts_are_logged(tmp_path, cache_dir, caplog):
    with caplog.at_level(logging.INFO):
        run_train(tmp_path, cache_dir, "debug=fdr")
    text = caplog.text  # freeze=auto on a model from scratch (no pre-training stage here): nothing frozen
    assert "trainable" in text and "0 frozen (freeze.policy=none)" in text
    assert "adapter:de_DE" in text  # the per-group report


@pytest.mark.parametrize(("mode", "adapters_per_layer"), [("shared", 1), ("none", 0)])
def test_adapter_mode_reaches_the_tested_checkpoint(tmp_path, cache_dir, mode, adapters_per_layer):
    """adapter=<mode> builds, trains and tests a model of that architecture (a sweep of modes once gave
    identical scores: the data's hypothesis-only shortcut, not a dropped override)."""
    _, run_dir = run_train(tmp_path, cache_dir, f"adapter={mode}")
    results = json.loads((run_dir / "results.json").read_text())
    assert Path(results["checkpoint"]).parent == run_dir / "checkpoints"  # this run's own checkpoint was tested
    ckpt = torch.load(results["checkpoint"], weights_only=False)
    assert ckpt["hyper_parameters"]["model_config"]["adapter_mode"] == mode
    state = ckpt["state_dict"]
    adapters = {k.split(".dense1.")[0] for k in state if "adapter" in k and ".dense1.weight" in k}
    assert len(adapters) == 2 * adapters_per_layer  # 2 layers
    assert sum(v.numel() for v in state.values()) == sum(results["parameters"].values())


def test_resume_continues_from_the_saved_step(trained, tmp_path, cache_dir):
    _, run_dir, _ = trained
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    first = torch.load(ckpt, weights_only=False)
    metrics, resumed = run_train(tmp_path, cache_dir, f"ckpt_path={ckpt}", "trainer.max_epochs=2", name="resumed")
    steps_per_epoch = first["global_step"]
    results = json.loads((resumed / "results.json").read_text())
    assert results["global_step"] == 2 * steps_per_epoch
    last = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=False)
    # two epochs trained (written at the last epoch end, or at train end when that epoch did not improve)
    assert last["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"] == 2
    assert last["global_step"] == 2 * steps_per_epoch


def test_export_loads_in_transformers_with_the_same_outputs(trained):
    transformers = pytest.importorskip("transformers")
    _, run_dir, export = trained
    from xmod_lab.models import XmodForSequenceClassification

    ours = XmodForSequenceClassification.from_pretrained(export).eval()
    theirs = transformers.XmodForSequenceClassification.from_pretrained(export).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(export)
    enc = tokenizer(["Anna 3 kalo"], ["Ben 3 kalo"], return_tensors="pt")
    lang_ids = torch.tensor([ours.config.lang_id("de_DE")])
    with torch.no_grad():
        torch.testing.assert_close(ours(**enc, lang_ids=lang_ids).logits, theirs(**enc, lang_ids=lang_ids).logits)
    # pipelines pass no lang_ids: the export names the first training language's adapter (export_default_language)
    assert theirs.config.default_language == "en_XX"
    classify = transformers.pipeline("text-classification", model=theirs, tokenizer=tokenizer)
    with torch.no_grad():
        expected = theirs(**tokenizer(["Anna 3 kalo"], return_tensors="pt"),
                          lang_ids=torch.tensor([ours.config.lang_id("en_XX")])).logits.softmax(-1).max().item()
    assert classify("Anna 3 kalo")[0]["score"] == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize(("overrides", "error", "message"), [
    (["languages.eval=[en,it]"], ValueError, r"eval language\(s\) \['it_IT'\] have no adapter in the model.*languages.map"),
    (["freeze=custom", "freeze.exclude=[.]"], ValueError, "no trainable parameter"),
    (["freeze=paper"], ValueError, r"keeps embeddings and 5 adapter\(s\) frozen, but this model was built from scratch"),
    (["ckpt_path=/nonexistent/last.ckpt"], FileNotFoundError, "no such checkpoint"),
    (["languages.eval=[en,xx]"], ValueError, r"languages.eval: \['xx'\] are not synthetic languages"),
    (["model.pretrained=/nonexistent/model"], FileNotFoundError, "no such directory"),
    (["model.config.vocab_size=100"], ValueError, r"tokenizer has \d+ tokens but the model's vocab_size is 100"),
], ids=["eval-language-without-adapter", "nothing-trainable", "frozen-from-scratch", "missing-checkpoint", "unknown-dataset-language",
        "missing-model-dir", "tokenizer-larger-than-embeddings"])
def test_bad_input_fails_clearly_and_never_looks_finished(tmp_path, cache_dir, overrides, error, message):
    with pytest.raises(error, match=message):
        run_train(tmp_path, cache_dir, *overrides)
    assert not (tmp_path / "run" / "run_complete").exists()
    assert not (tmp_path / "run" / "results.json").exists()


def test_language_not_in_a_pretrained_backbone(trained, tmp_path, cache_dir):
    _, _, export = trained
    with pytest.raises(ValueError, match=r"\['sw_KE'\] have no adapter in"):
        run_train(tmp_path, cache_dir, f"model.pretrained={export}", "languages.adapters=[en_XX,sw_KE]")


def cli(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name(args[0])
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([str(exe), *args[1:]], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.slow
def test_default_command_learns_on_the_training_language(tmp_path):
    """`xmod-train` as the README runs it (the default experiment: MLM pre-training, then fine-tuning with
    freeze=paper), the fine-tuning cut to 4 of its 20 epochs."""
    run_dir = tmp_path / "run"
    out = cli("xmod-train", "trainer.max_epochs=4", f"hydra.run.dir={run_dir}", cwd=tmp_path, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    saved = json.loads((run_dir / "results.json").read_text())
    results = saved["test"]
    assert list(results) == ["en", "de", "fr", "ru", "zh", "zs_avg", "avg"]  # en + 4 zero-shot
    assert results["en"]["acc"] > 45.0  # chance: 33.3; the data has no hypothesis-only shortcut
    assert saved["diagnostics"]["chance"] == pytest.approx(33.33, abs=0.01)
    log = (run_dir / "train.log").read_text()
    assert "parameters:" in log and "test results" in log and "freeze.policy=paper" in log
    assert "next to chance" in log  # the per-language table with chance and the shortcut ceiling
    assert (run_dir / "run_complete").is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()
    pretrained = list((tmp_path / "outputs" / ".cache" / "pretrained").glob("*/pretraining_run/run_complete"))
    assert len(pretrained) == 1  # the pre-training stage ran once, cached
    assert f"pretrained: {pretrained[0].parent.parent}" in (run_dir / "config.yaml").read_text()
    assert list((tmp_path / "outputs" / ".cache" / "synthetic").glob("*/tokenizer"))  # generated on the fly


@pytest.mark.slow
@pytest.mark.parametrize(("command", "expected"), [
    ([sys.executable, "-m", "xmod_lab.train", "model=nonexistent"],
     ["Could not find 'model/nonexistent'", "Available options", "tiny", "large_prenorm"]),
    (["xmod-train", "freeze.policy=frozen"], ["frozen", "paper", "adapters_only"]),
    (["xmod-eval", "ckpt_path=/nonexistent/last.ckpt"], ["no such checkpoint file"]),
], ids=["python-m-unknown-option", "bad-enum-value", "eval-missing-checkpoint"])
def test_entry_points_reject_bad_input_with_nonzero_exit(tmp_path, command, expected):
    if not command[0].startswith("/"):
        command = [str(Path(sys.executable).with_name(command[0])), *command[1:]]
    out = subprocess.run([*command, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode != 0
    for text in expected:
        assert text in out.stderr, out.stderr[-2000:]
    assert not (tmp_path / "run" / "run_complete").exists()


@pytest.mark.parametrize(("overrides", "message"), [
    (["data=panx", "task=sequence_classification"],
     r"task=sequence_classification \(SequenceClassificationTask\) cannot run on data=panx, a TokenClassificationDataModule"),
    (["data=mlqa", "task=token_classification"], r"task=token_classification .* cannot run on data=mlqa"),
    (["data=mlm_text", "task=causal_lm"], r"data=mlm_text, a LanguageModelingDataModule \(objective mlm\)"),
], ids=["token-data-sentence-task", "qa-data-token-task", "lm-objective"])
def test_data_task_mismatch_is_refused_before_anything_is_built(tmp_path, overrides, message):
    """Each data preset selects its task; a task= that cannot train on it fails at setup, naming both (it used
    to die in the first step with a 137-line traceback, or on a missing 'data.label_names')."""
    with no_hydra():
        cfg = compose_run("train", tmp_path / "run", tmp_path / "cache", overrides)
        with pytest.raises(ValueError, match=message):
            train(cfg)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("data", "task"), [("panx", "TokenClassificationTask"), ("udpos", "TokenClassificationTask"),
                                            ("mlqa", "QuestionAnsweringTask"), ("pawsx", "SequenceClassificationTask"),
                                            ("xcopa", "MultipleChoiceTask"), ("mlm_text", "MaskedLMTask")])
def test_data_presets_bring_their_task_and_an_override_wins(tmp_path, data, task):
    with no_hydra():
        cfg = compose_run("train", tmp_path / "run", tmp_path / "cache", [f"data={data}"])
        assert cfg.task._target_.endswith(task) and cfg.freeze.policy == "auto"
        cfg = compose_run("train", tmp_path / "run", tmp_path / "cache", [f"data={data}", "task=causal_lm"])
        assert cfg.task._target_.endswith("CausalLMTask")


class BarSpy(Callback):
    """The progress bar the trainer runs with."""

    seen: list[str | None] = []

    def on_fit_start(self, trainer, pl_module):
        bar = trainer.progress_bar_callback
        BarSpy.seen.append(type(bar).__name__ if bar is not None else None)


@pytest.mark.parametrize(("overrides", "expected"), [
    ([], "TQDMProgressBar"),  # not the rich one Lightning would pick (rich is installed): ~3% of the default job
    (["trainer.enable_progress_bar=false"], None),
    (["+callbacks.bar._target_=lightning.pytorch.callbacks.RichProgressBar"], "RichProgressBar"),  # a user's choice
])
def test_the_progress_bar_is_tqdm_unless_turned_off_or_chosen(tmp_path, cache_dir, overrides, expected):
    BarSpy.seen = []
    shrink = [o for o in SHRINK if o != "trainer.enable_progress_bar=false"]
    with no_hydra():
        cfg = compose_run("train", tmp_path / "run", cache_dir, [*shrink, *SYNTHETIC, "debug=fdr", *overrides,
                                                                "+callbacks.spy._target_=tests.test_train.BarSpy"])
    train(cfg)
    assert BarSpy.seen == [expected]
