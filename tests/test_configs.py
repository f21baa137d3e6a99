"""Every shipped config composes; schemas reject typos and wrong types; every experiment preset
fast-dev-runs on CPU, shrunk (tiny model, local generated or sample data standing in for the hub)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

import xmod_lab
from tests.tasks.run_helpers import SHRINK, compose_run, no_hydra
from xmod_lab.train import train

CONF = Path(xmod_lab.__file__).parent / "conf"
MINE = ("model", "languages", "adapter", "freeze", "task", "trainer", "logger", "callbacks", "paths", "debug",
        "experiment", "pretrain")
OPTIONS = [(g, p.stem) for g in MINE for p in sorted((CONF / g).glob("*.yaml"))]


def compose(tmp_path: Path, *overrides: str, name: str = "train"):
    with no_hydra():
        return compose_run(name, tmp_path / "run", tmp_path / "cache", list(overrides))


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_group_option_composes_and_resolves(tmp_path, group, option):
    extra = ["languages.adapters=[en_XX]", "languages.train=[en]", "languages.eval=[en]"] if option == "custom" \
        and group in ("languages",) else []
    if group == "experiment" and option == "new_language_mlm":
        extra = []
    cfg = compose(tmp_path, f"{group}={option}", *extra)
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    assert resolved[group if group not in ("debug", "experiment") else "name"] is not None
    assert cfg.task.languages == cfg.languages  # defined once, interpolated into the task


def test_eval_config_composes(tmp_path):
    cfg = compose(tmp_path, "ckpt_path=/x.ckpt", name="eval")
    assert cfg.freeze.policy == "none" and cfg.split == "test"


@pytest.mark.parametrize("preset", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_every_experiment_preset_composes_for_xmod_eval_with_the_groups_it_gives_xmod_train(tmp_path, preset):
    evaluation = compose(tmp_path, f"experiment={preset}", "ckpt_path=/x.ckpt", name="eval")
    training = compose(tmp_path, f"experiment={preset}")
    for group in ("task", "data", "model", "languages", "adapter", "trainer"):
        assert OmegaConf.to_container(evaluation[group]) == OmegaConf.to_container(training[group]), group
    assert evaluation.pretrain.overrides is None  # pretrain=none: xmod-eval never pre-trains


@pytest.mark.parametrize("option", ["cpu", "ddp_cpu"])
def test_cpu_trainers_instantiate(tmp_path, option):
    cfg = compose(tmp_path, f"trainer={option}")
    trainer = instantiate(cfg.trainer, logger=False)
    assert trainer.num_devices == (2 if option == "ddp_cpu" else 1)


def test_callbacks_and_loggers_instantiate(tmp_path):
    cfg = compose(tmp_path, "callbacks=early_stopping", "monitor=val/avg/acc", "monitor_mode=max", "logger=many")
    callbacks = [instantiate(c) for c in cfg.callbacks.values()]
    assert {type(c).__name__ for c in callbacks} == {"XmodCheckpoint", "ModelSummary", "EarlyStopping",
                                                     "ValidationScores", "PredictedClasses"}
    loggers = {name: instantiate(c) for name, c in cfg.logger.items()}
    assert set(loggers) == {"csv", "tensorboard"}
    for logger in loggers.values():
        logger.log_metrics({"val/avg/acc": 50.0}, step=1)
        logger.finalize("success")
    assert (tmp_path / "run" / "csv" / "metrics.csv").is_file()
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.parametrize(("override", "error", "needle"), [
    ("freeze.polcy=paper", ConfigCompositionException, "polcy"),
    ("freeze.policy=frozen", ConfigCompositionException, "frozen"),
    ("adapter.adapter_reduction_factor=abc", ConfigCompositionException, "reduction_factor"),
    ("adapter.adapter_mode=modulr", ConfigCompositionException, "modulr"),
    ("languages.train=en", ConfigCompositionException, "languages.train"),
    ("seeed=1", ConfigCompositionException, "seeed"),
    ("model=nonexistent", MissingConfigException, "Available options"),
])
def test_schema_rejects_typos_and_wrong_types(tmp_path, override, error, needle):
    with pytest.raises(error) as info:
        compose(tmp_path, override)
    text = str(info.value) + str(info.value.__cause__)
    assert needle in text


def test_schema_types_values(tmp_path):
    cfg = compose(tmp_path, "adapter.adapter_reduction_factor=2.5", "adapter.adapter_layers=[0,1]", "freeze=adapters_only",
                  "freeze.languages=[de_DE]")
    assert cfg.adapter.adapter_reduction_factor == 2.5 and list(cfg.adapter.adapter_layers) == [0, 1]
    with pytest.raises((ValidationError, ConfigKeyError)):
        cfg.freeze.policy = "everything"


def test_experiments_hold_the_paper_recipes(tmp_path):
    xnli = compose(tmp_path, "experiment=xnli_zero_shot")
    assert xnli.model.pretrained == "facebook/xmod-base" and xnli.freeze.policy == "paper"
    assert xnli.optimizer.lr == 1e-5 and list(xnli.optimizer.betas) == [0.9, 0.98] and xnli.optimizer.eps == 1e-6
    assert xnli.scheduler.name == "constant" and xnli.trainer.max_epochs == 5 and xnli.data.batch_size == 32
    assert len(xnli.languages.eval) == 15 and xnli.data.source.path == "facebook/xnli"
    panx = compose(tmp_path, "experiment=panx_zero_shot")
    assert panx.task._target_.endswith("TokenClassificationTask") and panx.trainer.max_epochs == 10
    qa = compose(tmp_path, "experiment=qa_zero_shot")
    assert qa.data.max_length == 384 and qa.data.doc_stride == 128 and qa.scheduler.warmup_steps == 500
    new = compose(tmp_path, "experiment=new_language_mlm")
    assert new.freeze.policy == "adapters_only" and dict(new.languages.add) == {"rm_CH": ["de_DE", "fr_XX", "it_IT"]}
    assert new.optimizer.lr == 7e-4 and new.trainer.gradient_clip_val == 1.0


# --- every experiment preset, fast-dev-run on CPU with local data -----------------------------------------

@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    from xmod_lab.data.synthetic import prepare_synthetic

    return prepare_synthetic(tmp_path_factory.mktemp("synthetic") / "data", n_train=48, n_eval=16, n_corpus=200)


def local_data(synthetic: Path, schema: str) -> list[str]:
    return [f"data.source.path='{synthetic}/{schema}/{{lang}}/{{split}}.jsonl'", "data.source.name=null",
            f"data.tokenizer={synthetic}/tokenizer", "model.config.vocab_size=1000", "data.num_workers=0",
            "data.batch_size=8", "data.eval_batch_size=8"]


def fast_dev_run(tmp_path: Path, *overrides: str) -> dict:
    with no_hydra():
        cfg = compose_run("train", tmp_path / "run", tmp_path / "cache", [*overrides, *SHRINK, "debug=fdr"])
    metrics = train(cfg)
    assert (tmp_path / "run" / "run_complete").is_file()
    return metrics


@pytest.mark.slow
def test_experiment_xnli_zero_shot_fast_dev_run(tmp_path, synthetic):
    metrics = fast_dev_run(tmp_path, "experiment=xnli_zero_shot", "freeze=none", *local_data(synthetic, "xnli"),
                           "languages.eval=[en,de,fr]")
    assert {"test/en/acc", "test/de/acc", "test/fr/acc", "test/avg/acc"} <= set(metrics)


@pytest.mark.slow
def test_experiment_panx_zero_shot_fast_dev_run(tmp_path, synthetic):
    metrics = fast_dev_run(tmp_path, "experiment=panx_zero_shot", "freeze=none", *local_data(synthetic, "panx"),
                           "languages.eval=[en,de]")
    assert {"test/en/f1", "test/de/f1", "test/avg/f1", "test/avg/acc"} <= set(metrics)


@pytest.mark.slow
def test_experiment_qa_zero_shot_fast_dev_run(tmp_path, synthetic, xtreme_samples):
    # real XQuAD excerpts stand in for SQuAD (train) and XQuAD (eval)
    metrics = fast_dev_run(tmp_path, "experiment=qa_zero_shot", "freeze=none", *local_data(synthetic, "xnli"),
                           f"data.source.path='{xtreme_samples}/xquad/{{lang}}/{{split}}.jsonl'",
                           "data.source.splits={train: validation, validation: null, test: null}",
                           f"data.eval_source.path='{xtreme_samples}/xquad/{{lang}}/{{split}}.jsonl'",
                           "data.eval_source.name=null",
                           "data.max_length=96", "data.doc_stride=32", "languages.eval=[en,de]",
                           "data.max_train_examples=8", "data.max_eval_examples=8")
    assert {"test/en/f1", "test/de/exact_match", "test/avg/f1"} <= set(metrics)


@pytest.mark.slow
def test_experiment_new_language_mlm_fast_dev_run(tmp_path, synthetic):
    # a fresh tiny "base": save one with the recipe's starting languages, then add rm_CH as the recipe does
    from xmod_lab.models import XmodConfig, XmodForMaskedLM

    base = tmp_path / "base"
    XmodForMaskedLM(XmodConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=514, type_vocab_size=1,
                               layer_norm_eps=1e-5,  # = the shrunk model=tiny's fields (they must match)
                               languages=["en_XX", "de_DE", "fr_XX", "it_IT"])).save_pretrained(base)
    metrics = fast_dev_run(tmp_path, "experiment=new_language_mlm", *local_data(synthetic, "corpus"),
                           f"model.pretrained={base}", "languages.adapters=[de_DE,fr_XX,rm_CH]",
                           "languages.add={rm_CH: [de_DE, fr_XX]}", "languages.train=[de,fr]",
                           "languages.eval=[de,fr]", "monitor=val/avg/loss", "test=true",
                           f"data.source.path='{synthetic}/corpus/{{lang}}.txt'", "data.max_length=32",
                           "data.holdout=0.1", "data.alpha=null")
    assert {"test/de/loss", "test/fr/ppl", "test/avg/loss"} <= set(metrics)
