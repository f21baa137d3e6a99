"""Bad data fails at setup, naming the file, the language and the 1-based row or line, never later or silently."""

from __future__ import annotations

import pytest

from tests.data.conftest import MODEL_LANGUAGES, write_jsonl
from xmod_lab.data.question_answering import QuestionAnsweringDataModule
from xmod_lab.data.sentence_pair import SentencePairDataModule
from xmod_lab.data.token_classification import TokenClassificationDataModule

NO_EVAL = {"validation": None, "test": None}


def pair_dm(tmp_path, tokenizer_dir, **kw):
    return SentencePairDataModule(
        source={"path": str(tmp_path / "{lang}.jsonl"), "splits": NO_EVAL}, tokenizer=str(tokenizer_dir),
        languages=MODEL_LANGUAGES, train_langs=["en"], text_columns=["sentence1", "sentence2"],
        label_names=["0", "1"], **kw,
    )  # fmt: skip


def tags_dm(tmp_path, tokenizer_dir):
    return TokenClassificationDataModule(
        source={"path": str(tmp_path / "{lang}.jsonl"), "splits": NO_EVAL}, tokenizer=str(tokenizer_dir),
        languages=MODEL_LANGUAGES, train_langs=["de"],
    )  # fmt: skip


def test_a_missing_text_in_a_later_row_is_an_error_not_the_text_none(tmp_path, tokenizer_dir):
    rows = [{"sentence1": f"Anna {i}", "sentence2": f"Ben {i}", "label": i % 2} for i in range(5)]
    del rows[3]["sentence2"]  # any row but the first: the column exists, the value is null
    write_jsonl(tmp_path / "en.jsonl", rows)
    with pytest.raises(ValueError, match=r"en\.jsonl.*language 'en'.*row 4: no value for 'sentence2'"):
        pair_dm(tmp_path, tokenizer_dir).setup("fit")


def test_panx_row_without_ner_tags_names_the_row(tmp_path, tokenizer_dir):
    write_jsonl(tmp_path / "de.jsonl", [{"tokens": ["Anna"], "ner_tags": [1]}, {"tokens": ["Ben", "ging"]}])
    with pytest.raises(ValueError, match=r"de\.jsonl.*language 'de'.*row 2: no value for 'ner_tags'"):
        tags_dm(tmp_path, tokenizer_dir).setup("fit")


def test_tag_list_mixing_ids_and_names_names_file_and_line(tmp_path, tokenizer_dir):
    write_jsonl(tmp_path / "de.jsonl", [{"tokens": ["Anna"], "ner_tags": [1]},
                                        {"tokens": ["Ben", "Berlin"], "ner_tags": ["B-PER", 5]}])  # fmt: skip
    with pytest.raises(ValueError, match=r"de\.jsonl:2: column 'ner_tags' is a list of number and string.*"
                                         r"language 'de'"):
        tags_dm(tmp_path, tokenizer_dir).setup("fit")
    # ids in one row, names in another: each list is fine, the column is not one type
    write_jsonl(tmp_path / "de.jsonl", [{"tokens": ["Anna"], "ner_tags": [1]}, {"tokens": ["Ben"], "ner_tags": ["B-PER"]}])
    with pytest.raises(ValueError, match=r"de\.jsonl:2: column 'ner_tags' is a list of string, but a list of number"):
        tags_dm(tmp_path, tokenizer_dir).setup("fit")


@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
def test_a_file_that_is_not_utf8_names_file_and_line(tmp_path, tokenizer_dir, suffix):
    lines = ["sentence1,sentence2,label", "Anna,Ben,0", "Zoë,Noël,1"] if suffix == "csv" else [
        '{"sentence1": "Anna", "sentence2": "Ben", "label": 0}', '{"sentence1": "Zoë", "sentence2": "Noël", "label": 1}']
    (tmp_path / f"en.{suffix}").write_bytes("\n".join(lines).encode("latin-1"))
    dm = SentencePairDataModule(
        source={"path": str(tmp_path / f"{{lang}}.{suffix}"), "splits": NO_EVAL}, tokenizer=str(tokenizer_dir),
        languages=MODEL_LANGUAGES, train_langs=["en"], text_columns=["sentence1", "sentence2"], label_names=["0", "1"],
    )  # fmt: skip
    line = 3 if suffix == "csv" else 2
    with pytest.raises(ValueError, match=rf"en\.{suffix}:{line}: not UTF-8 .*iconv.*language 'en'"):
        dm.setup("fit")


def test_qa_evaluation_row_without_answers_fails_at_setup(tmp_path, tokenizer_dir):
    context = "Anna lives in Berlin."
    good = {"id": "q1", "context": context, "question": "Where?", "answers": {"text": ["Berlin"], "answer_start": [14]}}
    write_jsonl(tmp_path / "train" / "en.jsonl", [good])
    write_jsonl(tmp_path / "eval" / "de.jsonl", [good, {"id": "q2", "context": context, "question": "Who?"}])
    dm = QuestionAnsweringDataModule(
        source={"path": str(tmp_path / "train" / "{lang}.jsonl"), "splits": NO_EVAL},
        eval_source={"path": str(tmp_path / "eval" / "{lang}.jsonl"), "splits": {"train": None}},
        tokenizer=str(tokenizer_dir), languages=MODEL_LANGUAGES, train_langs=["en"], eval_langs=["de"],
        max_length=64, doc_stride=16,
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"de\.jsonl.*language 'de', split 'validation'.*row 2: no value for 'answers'"):
        dm.setup("fit")  # before any training step, not after the run's evaluation loop
    write_jsonl(tmp_path / "eval" / "de.jsonl", [good, {**good, "answers": {"text": ["Berlin"]}}])
    with pytest.raises(ValueError, match=r"row 2: 'answers' has \['Berlin'\] as text and None as answer_start"):
        dm.setup("validate")


