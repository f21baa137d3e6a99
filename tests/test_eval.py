"""xmod-eval reproduces xmod-train's metrics from a Lightning checkpoint and from an exported directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import xmod_lab
from tests.tasks.run_helpers import SHRINK, SYNTHETIC, compose_run, no_hydra
from xmod_lab.eval import evaluate
from xmod_lab.train import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval")
    cache = tmp / "cache"
    with no_hydra():
        cfg = compose_run("train", tmp / "train", cache, [*SHRINK, *SYNTHETIC, f"export_dir={tmp / 'export'}"])
    metrics = train(cfg)
    results = json.loads((tmp / "train" / "results.json").read_text())
    return tmp, cache, metrics, results


def run_eval(tmp: Path, cache: Path, *overrides: str, name: str = "eval") -> tuple[dict, Path]:
    eval_shrink = [o for o in SHRINK if not o.startswith("callbacks.")]
    with no_hydra():
        cfg = compose_run("eval", tmp / name, cache, [*eval_shrink, *SYNTHETIC, *overrides])
    return evaluate(cfg), tmp / name


def test_checkpoint_reproduces_the_training_run_metrics(trained):
    tmp, cache, metrics, results = trained
    assert results["checkpoint"]
    again, run_dir = run_eval(tmp, cache, f"ckpt_path={results['checkpoint']}")
    test_keys = [k for k in metrics if k.startswith("test/")]
    assert len(test_keys) == 7  # 5 evaluation sets, zs_avg, avg
    for key in test_keys:
        assert again[key] == pytest.approx(metrics[key], abs=1e-6), key
    assert (run_dir / "run_complete").is_file()
    assert json.loads((run_dir / "results.json").read_text())["test"] == results["test"]


def test_the_checkpoint_file_is_read_once(trained, monkeypatch):
    """The trust check, the task and the tokenizer all take the one object read from the file (a base model's
    checkpoint is gigabytes)."""
    tmp, cache, metrics, results = trained
    reads = []
    real_load = torch.load

    def counting_load(f, *args, **kwargs):
        reads.append(f if isinstance(f, str | Path) else type(f).__name__)
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    again, _ = run_eval(tmp, cache, f"ckpt_path={results['checkpoint']}", name="eval-read-once")
    assert [str(f) for f in reads] == [results["checkpoint"]]
    for key in [k for k in metrics if k.startswith("test/")]:
        assert again[key] == pytest.approx(metrics[key], abs=1e-6), key


def test_checkpoint_alone_reuses_the_training_run_settings(trained):
    """`xmod-eval ckpt_path=<run>/checkpoints/x.ckpt`: data (96/24 examples here, not the default 4000/500),
    task and languages come from the run's config.yaml."""
    tmp, cache, metrics, results = trained
    with no_hydra():
        cfg = compose_run("eval", tmp / "eval-alone", cache, ["trainer.enable_progress_bar=false",
                                                              f"ckpt_path={results['checkpoint']}"])
    again = evaluate(cfg)
    test_keys = [k for k in metrics if k.startswith("test/")]
    assert len(test_keys) == 7  # 5 evaluation sets, zs_avg, avg
    for key in test_keys:
        assert again[key] == pytest.approx(metrics[key], abs=1e-6), key
    saved = (tmp / "eval-alone" / "config.yaml").read_text()
    assert "n_eval: 24" in saved and "hidden_size: 32" in saved


def test_an_experiment_preset_chooses_what_xmod_eval_evaluates(trained):
    """`xmod-eval experiment=paper_nli ckpt_path=...`: the preset's task, data (its world) and evaluation languages,
    not the training run's config.yaml; the training settings it also sets (pre-training, optimizer, export) are
    read by nothing."""
    tmp, cache, _, results = trained
    again, run_dir = run_eval(tmp, cache, "experiment=paper_nli", f"ckpt_path={results['checkpoint']}",
                              "languages=synthetic4", name="eval-preset")
    saved = json.loads((run_dir / "results.json").read_text())
    assert list(saved["test"]) == ["en", "de", "fr", "ru", "zs_avg", "avg"]  # synthetic4; the preset trains on en
    assert all(0.0 <= saved["test"][lang]["acc"] <= 100.0 for lang in saved["test"])
    config = (run_dir / "config.yaml").read_text()
    world = OmegaConf.load(Path(xmod_lab.__file__).parent / "conf" / "world" / "paper.yaml")
    saved_data = OmegaConf.create(config).data
    assert (saved_data.private_facts, saved_data.shared_facts) == (world.private_facts, world.shared_facts)
    assert not (run_dir / "export").exists() and "test/ru/acc" in again


