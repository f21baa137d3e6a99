import json

import pytest
import torch

from tests.data.conftest import LANGS, MODEL_LANGUAGES, nli_rows, write_jsonl
from xmod_lab.data import sentence_pair
from xmod_lab.data.sentence_pair import SentencePairDataModule
from xmod_lab.data.tokenizer import load_tokenizer


def make_dm(nli_root, tokenizer_dir, train_only=False, **kw):
    splits = {"validation": None, "test": None} if train_only else {}
    args = dict(
        source={"path": str(nli_root / "{lang}" / "{split}.jsonl"), "splits": splits}, tokenizer=str(tokenizer_dir),
        languages=MODEL_LANGUAGES, train_langs=list(LANGS), eval_langs=["fr", "en"], batch_size=8,
    )  # fmt: skip
    args.update(kw)
    return SentencePairDataModule(**args)


def row_lookup(tokenizer_dir, nli_root, split="train"):
    """input_ids -> (dataset language, label) for every fixture row."""
    tok = load_tokenizer(str(tokenizer_dir))
    table = {}
    for lang in LANGS:
        for row in map(json.loads, (nli_root / lang / f"{split}.jsonl").read_text().splitlines()):
            ids = tok(row["premise"], row["hypothesis"])["input_ids"]
            table[tuple(ids)] = (lang, row["label"])
    return table


@pytest.mark.parametrize("batching", ["mixed", "sorted", "homogeneous"])
def test_batches_carry_the_right_lang_ids_in_every_mode(nli_root, tokenizer_dir, batching):
    dm = make_dm(nli_root, tokenizer_dir, batching=batching)
    dm.setup("fit")
    table = row_lookup(tokenizer_dir, nli_root)
    seen = 0
    for batch in dm.train_dataloader():
        assert set(batch) == {"input_ids", "attention_mask", "lang_ids", "labels"}
        for ids, mask, lid, label in zip(
            batch["input_ids"], batch["attention_mask"], batch["lang_ids"], batch["labels"], strict=True
        ):
            lang, gold = table[tuple(ids[mask.bool()].tolist())]
            assert MODEL_LANGUAGES[lid] == {"en": "en_XX", "de": "de_DE", "fr": "fr_XX"}[lang]
            assert label == gold
            seen += 1
        if batching == "homogeneous":
            assert len(set(batch["lang_ids"].tolist())) == 1
        if batching == "sorted":
            assert batch["lang_ids"].tolist() == sorted(batch["lang_ids"].tolist())
    assert seen == 40 + 30 + 30


def test_one_eval_loader_per_eval_language_in_order(nli_root, tokenizer_dir):
    dm = make_dm(nli_root, tokenizer_dir, eval_batch_size=5)
    dm.setup("validate")
    assert dm.eval_languages == ["fr_XX", "en_XX"] and dm.train_languages == ["en_XX", "de_DE", "fr_XX"]
    loaders = dm.val_dataloader()
    assert len(loaders) == 2
    for loader, lid in zip(loaders, [2, 0], strict=True):
        batches = list(loader)
        assert sum(len(b["labels"]) for b in batches) == 12
        assert all((b["lang_ids"] == lid).all() for b in batches)
    dm.setup("test")
    assert [len(list(dl)) for dl in dm.test_dataloader()] == [3, 3]
    assert dm.num_labels == 3


def test_truncation_to_max_length(nli_root, tokenizer_dir):
    dm = make_dm(nli_root, tokenizer_dir, max_length=6)
    dm.setup("fit")
    assert max(b["input_ids"].shape[1] for b in dm.train_dataloader()) == 6


def test_second_run_reads_the_tokenized_cache(nli_root, tokenizer_dir, tmp_path, monkeypatch):
    dm = make_dm(nli_root, tokenizer_dir, cache_dir=str(tmp_path))
    dm.prepare_data()
    dm.setup("fit")
    first = next(iter(dm.train_dataloader()))

    def boom(*a, **k):
        raise AssertionError("preprocessing ran although the cache was warm")

    monkeypatch.setattr(sentence_pair, "encode_sentence_pairs", boom)
    dm2 = make_dm(nli_root, tokenizer_dir, cache_dir=str(tmp_path))
    dm2.prepare_data()
    dm2.setup("fit")
    assert torch.equal(next(iter(dm2.train_dataloader()))["input_ids"], first["input_ids"])
    # A different max_length is a different cache entry, so preprocessing must run (and here fails).
    with pytest.raises(AssertionError, match="preprocessing ran"):
        make_dm(nli_root, tokenizer_dir, cache_dir=str(tmp_path), max_length=16).setup("fit")


def test_language_without_adapter_is_rejected(nli_root, tokenizer_dir):
    with pytest.raises(ValueError, match=r"eval language\(s\) \['zh_CN'\] have no adapter"):
        make_dm(nli_root, tokenizer_dir, eval_langs=["en", "zh"])


def test_missing_column_names_file_and_language(tmp_path, tokenizer_dir):
    write_jsonl(tmp_path / "en" / "train.jsonl", [{"premise": "a", "hypo": "b", "label": 0}])
    dm = make_dm(tmp_path, tokenizer_dir, train_only=True, train_langs=["en"], eval_langs=["en"])
    with pytest.raises(
        ValueError, match=r"en/train.jsonl.*language 'en'.*missing column\(s\) \['hypothesis'\]"
    ):
        dm.setup("fit")


