"""One authority for languages, results keyed by evaluation set (issue 11).

* Evaluation sets that share an adapter (MLQA's en-ar ... en-vi, all on en_XX) are separate results rows.
* The backbone's `config.languages` is the one adapter list: the datamodule is built from the built model,
  and no second copy of a published language list exists in the code base.
* Chinese text in the other script than its adapter's is warned about, with the map entry that fixes it.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from pathlib import Path

import pytest

from tests.data.conftest import write_jsonl
from tests.data.test_question_answering import qa_rows
from tests.tasks.run_helpers import SHRINK, compose_run, no_hydra
from xmod_lab import runs
from xmod_lab.data.languages import chinese_script, script_mismatch
from xmod_lab.data.tokenizer import train_tokenizer
from xmod_lab.models.configuration import PUBLISHED_LANGUAGES
from xmod_lab.train import train

ROOT = Path(__file__).resolve().parents[1]
PAIRS = ["en-ar", "en-zh", "en-hi", "en-es", "en-vi"]


@pytest.fixture(scope="module")
def mlqa_like(tmp_path_factory) -> tuple[Path, Path]:
    """Five MLQA-style pairs (English contexts) with different examples, and a tokenizer for them."""
    root = tmp_path_factory.mktemp("mlqa")
    texts = []
    for i, pair in enumerate(PAIRS):
        rows = qa_rows("en", 4 + i, seed=i)
        for split in ("validation", "test"):
            write_jsonl(root / pair / f"{split}.jsonl", rows)
        texts += [r["context"] + " " + r["question"] for r in rows]
    write_jsonl(root / "squad" / "train.jsonl", qa_rows("en", 8, seed=9))
    train_tokenizer(texts * 5, 300, root / "tok")
    return root, root / "tok"


def test_five_mlqa_pairs_on_one_adapter_are_five_results_rows(tmp_path, mlqa_like):
    root, tokenizer = mlqa_like
    with no_hydra():
        cfg = compose_run("train", tmp_path / "run", tmp_path / "cache", [
            "experiment=qa_zero_shot", "data=mlqa", "freeze=none", *SHRINK, "train=false", f"data.tokenizer={tokenizer}",
            f"data.source.path='{root}/squad/{{split}}.jsonl'", f"data.eval_source.path='{root}/{{lang}}/{{split}}.jsonl'",
            "data.eval_source.name=null", "data.max_length=64", "data.doc_stride=16", "data.num_workers=0",
            "languages.adapters=[en_XX,ar_AR]", "languages.train=[en-ar]", f"languages.eval=[{','.join(PAIRS)}]",
            "+languages.map={" + ",".join(f"{p}:en_XX" for p in PAIRS) + "}", "trainer.accelerator=cpu",
            "trainer.devices=1", "logger=csv",
        ])
        metrics = train(cfg)
    run_dir = tmp_path / "run"
    results = json.loads((run_dir / "results.json").read_text())
    assert list(results["test"]) == [*PAIRS, "zs_avg", "avg"]  # en-ar is the training language: not zero-shot
    assert results["adapters"] == {pair: "en_XX" for pair in PAIRS} and results["eval_sets"] == PAIRS
    for pair in PAIRS:
        assert set(results["test"][pair]) == {"exact_match", "f1"}
        assert f"test/{pair}/f1" in metrics
    rows = list(csv.reader((run_dir / "results.csv").open()))
    assert rows[0][:2] == ["eval_set", "adapter"] and [r[:2] for r in rows[1:6]] == [[p, "en_XX"] for p in PAIRS]
    f1 = [results["test"][p]["f1"] for p in PAIRS]
    assert results["test"]["avg"]["f1"] == pytest.approx(sum(f1) / 5, abs=1e-3)
    assert results["test"]["zs_avg"]["f1"] == pytest.approx(sum(f1[1:]) / 4, abs=1e-3)


def test_the_datamodule_gets_the_built_models_language_list(tmp_path, monkeypatch):
    """A backbone whose adapter list differs from languages.adapters (one added): the datamodule indexes the
    built model's list, read from the model, not predicted from config."""
    seen = {}
    build_datamodule = runs.build_datamodule

    def spy(cfg, languages):
        seen["languages"] = languages
        return build_datamodule(cfg, languages)

    monkeypatch.setattr(runs, "build_datamodule", spy)
    with no_hydra():
        cfg = compose_run("train", tmp_path / "run", tmp_path / "cache", [
            *SHRINK, "data.n_train=32", "data.n_eval=16", "trainer.max_steps=1", "test=false",
            "languages.adapters=[de_DE,en_XX]", "+languages.add.fr_XX=de_DE", "languages.eval=[en,fr]",
        ])
        train(cfg)
    assert seen["languages"] == ["de_DE", "en_XX", "fr_XX"]


