import pytest
import torch

from tests.data.conftest import MODEL_LANGUAGES, write_jsonl
from xmod_lab.data.collate import IGNORE_INDEX
from xmod_lab.data.language_modeling import LanguageModelingDataModule
from xmod_lab.data.tokenizer import train_tokenizer


def make_dm(synthetic_root, tokenizer_dir, **kw):
    args = dict(source={"path": str(synthetic_root / "corpus" / "{lang}.txt")}, tokenizer=str(tokenizer_dir),
                languages=MODEL_LANGUAGES, train_langs=["en", "de", "ru"], eval_langs=["ru", "en"], max_length=32,
                holdout=0.1, batch_size=8)  # fmt: skip
    args.update(kw)
    return LanguageModelingDataModule(**args)


@pytest.mark.parametrize("batching", ["mixed", "sorted", "homogeneous"])
def test_mlm_batches_mask_and_tag_languages(synthetic_root, tokenizer_dir, batching):
    dm = make_dm(synthetic_root, tokenizer_dir, batching=batching)
    dm.setup("fit")
    tok = dm.tokenizer
    vocab_ru = set(tok((synthetic_root / "corpus" / "ru.txt").read_text("utf-8").split()[:200],
                       add_special_tokens=False)["input_ids"][0])  # fmt: skip
    cyrillic = {
        i for i, t in enumerate(tok.convert_ids_to_tokens(range(len(tok)))) if any("а" <= c <= "я" for c in t)
    }
    n_blocks = 0
    for batch in dm.train_dataloader():
        assert set(batch) == {"input_ids", "attention_mask", "lang_ids", "labels"}
        assert batch["input_ids"].shape[1] <= 32
        for ids, labels, lid in zip(batch["input_ids"], batch["labels"], batch["lang_ids"], strict=True):
            original = torch.where(labels != IGNORE_INDEX, labels, ids)
            has_cyrillic = bool(set(original.tolist()) & cyrillic)
            assert has_cyrillic == (MODEL_LANGUAGES[lid] == "ru_RU")  # blocks never mix languages
            assert original[0] == tok.cls_token_id and labels[0] == IGNORE_INDEX
        if batching == "homogeneous":
            assert len(set(batch["lang_ids"].tolist())) == 1
        n_blocks += len(batch["input_ids"])
    assert vocab_ru and n_blocks == sum(b.blocks for b in dm._data["train"])
    labels = torch.cat([b["labels"].flatten() for b in dm.train_dataloader()])
    assert 0.1 < (labels != IGNORE_INDEX).float().mean() < 0.2


def test_holdout_is_disjoint_and_eval_masks_are_stable(synthetic_root, tokenizer_dir):
    dm = make_dm(synthetic_root, tokenizer_dir, pack=False)
    dm.setup("fit")
    train = [tuple(r["input_ids"]) for r in dm._data["train"][2].dataset]  # ru
    val = [tuple(r["input_ids"]) for r in dm._data["validation"][0].dataset]
    tok = dm.tokenizer
    lines = (synthetic_root / "corpus" / "ru.txt").read_text("utf-8").splitlines()
    every = tok(lines, max_length=32, truncation=True)["input_ids"]
    # one block per line (pack=False): the holdout and the rest partition the lines, about 10% held out
    assert sorted(train + val) == sorted(tuple(x) for x in every)
    assert abs(len(val) - 0.1 * len(lines)) < 3 * (0.1 * 0.9 * len(lines)) ** 0.5
    first = [b["input_ids"] for b in dm.val_dataloader()[0]]
    again = [b["input_ids"] for b in dm.val_dataloader()[0]]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert dm.eval_languages == ["ru_RU", "en_XX"]


def test_language_sampling_upsamples_the_small_language(tmp_path, tokenizer_dir):
    for lang, n in (("en", 400), ("de", 40)):
        write_jsonl(
            tmp_path / lang / "train.jsonl",
            [{"id": str(i), "text": f"Anna {i % 9} Ben {lang}"} for i in range(n)],
        )
    src = {"path": str(tmp_path / "{lang}" / "{split}.jsonl"), "splits": {"validation": None, "test": None}}
    counts = {}
    for alpha in (1.0, 0.0):
        dm = make_dm(tmp_path, tokenizer_dir, source=src, train_langs=["en", "de"], eval_langs=["en"], holdout=0.0,
                     pack=False, alpha=alpha, batching="homogeneous")  # fmt: skip
        dm.setup("fit")
        ids = torch.cat([b["lang_ids"] for b in dm.train_dataloader()])
        counts[alpha] = (ids == 1).float().mean().item()
    assert counts[1.0] == pytest.approx(40 / 440, abs=0.03)
    assert counts[0.0] == pytest.approx(0.5, abs=0.06)


def test_clm_labels_follow_inputs(synthetic_root, tokenizer_dir):
    dm = make_dm(synthetic_root, tokenizer_dir, objective="clm")
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    mask = batch["attention_mask"].bool()
    assert torch.equal(batch["labels"][mask], batch["input_ids"][mask])
    assert (batch["labels"][~mask] == IGNORE_INDEX).all()


def test_cc100_excerpts_keep_languages_apart(xtreme_samples, tmp_path):
    texts = []
    for lang in ("am", "ka", "sr"):
        texts += (xtreme_samples / "cc100" / lang / "train.jsonl").read_text("utf-8").splitlines()
    train_tokenizer(texts * 3, 500, tmp_path / "tok")
    dm = LanguageModelingDataModule(
        source={"path": str(xtreme_samples / "cc100" / "{lang}" / "{split}.jsonl")}, tokenizer=str(tmp_path / "tok"),
        languages=["am_ET", "ka_GE", "sr_RS"], train_langs=["am", "ka", "sr"], eval_langs=["ka"], holdout=0.2,
        max_length=64, batch_size=4, alpha=0.3,
    )  # fmt: skip
    dm.setup("fit")
    assert {i for b in dm.train_dataloader() for i in b["lang_ids"].tolist()} == {0, 1, 2}
    assert len(dm.val_dataloader()) == 1
