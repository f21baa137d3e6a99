import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from xmod_lab.data.synthetic import (
    ALL_LANGUAGES,
    NAMES,
    NUMBERS,
    PANX_TAGS,
    POSTHOC_LANGUAGES,
    SYNTHETIC_LANGUAGES,
    generate_synthetic,
    hypothesis_only_ceiling,
    make_grammar,
    make_lexicon,
    prepare_synthetic,
    synthetic_info,
    synthetic_mlm,
    synthetic_nli,
)
from xmod_lab.data.tokenizer import load_tokenizer, tokenizer_fingerprint


def read(path):
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def parse_facts(sentence: str, lex) -> list[tuple[str, str, str, bool]]:
    """(name, verb, number, negated) per clause, read from the surface text with the language's lexicon:
    clauses are split at the connective, whatever the language's word order."""
    facts, clause = [], []
    for word in [*sentence.split(), lex["conj"][0]]:
        if word == lex["conj"][0]:
            if clause:
                name = next(w for w in clause if w in NAMES)
                verb = next(w for w in clause if w in lex["verb"])
                number = next(w for w in clause if w in NUMBERS)
                facts.append((name, verb, number, lex["neg"][0] in clause))
            clause = []
        elif word not in lex["filler"]:
            clause.append(word)
    return facts


def rule_label(premise: str, hypothesis: str, lex) -> int:
    """The documented rule, recomputed from the surface text."""
    (hyp,) = parse_facts(hypothesis, lex)
    about = [f for f in parse_facts(premise, lex) if f[0] == hyp[0]]
    if not about:
        return 1
    return 0 if hyp in about else 2


