import json
from concurrent.futures import ThreadPoolExecutor

from xmod_lab.data.synthetic import (
    NAMES,
    NUMBERS,
    PANX_TAGS,
    generate_synthetic,
    make_lexicon,
    prepare_synthetic,
)
from xmod_lab.data.tokenizer import load_tokenizer


def read(path):
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def rule_label(premise: str, hypothesis: str, lex) -> int:
    """The generator's documented rule, recomputed from the surface text."""
    words, hyp = premise.split(), hypothesis.split()
    facts = {w: words[i + 2] for i, w in enumerate(words) if w in NAMES}  # name -> number (VERB sits between)
    name = hyp[0]
    if name not in facts:
        return 1
    negated = hyp[1] == lex["neg"][0]
    number = hyp[3] if negated else hyp[2]
    return 0 if number == facts[name] and not negated else 2


def test_labels_follow_the_rule_and_are_balanced(synthetic_root):
    for lang in ("en", "ru"):
        lex = make_lexicon(lang)
        rows = read(synthetic_root / "xnli" / lang / "train.jsonl")
        assert len(rows) == 60
        assert [sum(r["label"] == k for r in rows) for k in range(3)] == [20, 20, 20]
        for r in rows:
            assert rule_label(r["premise"], r["hypothesis"], lex) == r["label"]


def test_languages_share_names_and_numbers_but_not_words(synthetic_root):
    vocab = {}
    for lang in ("en", "de", "ru"):
        text = (synthetic_root / "corpus" / f"{lang}.txt").read_text("utf-8").split()
        vocab[lang] = set(text)
    shared = vocab["en"] & vocab["de"] & vocab["ru"]
    assert shared and shared <= set(NAMES) | set(NUMBERS)
    assert any("\u0400" <= ch <= "\u04ff" for w in vocab["ru"] for ch in w)  # Cyrillic script


def test_deterministic_by_seed(tmp_path):
    a = generate_synthetic(tmp_path / "a", ("en", "zh"), n_train=30, n_eval=5, n_corpus=20, seed=3)
    b = generate_synthetic(tmp_path / "b", ("en", "zh"), n_train=30, n_eval=5, n_corpus=20, seed=3)
    c = generate_synthetic(tmp_path / "c", ("en", "zh"), n_train=30, n_eval=5, n_corpus=20, seed=4)
    for rel in ("xnli/zh/train.jsonl", "panx/en/test.jsonl", "corpus/zh.txt"):
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
        assert (a / rel).read_bytes() != (c / rel).read_bytes()


def test_ner_rows_have_panx_schema(synthetic_root):
    rows = read(synthetic_root / "panx" / "de" / "validation.jsonl")
    for r in rows:
        assert len(r["tokens"]) == len(r["ner_tags"]) == len(r["langs"]) and set(r["langs"]) == {"de"}
        assert r["ner_tags"][0] == PANX_TAGS.index("B-PER") and r["tokens"][0] in NAMES
        for prev, tag in zip(r["ner_tags"], r["ner_tags"][1:], strict=False):
            if PANX_TAGS[tag].startswith("I-"):  # an I- tag continues an entity of the same type
                assert PANX_TAGS[prev][2:] == PANX_TAGS[tag][2:]


def test_prepare_synthetic_trains_a_tokenizer_once(tmp_path):
    root = prepare_synthetic(tmp_path / "s", ("en", "de"), vocab_size=400, n_train=30, n_eval=6)
    tok = load_tokenizer(str(root / "tokenizer"))
    assert len(tok) <= 400
    assert tok.tokenize("Anna 7") == ["▁Anna", "▁7"]  # shared tokens stay whole
    stamp = (root / "synthetic.json").stat().st_mtime_ns
    assert prepare_synthetic(tmp_path / "s", ("en", "de"), vocab_size=400, n_train=30, n_eval=6) == root
    assert (root / "synthetic.json").stat().st_mtime_ns == stamp


def test_prepare_synthetic_keeps_one_folder_per_setting(tmp_path):
    """A run with other data settings must not replace the folder a concurrent run is reading."""
    first = prepare_synthetic(tmp_path / "s", ("en",), vocab_size=300, n_train=30, n_eval=6, n_corpus=200)
    tokenizer_file = next((first / "tokenizer").iterdir())
    other = prepare_synthetic(tmp_path / "s", ("en",), vocab_size=300, n_train=31, n_eval=6, n_corpus=200)
    assert other != first and other.parent == first.parent
    assert len(read(other / "xnli" / "en" / "train.jsonl")) == 31
    assert len(read(first / "xnli" / "en" / "train.jsonl")) == 30 and tokenizer_file.is_file()
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == sorted([first.name, other.name])  # no temp dirs


def test_prepare_synthetic_concurrent_builders_of_one_setting_agree(tmp_path):
    args = dict(languages=("de",), vocab_size=300, n_train=20, n_eval=4, n_corpus=200)
    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(lambda _: prepare_synthetic(tmp_path / "s", **args), range(2))
    assert a == b and (a / "synthetic.json").is_file() and (a / "tokenizer").is_dir()
    assert [p.name for p in (tmp_path / "s").iterdir()] == [a.name]  # the loser's temp dir is gone
