import pytest

from tests.data.conftest import MODEL_LANGUAGES, write_jsonl
from xmod_lab.data.multiple_choice import MultipleChoiceDataModule


def copa_rows(lang, n):
    return [{"premise": f"{lang} Anna {i}", "choice1": f"Ben {i % 9}", "choice2": f"Carla {i % 7} river",
             "question": "cause" if i % 2 else "effect", "label": i % 2} for i in range(n)]  # fmt: skip


@pytest.fixture(scope="module")
def copa_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("copa")
    for lang in ("en", "fr"):
        for split, n in (("train", 10), ("validation", 4), ("test", 4)):
            write_jsonl(root / lang / f"{split}.jsonl", copa_rows(lang, n))
    return root


@pytest.mark.parametrize("batching", ["mixed", "sorted", "homogeneous"])
def test_choices_become_b_c_t(copa_root, tokenizer_dir, batching):
    dm = MultipleChoiceDataModule(
        source={"path": str(copa_root / "{lang}" / "{split}.jsonl")}, tokenizer=str(tokenizer_dir),
        languages=MODEL_LANGUAGES, train_langs=["en", "fr"], eval_langs=["fr"], batch_size=4, batching=batching,
    )  # fmt: skip
    dm.setup("fit")
    tok = dm.tokenizer
    n = 0
    for batch in dm.train_dataloader():
        b, c, t = batch["input_ids"].shape
        assert c == 2 and batch["attention_mask"].shape == (b, c, t) and batch["labels"].shape == (b,)
        for ids, lid in zip(batch["input_ids"], batch["lang_ids"], strict=True):
            text = tok.decode(ids[0], skip_special_tokens=True)
            assert text.startswith({0: "en", 2: "fr"}[lid.item()])
            assert "Ben" in text and "Carla" in tok.decode(ids[1])
        n += b
    assert n == 20
    assert [b["lang_ids"].tolist() for b in dm.val_dataloader()[0]] == [[2, 2, 2, 2]]


def test_choice_list_column_and_bad_label(tmp_path, tokenizer_dir):
    rows = [
        {"ctx": "Anna", "endings": ["a", "b", "c"], "label": 2},
        {"ctx": "Ben", "endings": ["a", "b", "c"], "label": 3},
    ]
    write_jsonl(tmp_path / "en" / "train.jsonl", rows)
    dm = MultipleChoiceDataModule(
        source={"path": str(tmp_path / "{lang}" / "{split}.jsonl"), "splits": {"validation": None, "test": None}},
        tokenizer=str(tokenizer_dir), languages=MODEL_LANGUAGES, train_langs=["en"], context_column="ctx",
        question_column=None, choices_columns=["endings"],
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"row 2, field 'label': label 3 is outside the label set \['0', '1', '2'\]"):
        dm.setup("fit")