def _published_runs(text: str, min_len: int = 8) -> list[str]:
    """Runs of at least ``min_len`` X-MOD codes in the order of a published list (a copy of one)."""
    codes = re.findall(r"\b[a-z]{2}_[A-Z]{2}\b", text)
    found = []
    for name, published in PUBLISHED_LANGUAGES.items():
        for start in range(len(codes) - min_len + 1):
            window = codes[start:start + min_len]
            if window[0] in published:
                i = published.index(window[0])
                if tuple(window) == published[i:i + min_len]:
                    found.append(f"{name} from {window[0]}")
                    break
    return found


def test_each_published_language_list_has_one_copy():
    home = ROOT / "xmod_lab" / "models" / "configuration.py"
    assert _published_runs(home.read_text())  # the check finds a list where it is
    copies = {}
    for path in [*(ROOT / "xmod_lab").rglob("*.py"), *(ROOT / "xmod_lab").rglob("*.yaml")]:
        if path != home:
            found = _published_runs(path.read_text("utf-8"))
            if found:
                copies[str(path.relative_to(ROOT))] = found
    assert not copies, f"copies of a published language list (keep it in {home.name} only): {copies}"


def test_nothing_predicts_the_backbone_languages_from_config():
    """The adapter list comes from the built model only: no code outside the model builder reads a
    checkpoint's config to guess it, and the data configs take no `languages` from the config."""
    offenders = []
    for path in (ROOT / "xmod_lab").rglob("*.py"):
        text = path.read_text("utf-8")
        if "XmodConfig.from_pretrained" in text and path.name not in ("common.py", "modeling.py", "heads.py",
                                                                        "pretrained.py", "configuration.py"):
            offenders.append(str(path))
        if "backbone_languages" in text:
            offenders.append(str(path))
    for path in (ROOT / "xmod_lab" / "conf" / "data").glob("*.yaml"):
        if re.search(r"(?m)^languages:", path.read_text()):
            offenders.append(str(path))
    assert not offenders


def test_traditional_chinese_mapped_to_zh_cn_is_warned_with_the_fix():
    traditional = "這個國家的人們說，他們會來學習語言。"
    simplified = "这个国家的人们说，他们会来学习语言。"
    assert chinese_script(traditional) == "traditional" and chinese_script(simplified) == "simplified"
    assert chinese_script("Hello world") is None
    warning = script_mismatch(traditional, "zh", "zh_CN", ["en_XX", "zh_CN", "zh_TW"])
    assert "traditional" in warning and "+languages.map={zh:zh_TW}" in warning
    assert "no zh_TW adapter" in script_mismatch(traditional, "zh", "zh_CN", ["en_XX", "zh_CN"])
    assert script_mismatch(simplified, "zh", "zh_CN", ["zh_CN", "zh_TW"]) is None
    assert script_mismatch(traditional, "zh", "zh_TW", ["zh_CN", "zh_TW"]) is None


@pytest.mark.parametrize(("text", "script"), [
    ("然而，這樣的處理也衍生了一些問題。", "traditional"),  # UD Chinese-GSD (Traditional), first sentence
    ("然而，这样的处理也衍生了一些问题。", "simplified"),
    ("香港著名電影從業員、監製黃百鳴", "traditional"),  # PAN-X zh test excerpt (WikiANN)
    ("黑豹队的防守丢了多少分？", "simplified"),  # XQuAD zh excerpt
    ("我們走吧。", "traditional"),
    ("你好", None),  # characters both scripts share: no decision
])
def test_chinese_script_of_short_real_sentences(text, script):
    """hanzidentifier classifies every character (CC-CEDICT): a short sentence decides, where 5 of 45 hand-listed
    marker characters were needed (UD-POS zh scored with zh_CN gave no warning)."""
    assert chinese_script(text) == script


