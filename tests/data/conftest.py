"""Generated fixtures in each schema (no network): small files plus a tokenizer trained on their text."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from xmod_lab.data.synthetic import NAMES, generate_synthetic
from xmod_lab.data.tokenizer import train_tokenizer

LANGS = ("en", "de", "fr")
MODEL_LANGUAGES = ["en_XX", "de_DE", "fr_XX", "ru_RU"]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def nli_rows(lang: str, split: str, n: int) -> list[dict]:
    # Every premise names its language and row, so a test can tell which example landed where.
    return [
        {"premise": f"{lang} {split} {i} {NAMES[i % len(NAMES)]}", "hypothesis": f"{NAMES[(i * 7) % len(NAMES)]} {i % 9}",
         "label": i % 3}
        for i in range(n)
    ]  # fmt: skip


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic(
        tmp_path_factory.mktemp("synthetic"), ("en", "de", "fr", "ru"), n_train=60, n_eval=20, n_corpus=300
    )


@pytest.fixture(scope="session")
def nli_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """XNLI-schema JSONL for three languages with 30/12/12 rows, uneven on purpose (en has 40 train rows)."""
    root = tmp_path_factory.mktemp("nli")
    for lang in LANGS:
        for split, n in (("train", 40 if lang == "en" else 30), ("validation", 12), ("test", 12)):
            write_jsonl(root / lang / f"{split}.jsonl", nli_rows(lang, split, n))
    return root


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory, synthetic_root: Path) -> Path:
    """A small XLM-R-format tokenizer knowing the synthetic words and the fixture words."""
    texts = []
    for lang in ("en", "de", "fr", "ru"):
        texts += (synthetic_root / "corpus" / f"{lang}.txt").read_text("utf-8").splitlines()
    rng = random.Random(0)
    extra = "the a of and who what where when Paris Berlin Rhine river city built founded population in is was".split()
    texts += [" ".join(rng.choice(extra) for _ in range(10)) for _ in range(300)]
    texts += [
        f"{lang} {split} {i}"
        for lang in LANGS
        for split in ("train", "validation", "test")
        for i in range(50)
    ]
    words = sorted({w for t in texts for w in t.split()})
    out = tmp_path_factory.mktemp("tok") / "tokenizer"
    train_tokenizer(texts + words, 600, out)
    return out
