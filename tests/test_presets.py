"""The experiment presets work for any languages: the monitored metric follows the first training language, the
data configs they name exist and load the real excerpts, and UD-POS is scored by accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.tasks.run_helpers import SHRINK, compose_run, no_hydra
from xmod_lab.data.tokenizer import train_tokenizer
from xmod_lab.runs import build
from xmod_lab.train import train

PRESETS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "xmod_lab" / "conf" / "experiment").glob("*.yaml"))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory, xtreme_samples) -> Path:
    texts = []
    for task in ("panx", "udpos"):
        for path in (xtreme_samples / task).glob("*/*.jsonl"):
            texts += [" ".join(json.loads(line)["tokens"]) for line in path.read_text("utf-8").splitlines()]
    for path in (xtreme_samples / "tydiqa").glob("*/*.jsonl"):
        texts += [json.loads(line)["context"] for line in path.read_text("utf-8").splitlines()]
    out = tmp_path_factory.mktemp("tok") / "tokenizer"
    train_tokenizer(texts * 3, 400, out)
    return out


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_leave_the_monitor_to_the_first_training_language(tmp_path, preset):
    with no_hydra():
        cfg = compose_run("train", tmp_path / "run", tmp_path / "cache", [f"experiment={preset}"])
    assert cfg.monitor is None and cfg.monitor_mode is None  # runs.default_monitor decides, per languages.train


@pytest.mark.parametrize(("data", "eval_langs", "metrics"), [
    ("panx", ["de", "fr"], {"acc", "f1"}),
    ("udpos", ["de", "en"], {"acc"}),  # UPOS tags are no entity scheme: seqeval's F1 over them means nothing
])
def test_token_preset_trains_from_german_and_scores_its_metric(tmp_path, tokenizer, xtreme_samples, data,
                                                                eval_langs, metrics):
    """experiment=panx_zero_shot without English anywhere: used to crash at the end of the first epoch
    (monitor val/en/f1), and data=udpos reported a seqeval 'F1' over POS tags."""
    from transformers import AutoTokenizer

    size = len(AutoTokenizer.from_pretrained(tokenizer))
    run_dir = tmp_path / "run"
    with no_hydra():
        cfg = compose_run("train", run_dir, tmp_path / "cache", [
            "experiment=panx_zero_shot", f"data={data}", *SHRINK, "torch_threads=1", "freeze=none",
            f"model.config.vocab_size={size}", f"data.tokenizer={tokenizer}", "data.source.name=null",
            f"data.source.path='{xtreme_samples / data}/{{lang}}/{{split}}.jsonl'", "data.num_workers=0",
            "data.batch_size=2", "data.max_length=32", "languages.train=[de]", f"languages.eval=[{','.join(eval_langs)}]",
        ])
    train(cfg)
    main = "f1" if "f1" in metrics else "acc"
    assert f"monitor: val/de/{main}" in (run_dir / "config.yaml").read_text()
    results = json.loads((run_dir / "results.json").read_text())["test"]
    assert {name for row in results.values() for name in row} == metrics


@pytest.mark.parametrize(("data", "overrides", "lang", "rows"), [
    ("mlqa", ["data.eval_source.path='{root}/mlqa/{{lang}}'", "languages.eval=[en-de]", "+languages.map={{en-de:de_DE}}"],
     "en-de", 1),
    ("tydiqa", ["data.eval_source.path={root}/tydiqa/goldp", "data.eval_source.name=null",
                "data.eval_source.lang_column=lang", "languages.eval=[ar]"], "ar", 1),
])
def test_qa_data_configs_the_preset_names_load_the_real_excerpts(tmp_path, tokenizer, xtreme_samples, data,
                                                                  overrides, lang, rows):
    with no_hydra():
        cfg = compose_run("train", tmp_path / "run", tmp_path / "cache", [
            "experiment=qa_zero_shot", f"data={data}", "model=tiny", f"data.tokenizer={tokenizer}",
            "data.max_length=128", "data.doc_stride=32", *(o.format(root=xtreme_samples) for o in overrides),
        ])
    datamodule = build(cfg.data, languages=list(cfg.languages.adapters))
    datamodule.setup("validate")
    answers = {i: a for b in datamodule.val_dataloader()[0] for i, a in zip(b["example_id"], b["answers"], strict=True)}
    assert len(answers) == rows and all(answers.values())  # gold answers read from the excerpt
    assert len(datamodule.val_dataloader()) == 1