def test_ud_pos_style_traditional_chinese_is_warned_about_at_setup(tmp_path, caplog, monkeypatch):
    """UD-POS's `zh` (UD Chinese-GSD) is Traditional; with the default map (zh -> zh_CN) the datamodule warns
    when it loads it (the shared excerpts hold only de/en UD-POS: rows in its schema here)."""
    from xmod_lab.data.token_classification import TokenClassificationDataModule

    folder = tmp_path / "udpos" / "zh"
    write_jsonl(folder / "test.jsonl", [
        {"tokens": list("這個國家的人們說他們會來學習"), "pos_tags": [7] * 14},
        {"tokens": list("我們從東邊開車過來見面"), "pos_tags": [7] * 11},
    ])
    texts = ["".join(json.loads(line)["tokens"]) for line in (folder / "test.jsonl").read_text("utf-8").splitlines()]
    train_tokenizer([" ".join(t) for t in texts] * 20, 120, tmp_path / "tok")
    dm = TokenClassificationDataModule(
        source={"path": str(folder.parent / "{lang}" / "{split}.jsonl"), "splits": {"train": None, "validation": None}},
        tokenizer=str(tmp_path / "tok"), languages=["en_XX", "zh_CN", "zh_TW"], train_langs=["zh"], eval_langs=["zh"],
        tags_column="pos_tags", label_names=[str(i) for i in range(17)],
    )
    monkeypatch.setattr("xmod_lab.data.common._SCRIPT_WARNED", set())  # warned once per process: not by an earlier test
    with caplog.at_level(logging.WARNING):
        dm.setup("test")
    assert "'zh' is written in traditional Chinese" in caplog.text and "+languages.map={zh:zh_TW}" in caplog.text


def _qa_args(root: Path, tokenizer: Path) -> list[str]:
    return [
        "experiment=qa_zero_shot", "data=mlqa", "pretrain=none", "freeze=none", "model=tiny", "model.config.hidden_size=32",
        "model.config.intermediate_size=64", "model.config.num_attention_heads=2", "train=false",
        "trainer.enable_progress_bar=false", f"data.tokenizer={tokenizer}",
        f"data.source.path='{root}/squad/{{split}}.jsonl'", f"data.eval_source.path='{root}/{{lang}}/{{split}}.jsonl'",
        "data.eval_source.name=null", "data.max_length=64", "data.doc_stride=16", "data.num_workers=0",
        "data.eval_batch_size=3", "languages.adapters=[en_XX]", "languages.train=[en-ar]",
        f"languages.eval=[{','.join(PAIRS)}]", "+languages.map={" + ",".join(f"{p}:en_XX" for p in PAIRS) + "}",
        "logger=csv", "torch_threads=1", "seed=3",
    ]


@pytest.mark.slow
def test_qa_scores_under_two_processes_equal_one_process(tmp_path, mlqa_like):
    """Each rank scores the examples of its shard from its own batches (shards end on example boundaries);
    the cross-rank mean weighted by examples equals the single-process score of every evaluation set."""
    from tests.test_sweep import run_train

    root, tokenizer = mlqa_like
    one = run_train(*_qa_args(root, tokenizer), "trainer=cpu", f"hydra.run.dir={tmp_path / 'one'}")
    assert one.returncode == 0, one.stderr[-3000:]
    two = run_train(*_qa_args(root, tokenizer), "trainer=ddp_cpu", f"hydra.run.dir={tmp_path / 'two'}")
    assert two.returncode == 0, two.stderr[-3000:]
    single = json.loads((tmp_path / "one" / "results.json").read_text())["test"]
    ddp = json.loads((tmp_path / "two" / "results.json").read_text())["test"]
    assert list(ddp) == list(single) == [*PAIRS, "zs_avg", "avg"]
    assert any(row["f1"] > 0 for row in single.values())  # a comparison of zeros would prove nothing
    for name, row in single.items():
        for metric, value in row.items():
            assert ddp[name][metric] == pytest.approx(value, abs=1e-3), (name, metric)
