import json

import pytest

from tests.data.conftest import MODEL_LANGUAGES, write_jsonl
from xmod_lab.data.collate import IGNORE_INDEX
from xmod_lab.data.token_classification import PANX_LABELS, UPOS_LABELS, TokenClassificationDataModule
from xmod_lab.data.tokenizer import train_tokenizer


def make_dm(root, tokenizer_dir, **kw):
    args = dict(source={"path": str(root / "panx" / "{lang}" / "{split}.jsonl")}, tokenizer=str(tokenizer_dir),
                languages=MODEL_LANGUAGES, train_langs=["en", "ru"], eval_langs=["de", "en"], batch_size=8)  # fmt: skip
    args.update(kw)
    return TokenClassificationDataModule(**args)


@pytest.mark.parametrize("batching", ["mixed", "sorted", "homogeneous"])
def test_first_subword_labels_and_lang_ids(synthetic_root, tokenizer_dir, batching):
    dm = make_dm(synthetic_root, tokenizer_dir, batching=batching)
    dm.setup("fit")
    tok = dm.tokenizer
    rows = {lang: [json.loads(x) for x in (synthetic_root / "panx" / lang / "train.jsonl").read_text("utf-8").splitlines()]
            for lang in ("en", "ru")}  # fmt: skip
    by_words = {tuple(tok(r["tokens"], is_split_into_words=True)["input_ids"]): (lang, r)
                for lang, rs in rows.items() for r in rs}  # fmt: skip
    n = 0
    for batch in dm.train_dataloader():
        if batching == "homogeneous":
            assert len(set(batch["lang_ids"].tolist())) == 1
        for ids, mask, labels, lid in zip(
            batch["input_ids"], batch["attention_mask"], batch["labels"], batch["lang_ids"], strict=True
        ):
            lang, row = by_words[tuple(ids[mask.bool()].tolist())]
            assert MODEL_LANGUAGES[lid] == {"en": "en_XX", "ru": "ru_RU"}[lang]
            # one label per word, in order, on its first subword; pads and specials ignored
            assert [x for x in labels.tolist() if x != IGNORE_INDEX] == row["ner_tags"]
            assert labels[0] == IGNORE_INDEX and (labels[~mask.bool()] == IGNORE_INDEX).all()
            n += 1
    assert n == 120


def test_multi_subword_words_label_only_the_first(tmp_path, tokenizer_dir):
    write_jsonl(
        tmp_path / "panx" / "en" / "train.jsonl",
        [{"tokens": ["Anna", "xqzw", "Berlin"], "ner_tags": ["B-PER", "O", "B-LOC"]}],
    )
    dm = make_dm(tmp_path, tokenizer_dir, train_langs=["en"], eval_langs=["en"],
                 source={"path": str(tmp_path / "panx" / "{lang}" / "{split}.jsonl"), "splits": {"validation": None, "test": None}})  # fmt: skip
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    tokens = dm.tokenizer.convert_ids_to_tokens(batch["input_ids"][0])
    labels = batch["labels"][0].tolist()
    assert len(tokens) > 5  # "xqzw" is split into several pieces
    assert [(t, PANX_LABELS[x]) for t, x in zip(tokens, labels, strict=True) if x != IGNORE_INDEX] == [
        ("▁Anna", "B-PER"), (tokens[2], "O"), ("▁Berlin", "B-LOC")]  # fmt: skip


def test_tag_errors_name_the_row(tmp_path, tokenizer_dir):
    src = {"path": str(tmp_path / "{lang}.jsonl"), "splits": {"validation": None, "test": None}}
    write_jsonl(
        tmp_path / "en.jsonl", [{"tokens": ["a"], "ner_tags": [0]}, {"tokens": ["a", "b"], "ner_tags": [0]}]
    )
    with pytest.raises(ValueError, match=r"en.jsonl.*row 2: 2 tokens but 1 tags"):
        make_dm(tmp_path, tokenizer_dir, source=src, train_langs=["en"], eval_langs=["en"]).setup("fit")
    write_jsonl(
        tmp_path / "en.jsonl", [{"tokens": ["a"], "ner_tags": [0]}, {"tokens": ["a"], "ner_tags": [7]}]
    )
    with pytest.raises(ValueError, match=r"row 2, field 'ner_tags': label 7 is outside the label set"):
        make_dm(tmp_path, tokenizer_dir, source=src, train_langs=["en"], eval_langs=["en"]).setup("fit")
    write_jsonl(tmp_path / "en.jsonl", [{"words": ["a"], "ner_tags": [0]}])
    with pytest.raises(ValueError, match=r"missing column\(s\) \['tokens'\]"):
        make_dm(tmp_path, tokenizer_dir, source=src, train_langs=["en"], eval_langs=["en"]).setup("fit")


@pytest.fixture(scope="module")
def samples_tokenizer(xtreme_samples, tmp_path_factory):
    texts = []
    for task in ("panx", "udpos"):
        for path in (xtreme_samples / task).rglob("*.jsonl"):
            texts += [" ".join(json.loads(x)["tokens"]) for x in path.read_text("utf-8").splitlines()]
    out = tmp_path_factory.mktemp("samples_tok")
    train_tokenizer(texts * 3, 800, out)
    return out


def test_panx_excerpts_all_languages(xtreme_samples, samples_tokenizer):
    langs = ["ar", "de", "en", "es", "fr", "hi", "ja", "ru", "sw", "zh"]
    dm = TokenClassificationDataModule(
        source={"path": str(xtreme_samples / "panx" / "{lang}" / "{split}.jsonl")}, tokenizer=str(samples_tokenizer),
        languages=["en_XX", "ar_AR", "de_DE", "es_XX", "fr_XX", "hi_IN", "ja_XX", "ru_RU", "sw_KE", "zh_CN"],
        train_langs=langs, eval_langs=langs, batch_size=4, batching="sorted", max_length=512,
    )  # fmt: skip
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert sorted(i for b in batches for i in b["lang_ids"].tolist()) == list(range(10))
    assert dm.eval_languages[0] == "ar_AR" and len(dm.val_dataloader()) == 10
    # ja/zh are split into characters in WikiANN; every word still gets exactly one label
    zh = [
        json.loads(x)
        for x in (xtreme_samples / "panx" / "zh" / "validation.jsonl").read_text("utf-8").splitlines()
    ][0]
    batch = next(iter(dm.val_dataloader()[-1]))
    assert [x for x in batch["labels"][0].tolist() if x != IGNORE_INDEX] == zh["ner_tags"]


def test_udpos_excerpts(xtreme_samples, samples_tokenizer):
    dm = TokenClassificationDataModule(
        source={"path": str(xtreme_samples / "udpos" / "{lang}" / "{split}.jsonl")}, tokenizer=str(samples_tokenizer),
        languages=["en_XX", "de_DE"], train_langs=["en", "de"], eval_langs=["de"], tags_column="pos_tags",
        label_names=UPOS_LABELS, batching="homogeneous",
    )  # fmt: skip
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert len(batches) == 2 and {b["lang_ids"].item() for b in batches} == {0, 1}
    assert dm.num_labels == 17