@pytest.mark.parametrize("lang", ["en", "ru", "zh", "rm"])
def test_labels_follow_the_rule_and_are_balanced(synthetic_root, tmp_path, lang):
    if lang in ("en", "ru"):
        root = synthetic_root
    else:
        root = generate_synthetic(tmp_path, (lang,), n_train=90, n_eval=6, n_corpus=20, ner=False)
    lex = make_lexicon(lang)
    rows = read(root / "xnli" / lang / "train.jsonl")
    assert [sum(r["label"] == k for r in rows) for k in range(3)] == [len(rows) // 3] * 3
    for r in rows:
        assert rule_label(r["premise"], r["hypothesis"], lex) == r["label"], r


def test_the_hypothesis_alone_does_not_decide_the_label(tmp_path):
    root = generate_synthetic(tmp_path, ("en",), n_train=1500, n_eval=600, n_corpus=10, ner=False)
    train, test = read(root / "xnli" / "en" / "train.jsonl"), read(root / "xnli" / "en" / "test.jsonl")
    assert hypothesis_only_ceiling(train, test) < 0.40  # chance: 1/3
    lex = make_lexicon("en")
    for label in range(3):  # negation and numbers: the old shortcuts, now spread evenly over the labels
        hyps = [r["hypothesis"].split() for r in train if r["label"] == label]
        assert 0.4 < sum(lex["neg"][0] in h for h in hyps) / len(hyps) < 0.6
    # the measure itself finds a shortcut where there is one: a word that gives the label away
    leaky = [{**r, "hypothesis": f"{r['hypothesis']} cue{r['label']}"} for r in train]
    assert hypothesis_only_ceiling(leaky[:1000], leaky[1000:]) == 1.0
    info = json.loads((root / "languages.json").read_text())
    assert info["en"]["hypothesis_only_ceiling"] < 40.0


def test_languages_share_names_and_numbers_but_not_words_or_grammar(synthetic_root):
    vocab = {}
    for lang in ("en", "de", "ru"):
        vocab[lang] = set((synthetic_root / "corpus" / f"{lang}.txt").read_text("utf-8").split())
    shared = vocab["en"] & vocab["de"] & vocab["ru"]
    assert shared and shared <= set(NAMES) | set(NUMBERS)
    assert any("\u0400" <= ch <= "\u04ff" for w in vocab["ru"] for ch in w)  # Cyrillic script
    orders = {make_grammar(lang).order for lang in SYNTHETIC_LANGUAGES}
    assert make_grammar("en").order == "SVO" and len(orders) >= 3


def test_posthoc_language_borrows_words_but_has_its_own_grammar():
    (new, sources), = POSTHOC_LANGUAGES.items()
    lex = make_lexicon(new)
    borrowed = set().union(*({w for words in make_lexicon(src).values() for w in words} for src in sources))
    assert {w for words in lex.values() for w in words} <= borrowed
    assert new in ALL_LANGUAGES and new not in SYNTHETIC_LANGUAGES


def test_deterministic_by_seed(tmp_path):
    a = generate_synthetic(tmp_path / "a", ("en", "zh"), n_train=30, n_eval=5, n_corpus=20, seed=3)
    b = generate_synthetic(tmp_path / "b", ("en", "zh"), n_train=30, n_eval=5, n_corpus=20, seed=3)
    c = generate_synthetic(tmp_path / "c", ("en", "zh"), n_train=30, n_eval=5, n_corpus=20, seed=4)
    for rel in ("xnli/zh/train.jsonl", "panx/en/test.jsonl", "corpus/zh.txt", "mlm/en/validation.txt"):
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
        assert (a / rel).read_bytes() != (c / rel).read_bytes()


def test_mlm_splits_are_held_out(synthetic_root):
    train = set((synthetic_root / "mlm" / "de" / "train.txt").read_text("utf-8").splitlines())
    test = (synthetic_root / "mlm" / "de" / "test.txt").read_text("utf-8").splitlines()
    assert len(test) >= 50 and (synthetic_root / "corpus" / "de.txt").read_text("utf-8").splitlines() == \
        (synthetic_root / "mlm" / "de" / "train.txt").read_text("utf-8").splitlines()  # fmt: skip
    assert len(set(test) - train) > len(test) // 2  # mostly unseen sentences (short ones can recur)


def test_ner_rows_have_panx_schema(synthetic_root):
    rows = read(synthetic_root / "panx" / "de" / "validation.jsonl")
    for r in rows:
        assert len(r["tokens"]) == len(r["ner_tags"]) == len(r["langs"]) and set(r["langs"]) == {"de"}
        assert r["ner_tags"][0] == PANX_TAGS.index("B-PER") and r["tokens"][0] in NAMES
        for prev, tag in zip(r["ner_tags"], r["ner_tags"][1:], strict=False):
            if PANX_TAGS[tag].startswith("I-"):  # an I- tag continues an entity of the same type
                assert PANX_TAGS[prev][2:] == PANX_TAGS[tag][2:]


SMALL = dict(vocab_size=1000, n_train=30, n_eval=6, n_corpus=60)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepared") / "s"
    return root, prepare_synthetic(root, **SMALL)


def test_prepare_synthetic_covers_every_language_and_trains_a_tokenizer_once(prepared):
    root, folder = prepared
    assert sorted(p.name for p in (folder / "xnli").iterdir()) == sorted(ALL_LANGUAGES)
    tok = load_tokenizer(str(folder / "tokenizer"))
    assert len(tok) <= 1000
    assert tok.tokenize("Anna 7") == ["▁Anna", "▁7"]  # shared tokens stay whole
    stamp = (folder / "synthetic.json").stat().st_mtime_ns
    assert prepare_synthetic(root, **SMALL) == folder
    assert (folder / "synthetic.json").stat().st_mtime_ns == stamp
    assert synthetic_info(folder)["languages_info"]["de"]["hypothesis_only_ceiling"] < 60.0  # 6 rows: noisy


def test_data_and_tokenizer_do_not_depend_on_the_languages_a_run_uses(prepared):
    """A checkpoint evaluated on a subset of its languages must see the tokenizer it was trained with."""
    root, folder = prepared
    adapters = ["en_XX", "de_DE", "fr_XX", "ru_RU", "zh_CN"]
    full = synthetic_nli(str(root), adapters, eval_langs=["en", "de", "fr", "ru", "zh"], **SMALL)
    subset = synthetic_nli(str(root), adapters, eval_langs=["de", "fr"], **SMALL)
    mlm = synthetic_mlm(str(root), adapters, train_langs=["ru"], **SMALL)
    assert tokenizer_fingerprint(full.tokenizer) == tokenizer_fingerprint(subset.tokenizer) == \
        tokenizer_fingerprint(mlm.tokenizer)  # fmt: skip
    assert [p.name for p in root.iterdir() if not p.name.startswith(".")] == [folder.name]
    assert subset.shortcut_ceiling.keys() == {"de", "fr"}  # keyed by evaluation set


def test_unknown_language_is_a_clear_error(prepared):
    root, _ = prepared
    with pytest.raises(ValueError, match=r"\['sw'\] are not synthetic languages"):
        synthetic_nli(str(root), ["en_XX", "sw_KE"], eval_langs=["en", "sw"], **SMALL)


def test_prepare_synthetic_keeps_one_folder_per_setting(prepared):
    """A run with other data settings must not replace the folder a concurrent run is reading."""
    root, first = prepared
    tokenizer_file = next((first / "tokenizer").iterdir())
    other = prepare_synthetic(root, **{**SMALL, "n_train": 33})
    assert other != first and other.parent == first.parent
    assert len(read(other / "xnli" / "en" / "train.jsonl")) == 33
    assert len(read(first / "xnli" / "en" / "train.jsonl")) == 30 and tokenizer_file.is_file()
    assert sorted(p.name for p in root.iterdir()) == sorted([first.name, other.name])  # no temp dirs


def test_prepare_synthetic_concurrent_builders_of_one_setting_agree(tmp_path):
    args = dict(vocab_size=1000, n_train=9, n_eval=3, n_corpus=20)
    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(lambda _: prepare_synthetic(tmp_path / "s", **args), range(2))
    assert a == b and (a / "synthetic.json").is_file() and (a / "tokenizer").is_dir()
    assert [p.name for p in (tmp_path / "s").iterdir()] == [a.name]  # the loser's temp dir is gone