def pawsx_dm(tmp_path, tokenizer_dir, cache_dir=None):
    return SentencePairDataModule(
        source={"path": str(tmp_path / "{lang}.jsonl"), "splits": NO_EVAL}, tokenizer=str(tokenizer_dir),
        languages=MODEL_LANGUAGES, train_langs=["en"], text_columns=["sentence1", "sentence2"],
        label_names=["0", "1"], cache_dir=cache_dir,
    )  # fmt: skip


@pytest.mark.parametrize(("bad", "message"), [
    (0.7, r"en\.jsonl.*language 'en'.*row 3, field 'label': label 0.7 is a decimal number"),
    # 1.0 among integers: Arrow reads every label as a decimal; the first row is reported
    (1.0, r"en\.jsonl.*language 'en'.*row 1, field 'label': label 0.0 is a decimal number"),
    (True, r"en\.jsonl:3: column 'label' is a bool, but a number in an earlier row"),
])
def test_a_label_that_is_no_integer_of_the_set_is_refused_at_its_row(tmp_path, tokenizer_dir, bad, message):
    """int(0.7) == 0 and int(True) == 1 used to train and score without a word."""
    rows = [{"sentence1": f"Anna {i}", "sentence2": f"Ben {i}", "label": i % 2} for i in range(4)]
    rows[2]["label"] = bad  # one decimal turns Arrow's whole column into decimals: still reported at its row
    write_jsonl(tmp_path / "en.jsonl", rows)
    with pytest.raises(ValueError, match=message):
        pawsx_dm(tmp_path, tokenizer_dir).setup("fit")
    for row in rows:
        row["label"] = bool(row["label"])  # every label a boolean: Arrow keeps them as such
    write_jsonl(tmp_path / "en.jsonl", rows)
    with pytest.raises(ValueError, match=r"row 1, field 'label': label False is a boolean"):
        pawsx_dm(tmp_path, tokenizer_dir).setup("fit")


@pytest.mark.parametrize(("tags", "message"), [
    ([1, 1.5], r"de\.jsonl.*language 'de'.*row 2, field 'ner_tags': label 1.5 is a decimal number"),
    ([1, None], r"de\.jsonl.*language 'de'.*row 2, field 'ner_tags': label None is null"),
    ([True, False], r"de\.jsonl:2: column 'ner_tags' is a list of bool, but a list of number in an earlier row"),
])
def test_a_tag_that_is_no_integer_of_the_set_is_refused_at_its_row(tmp_path, tokenizer_dir, tags, message):
    write_jsonl(tmp_path / "de.jsonl", [{"tokens": ["Anna", "ging"], "ner_tags": [1, 0]},
                                        {"tokens": ["Ben", "Berlin"], "ner_tags": tags}])  # fmt: skip
    with pytest.raises(ValueError, match=message):
        tags_dm(tmp_path, tokenizer_dir).setup("fit")


def test_a_key_missing_from_the_first_row_only_is_reported_at_that_row(tmp_path, tokenizer_dir):
    """from_list takes its columns from the first row: the column used to vanish for the whole file."""
    write_jsonl(tmp_path / "de.jsonl", [{"tokens": ["Anna"]}, {"tokens": ["Ben", "ging"], "ner_tags": [1, 0]}])
    with pytest.raises(ValueError, match=r"de\.jsonl.*language 'de'.*row 1: no value for 'ner_tags'"):
        tags_dm(tmp_path, tokenizer_dir).setup("fit")


def test_a_pair_without_a_label_is_refused_and_unlabeled_rows_are_listed_and_counted(tmp_path, tokenizer_dir):
    from xmod_lab.data.common import skipped_summary

    rows = [{"sentence1": f"Anna {i}", "sentence2": f"Ben {i}", "label": i % 2} for i in range(6)]
    del rows[4]["label"]
    write_jsonl(tmp_path / "en.jsonl", rows)
    with pytest.raises(ValueError, match=r"row 5: no value for 'label'"):
        pawsx_dm(tmp_path, tokenizer_dir).setup("fit")
    rows[4]["label"] = -1
    rows[1]["label"] = -1
    write_jsonl(tmp_path / "en.jsonl", rows)
    for _ in range(2):  # the second read is a tokenized-cache hit: the record travels with it
        dm = pawsx_dm(tmp_path, tokenizer_dir, cache_dir=str(tmp_path / "cache"))
        dm.setup("fit")
        assert sum(len(b["labels"]) for b in dm.train_dataloader()) == 4
        assert skipped_summary(dm) == {"train/en": {"count": 2, "first_rows": [2, 5], "reason": "label -1: unlabeled"}}
