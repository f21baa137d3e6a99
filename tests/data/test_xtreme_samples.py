"""Integration: the datamodules on the real XTREME excerpts (format checks only; scores are meaningless)."""

import json

import pytest

from xmod_lab.data.sentence_pair import SentencePairDataModule
from xmod_lab.data.sources import load_split
from xmod_lab.data.tokenizer import train_tokenizer

XNLI_LANGS = ["ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh"]
XNLI_ADAPTERS = ["en_XX", "ar_AR", "bg_BG", "de_DE", "el_GR", "es_XX", "fr_XX", "hi_IN", "ru_RU", "sw_KE", "th_TH",
                 "tr_TR", "ur_PK", "vi_VN", "zh_CN"]  # fmt: skip


@pytest.fixture(scope="module")
def xnli_tokenizer(xtreme_samples, tmp_path_factory):
    texts = []
    for path in sorted((xtreme_samples / "xnli").rglob("*.jsonl")) + sorted(
        (xtreme_samples / "pawsx").rglob("*.jsonl")
    ):
        for row in map(json.loads, path.read_text("utf-8").splitlines()):
            texts += [v for k, v in row.items() if isinstance(v, str) and k != "id"]
    out = tmp_path_factory.mktemp("xnli_tok")
    train_tokenizer(texts * 2, 1500, out)
    return out


@pytest.mark.parametrize("batching", ["mixed", "sorted", "homogeneous"])
def test_xnli_15_languages(xtreme_samples, xnli_tokenizer, batching):
    dm = SentencePairDataModule(
        source={"path": str(xtreme_samples / "xnli" / "{lang}" / "{split}.jsonl")}, tokenizer=str(xnli_tokenizer),
        languages=XNLI_ADAPTERS, train_langs=XNLI_LANGS, eval_langs=XNLI_LANGS, batch_size=8, batching=batching,
    )  # fmt: skip
    dm.setup("fit")
    lang_ids = [i for b in dm.train_dataloader() for i in b["lang_ids"].tolist()]
    # 4 rows per language, each example once, lang_ids following the adapter order (not the data order)
    assert sorted(lang_ids) == sorted(list(range(15)) * 4)
    assert dm.eval_languages == ["ar_AR", "bg_BG", "de_DE", "el_GR", "en_XX", "es_XX", "fr_XX", "hi_IN", "ru_RU",
                                 "sw_KE", "th_TH", "tr_TR", "ur_PK", "vi_VN", "zh_CN"]  # fmt: skip
    val = [next(iter(dl)) for dl in dm.val_dataloader()]
    assert [b["lang_ids"].item() for b in val] == [XNLI_ADAPTERS.index(c) for c in dm.eval_languages]
    assert all(b["labels"].item() == 1 for b in val)  # the excerpt's validation rows are all "neutral"


def test_pawsx_excerpts(xtreme_samples, xnli_tokenizer):
    dm = SentencePairDataModule(
        source={"path": str(xtreme_samples / "pawsx" / "{lang}" / "{split}.jsonl")}, tokenizer=str(xnli_tokenizer),
        languages=["en_XX", "de_DE"], train_langs=["en", "de"], eval_langs=["de"], text_columns=["sentence1", "sentence2"],
        label_names=["0", "1"], batch_size=3,
    )  # fmt: skip
    dm.setup("fit")
    assert sum(len(b["labels"]) for b in dm.train_dataloader()) == 8
    assert [b["labels"].tolist() for b in dm.val_dataloader()[0]] == [[1, 1, 1], [1]]


def test_tydiqa_lang_column_and_cc100_text(xtreme_samples):
    spec = {"path": str(xtreme_samples / "tydiqa" / "goldp" / "{split}.jsonl"), "lang_column": "lang"}
    assert len(load_split(spec, "fi", "train")) == 2
    with pytest.raises(ValueError, match=r"language 'ar', split 'train'.*keeps none of the 2 rows"):
        load_split(spec, "ar", "train")
    by_id = {
        **spec,
        "lang_column": "id",
    }  # the hub's TyDi rows have no `lang`: the id starts with the language name
    assert [r["lang"] for r in load_split(by_id, "arabic", "validation")] == ["ar"]
    am = load_split({"path": str(xtreme_samples / "cc100" / "{lang}" / "{split}.jsonl")}, "am", "train")
    assert am.column_names == ["id", "text"] and "" in list(am["text"])  # document breaks are kept as rows


def test_tydiqa_id_filter_takes_iso_codes_and_never_empties_a_file_silently(xtreme_samples):
    """data=tydiqa filters by the language that starts each id; an XQuAD-schema file (hash ids) used to end as
    'Empty split', all 153 rows removed without saying why."""
    goldp = {"path": str(xtreme_samples / "tydiqa" / "goldp" / "{split}.jsonl"), "lang_column": "id"}
    assert [r["lang"] for r in load_split(goldp, "ar", "validation")] == ["ar"]  # 'arabic-...' ids, ISO code
    xquad = {"path": str(xtreme_samples / "xquad" / "{lang}" / "{split}.jsonl"), "lang_column": "id"}
    with pytest.raises(ValueError, match=r"lang_column 'id' keeps none of the 153 rows .*lang_column: null"):
        load_split(xquad, "ar", "validation")
    assert len(load_split({**xquad, "lang_column": None}, "ar", "validation")) == 153