def test_exported_directory_reproduces_the_metrics_of_the_final_weights(trained):
    tmp, cache, _, results = trained
    last = json.loads((tmp / "train" / "results.json").read_text())
    # export_dir holds the weights the final test used (the best checkpoint's)
    again, _ = run_eval(tmp, cache, f"model.pretrained={tmp / 'export'}", name="eval-export")
    assert again["test/avg/acc"] == pytest.approx(last["test"]["avg"]["acc"], abs=1e-2)


def test_other_languages_and_validation_split(trained):
    tmp, cache, _, results = trained
    again, run_dir = run_eval(tmp, cache, f"ckpt_path={results['checkpoint']}", "languages.eval=[de,en]",
                              "split=validation", name="eval-val")
    assert sorted(k for k in again if k.startswith("val/")) == ["val/avg/acc", "val/de/acc", "val/en/acc", "val/zs_avg/acc"]
    assert json.loads((run_dir / "results.json").read_text())["split"] == "val"


def test_wrong_task_or_missing_checkpoint_is_a_clear_error(trained):
    tmp, cache, _, results = trained
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        run_eval(tmp, cache, "ckpt_path=/nonexistent.ckpt", name="bad1")
    with pytest.raises(ValueError, match="task=token_classification .* cannot run on data=synthetic_nli"):
        run_eval(tmp, cache, f"ckpt_path={results['checkpoint']}", "task=token_classification", name="bad2")
    assert not (tmp / "bad2" / "run_complete").exists()


def test_wandb_run_of_an_evaluation_has_job_type_eval(trained, monkeypatch):
    from lightning.pytorch.loggers import CSVLogger

    from xmod_lab import tracking

    seen = {}

    def spy(save_dir, **kwargs):
        seen.update(kwargs)
        return CSVLogger(save_dir)

    monkeypatch.setattr(tracking, "wandb_logger", spy)
    tmp, cache, _, results = trained
    run_eval(tmp, cache, f"ckpt_path={results['checkpoint']}", "logger=wandb", name="eval-wandb")
    assert seen["job_type"] == "eval"


def test_evaluation_log_has_no_freezing_table(trained, caplog):
    """Nothing trains in an evaluation: the freezing table of the task it builds is not shown."""
    import logging

    tmp, cache, _, results = trained
    with caplog.at_level(logging.INFO):
        run_eval(tmp, cache, f"ckpt_path={results['checkpoint']}", name="eval-quiet")
    assert "test results" in caplog.text
    assert "freeze=" not in caplog.text and "adapter:de_DE" not in caplog.text


def test_a_run_written_before_evaluation_sets_still_evaluates(trained):
    """A run directory and checkpoint in the names xmod-lab used before (task `num_labels`, adapter options
    without their `adapter_` prefix, data `languages`) evaluate to the run's own scores."""
    import shutil

    import torch
    import yaml

    from xmod_lab.eval import LEGACY_ADAPTER_KEYS

    tmp, cache, metrics, results = trained
    old_run = tmp / "old-run"
    (old_run / "checkpoints").mkdir(parents=True)
    ckpt = torch.load(results["checkpoint"], map_location="cpu", weights_only=False)
    hp = ckpt["hyper_parameters"]
    hp["num_labels"] = len(hp.pop("label_names"))
    renamed = {new: old for old, new in LEGACY_ADAPTER_KEYS.items()}
    hp["adapter"] = {renamed[k]: v for k, v in hp["adapter"].items()}
    torch.save(ckpt, old_run / "checkpoints" / "old.ckpt")
    saved = yaml.safe_load((tmp / "train" / "config.yaml").read_text())
    saved["adapter"] = {renamed[k]: v for k, v in saved["adapter"].items()}
    saved["task"]["num_labels"] = len(saved["task"].pop("label_names"))
    saved["data"]["languages"] = ["en_XX", "de_DE", "fr_XX", "ru_RU", "zh_CN"]
    (old_run / "config.yaml").write_text(yaml.safe_dump(saved))
    shutil.copytree(tmp / "train" / "tokenizer", old_run / "tokenizer")

    with no_hydra():
        cfg = compose_run("eval", tmp / "eval-old", cache, ["trainer.enable_progress_bar=false",
                                                            f"ckpt_path={old_run / 'checkpoints' / 'old.ckpt'}"])
    again = evaluate(cfg)
    for key in [k for k in metrics if k.startswith("test/")]:
        assert again[key] == pytest.approx(metrics[key], abs=1e-6), key