def test_label_outside_label_set_names_the_row(tmp_path, tokenizer_dir):
    rows = nli_rows("en", "train", 4)
    rows[2]["label"] = 5
    write_jsonl(tmp_path / "en" / "train.jsonl", rows)
    dm = make_dm(tmp_path, tokenizer_dir, train_only=True, train_langs=["en"], eval_langs=["en"])
    with pytest.raises(ValueError, match=r"row 3, field 'label': label 5 is outside the label set"):
        dm.setup("fit")


def test_unlabeled_rows_are_skipped_and_counted(tmp_path, tokenizer_dir, caplog):
    rows = nli_rows("en", "train", 4)
    rows[0]["label"] = -1
    write_jsonl(tmp_path / "en" / "train.jsonl", rows)
    dm = make_dm(tmp_path, tokenizer_dir, train_only=True, train_langs=["en"], eval_langs=["en"])
    dm.setup("fit")
    labels = torch.cat([b["labels"] for b in dm.train_dataloader()])
    assert sorted(labels.tolist()) == [0, 1, 2]
    assert "skipped 1 rows (label -1: unlabeled): rows [1]" in caplog.text


def test_label_names_are_accepted_in_csv(tmp_path, tokenizer_dir):
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "train.csv").write_text(
        "premise,hypothesis,label\nAnna 1,Anna 1,entailment\nAnna 1,Ben 2,neutral\n"
    )
    dm = make_dm(tmp_path, tokenizer_dir, train_only=True, train_langs=["en"], eval_langs=["en"])
    dm.source = dm.source.__class__(path=str(tmp_path / "{lang}" / "{split}.csv"), splits=dm.source.splits)
    dm.setup("fit")
    assert sorted(torch.cat([b["labels"] for b in dm.train_dataloader()]).tolist()) == [0, 1]


def test_empty_language_split_is_an_error(tmp_path, tokenizer_dir):
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "train.jsonl").write_text("")
    dm = make_dm(tmp_path, tokenizer_dir, train_only=True, train_langs=["en"], eval_langs=["en"])
    with pytest.raises(ValueError, match=r"Empty split.*language 'en', split 'train'"):
        dm.setup("fit")


def test_pawsx_schema_via_columns(tmp_path, tokenizer_dir):
    rows = [{"id": i, "sentence1": f"Anna {i}", "sentence2": f"Ben {i}", "label": i % 2} for i in range(6)]
    write_jsonl(tmp_path / "de" / "train.jsonl", rows)
    dm = make_dm(tmp_path, tokenizer_dir, train_only=True, train_langs=["de"], eval_langs=["de"], text_columns=["sentence1", "sentence2"],
                 label_names=["0", "1"])  # fmt: skip
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["lang_ids"].tolist() == [1] * 6 and dm.num_labels == 2


def test_lightning_injected_distributed_sampler_sets_the_rank(nli_root, tokenizer_dir):
    """With use_distributed_sampler=True Lightning re-instantiates our batch samplers with a DistributedSampler;
    they must take its rank/world size and still yield distinct examples per rank."""
    from lightning.fabric.utilities.data import _replace_dunder_methods
    from lightning.pytorch.utilities.data import _update_dataloader
    from torch.utils.data import BatchSampler, DataLoader, DistributedSampler

    dm = make_dm(nli_root, tokenizer_dir, batching="homogeneous")
    dm.setup("fit")
    seen = []
    for rank in (0, 1):
        with _replace_dunder_methods(DataLoader, "dataset"), _replace_dunder_methods(BatchSampler):
            loaders = [dm.train_dataloader(), *dm.val_dataloader()]
        injected = [
            _update_dataloader(dl, DistributedSampler(dl.dataset, num_replicas=2, rank=rank))
            for dl in loaders
        ]
        assert injected[0].batch_sampler.rank == rank and injected[0].batch_sampler.num_replicas == 2
        seen.append([tuple(ids.tolist()) for b in injected[0] for ids in b["input_ids"]])
        assert sum(len(b["labels"]) for b in injected[1]) == 6  # half of fr validation
    assert not set(seen[0]) & set(seen[1])
    assert len(seen[0]) + len(seen[1]) == 100


def test_eval_source_differs_from_train_source(nli_root, tokenizer_dir, tmp_path):
    """MNLI -> XNLI style: train rows from one source, validation/test rows from another."""
    write_jsonl(tmp_path / "en" / "train.jsonl", nli_rows("en", "train", 7))
    dm = make_dm(tmp_path, tokenizer_dir, train_langs=["en"], eval_langs=["de", "fr"],
                 source={"path": str(tmp_path / "{lang}" / "{split}.jsonl"), "splits": {"validation": None, "test": None}},
                 eval_source={"path": str(nli_root / "{lang}" / "{split}.jsonl"), "splits": {"train": None}})  # fmt: skip
    dm.setup("fit")
    assert sum(len(b["labels"]) for b in dm.train_dataloader()) == 7
    assert [sum(len(b["labels"]) for b in dl) for dl in dm.val_dataloader()] == [12, 12]


def test_dataloader_before_setup_or_without_split_is_a_clear_error(nli_root, tokenizer_dir):
    dm = make_dm(nli_root, tokenizer_dir, train_only=True)
    with pytest.raises(RuntimeError, match=r"No 'train' data: call setup\(\)"):
        dm.train_dataloader()
    dm.setup("fit")
    with pytest.raises(RuntimeError, match=r"configure a 'validation' split.*'validation': None"):
        dm.val_dataloader()
