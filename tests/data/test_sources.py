import datasets
import pandas as pd
import pytest

from tests.data.conftest import nli_rows, write_jsonl
from xmod_lab.data import sources
from xmod_lab.data.sources import SourceSpec, load_split, source_fingerprint

ROWS = nli_rows("de", "train", 5)


@pytest.fixture
def formats(tmp_path):
    """The same rows as JSONL, JSON array, CSV, parquet, a saved Dataset and a saved DatasetDict."""
    df = pd.DataFrame(ROWS)
    write_jsonl(tmp_path / "jsonl" / "de" / "train.jsonl", ROWS)
    (tmp_path / "json" / "de").mkdir(parents=True)
    df.to_json(tmp_path / "json" / "de" / "train.json", orient="records", force_ascii=False)
    (tmp_path / "csv" / "de").mkdir(parents=True)
    df.to_csv(tmp_path / "csv" / "de" / "train.csv", index=False)
    (tmp_path / "parquet" / "de").mkdir(parents=True)
    df.to_parquet(tmp_path / "parquet" / "de" / "train.parquet")
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "saved" / "de" / "train"))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(
        str(tmp_path / "dict" / "de")
    )
    return tmp_path


@pytest.mark.parametrize(
    "template",
    ["jsonl/{lang}/{split}.jsonl", "json/{lang}/{split}.json", "csv/{lang}/{split}.csv", "parquet/{lang}/{split}.parquet",
     "saved/{lang}/{split}", "dict/{lang}", "jsonl/{lang}", "csv/{lang}"],
)  # fmt: skip
def test_every_local_format_gives_the_same_rows(formats, template):
    ds = load_split({"path": str(formats / template)}, "de", "train")
    assert [{k: r[k] for k in ("premise", "hypothesis", "label")} for r in ds] == ROWS


def test_hub_ids_go_to_load_dataset_with_the_language_config(monkeypatch):
    calls = []

    def fake_load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        return datasets.Dataset.from_list(ROWS)

    monkeypatch.setattr(sources.datasets, "load_dataset", fake_load_dataset)
    spec = {"path": "google/xtreme", "name": "PAN-X.{lang}", "splits": {"validation": "dev"}}
    assert len(load_split(spec, "de", "validation")) == 5
    assert len(load_split("facebook/xnli", "de", "test")) == 5
    assert calls == [("google/xtreme", "PAN-X.de", "dev"), ("facebook/xnli", None, "test")]


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope/de/train.jsonl \[language 'de', split 'train'\]"):
        load_split({"path": str(tmp_path / "nope" / "{lang}" / "{split}.jsonl")}, "de", "train")
    (tmp_path / "bad.jsonl").write_text('{"a": 1}\n{"a": 2,\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not valid JSON"):
        load_split({"path": str(tmp_path / "bad.jsonl")}, "de", "train")
    with pytest.raises(ValueError, match="has no 'test' split configured"):
        load_split({"path": str(tmp_path / "bad.jsonl"), "splits": {"test": None}}, "de", "test")
    with pytest.raises(ValueError, match="got keys"):
        SourceSpec.coerce({"paht": "x"})


def test_fingerprint_follows_file_changes(tmp_path):
    path = write_jsonl(tmp_path / "de.jsonl", ROWS)
    spec = {"path": str(tmp_path / "{lang}.jsonl")}
    before = source_fingerprint(spec, "de", "train")
    assert source_fingerprint(spec, "de", "train") == before
    write_jsonl(path, ROWS[:3])
    assert source_fingerprint(spec, "de", "train") != before
