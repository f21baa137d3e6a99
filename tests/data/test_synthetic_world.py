"""The world settings of the synthetic languages: off, they leave the default experiment's data byte for byte;
on, each does what its data config comment says."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from omegaconf import open_dict

from tests.tasks.run_helpers import compose_run, no_hydra
from xmod_lab import pretraining
from xmod_lab.data.synthetic import (
    ALL_LANGUAGES,
    SYNTHETIC_LANGUAGES,
    generate_synthetic,
    make_grammar,
    make_language,
    make_lexicon,
    prepare_synthetic,
    synthetic_info,
)
from xmod_lab.data.synthetic_world import (
    FACT_KEYS,
    NAMES,
    NUMBERS,
    ORDERS,
    WORLD_DEFAULTS,
    WorldSettings,
    fact_table,
    loan_slots,
)

SMALL = dict(n_train=30, n_eval=6, n_corpus=60)
# Digests (digest() below) of every file main's generator wrote for SMALL, seed 0, all languages: computed by
# running generate_synthetic / prepare_synthetic from `git archive 66edbc6` (before the world settings existed).
MAIN_GENERATED = "3a494cc3858c2d1c5b478da5ba11e7e256bab4d78ba8c164f0409303fd7c704b"
MAIN_FOLDER, MAIN_PREPARED = "52e931dae08b", "e1a8da02a4e2be209e4da5c9c685cd32df517e74abdbf8ee306e38a34c8c48be"


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h.update(str(path.relative_to(folder)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def test_default_settings_write_the_files_main_wrote(tmp_path):
    """The default experiment (and its cached pre-training) depends on these bytes: data, tokenizer, folder."""
    assert digest(generate_synthetic(tmp_path / "g", ALL_LANGUAGES, seed=0, **SMALL)) == MAIN_GENERATED
    folder = prepare_synthetic(tmp_path / "p", vocab_size=1000, **SMALL)
    assert folder.name == MAIN_FOLDER and digest(folder) == MAIN_PREPARED
    assert prepare_synthetic(tmp_path / "p", vocab_size=1000, world=WorldSettings(), **SMALL) == folder
    assert "world" not in synthetic_info(folder)
    other = prepare_synthetic(tmp_path / "p", vocab_size=1000, world=WorldSettings(private_facts=4), **SMALL)
    assert other != folder and synthetic_info(other)["world"]["private_facts"] == 4


def test_off_world_settings_stay_out_of_the_pretraining_cache_key(tmp_path):
    """Adding the fields to the data config must not orphan the pre-trained backbones cached before them."""
    def key(*overrides):
        with no_hydra():
            cfg = compose_run("train", tmp_path / "run", tmp_path / "cache", ["pretrain=synthetic_mlm", *overrides])
        return pretraining.pretraining_config(cfg)

    pre = key()
    assert {k: pre.data[k] for k in WORLD_DEFAULTS} == WORLD_DEFAULTS  # the run's (off) settings reach it
    stripped = pre.copy()
    with open_dict(stripped):
        for k in WORLD_DEFAULTS:
            del stripped.data[k]
    assert pretraining.cache_key(pre) == pretraining.cache_key(stripped)
    on = key("data.private_facts=8")
    assert on.data.private_facts == 8 and pretraining.cache_key(on) != pretraining.cache_key(pre)


def test_fact_tables_share_some_entries_and_keep_the_rest_per_language():
    world = WorldSettings(shared_facts=40, private_facts=120)
    tables = {lang: fact_table(world, lang) for lang in ("en", "de", "ru", "rm")}
    for table in tables.values():
        assert len(table) == 160 and len({(f.name, f.verb, f.obj) for f in table}) == 160
        assert {(f.name, f.verb, f.obj) for f in table} <= set(FACT_KEYS) and not any(f.negated for f in table)
    assert len({tuple(t[:40]) for t in tables.values()}) == 1  # the shared entries: identical everywhere
    for lang in ("de", "ru", "rm"):
        own, english = tables[lang][40:], tables["en"][40:]
        assert [(f.name, f.verb, f.obj) for f in own] == [(f.name, f.verb, f.obj) for f in english]
        agree = sum(a.number == b.number for a, b in zip(own, english, strict=True))
        assert agree < 120 * 0.25, (lang, agree)  # another number for most (a ninth agree by chance)
    assert fact_table(WorldSettings(), "en") == []


def test_the_text_states_only_facts_true_in_its_language(tmp_path):
    world = WorldSettings(shared_facts=6, private_facts=10)
    root = generate_synthetic(tmp_path, ("en", "fa"), n_train=3, n_eval=3, n_corpus=200, ner=False, world=world)
    for lang in ("en", "fa"):
        language = make_language(lang, world=world)
        lex = language.lexicon
        truth = {(f.name, f.verb, f.obj): f.number for f in fact_table(world, lang)}
        seen, negated = set(), 0
        for line in (root / "mlm" / lang / "train.txt").read_text("utf-8").splitlines():
            words = [w for w in line.split() if w not in lex["filler"]]
            clauses, clause = [], []
            for w in [*words, lex["conj"][0]]:
                if w == lex["conj"][0]:
                    clauses.append(clause)
                    clause = []
                else:
                    clause.append(w)
            for c in clauses:
                name = next(w for w in c if w in NAMES)
                verb = next(i for i, w in enumerate(lex["verb"]) if w in c)
                obj = next(i for i, w in enumerate(lex["object"]) if w in c)
                number = next(w for w in c if w in NUMBERS)
                assert (name, verb, obj) in truth, (lang, c)
                if lex["neg"][0] in c:  # "Anna does not eat 3 X" is true when Anna eats another number
                    negated += 1
                    assert number != truth[name, verb, obj]
                else:
                    assert number == truth[name, verb, obj]
                seen.add((name, verb, obj))
        assert len(seen) == 16 and negated > 0  # every entry is stated; negation still occurs


@pytest.mark.parametrize("overlap", [0.0, 0.3, 1.0])
def test_vocabulary_overlap_is_the_configured_share_of_word_slots(overlap):
    world = WorldSettings(vocab_overlap=overlap)
    english = make_lexicon("en", world=world)
    slots = [(kind, i) for kind, words in english.items() for i in range(len(words))]
    assert len(slots) == 48 and len(loan_slots(world)) == round(overlap * 48)
    for lang in ("de", "nl", "ru", "zh", "rm"):
        lex = make_lexicon(lang, world=world)
        same = {(kind, i) for kind, i in slots if lex[kind][i] == english[kind][i]}
        assert same == loan_slots(world), lang  # exactly the loan slots, in every script
        words = [w for ws in lex.values() for w in ws]
        if lang != "rm":  # a post-hoc language may borrow one word from two sources
            assert len(set(words)) == len(words), lang  # an own word never collides with a loan
    assert make_lexicon("de", world=WorldSettings()) == make_lexicon("de")
    assert WorldSettings(vocab_overlap=1).as_dict() == WorldSettings(vocab_overlap=1.0).as_dict()  # one folder


def test_word_order_variety_is_the_configured_set():
    for orders in (("SOV",), ("VSO", "OSV")):
        drawn = {make_grammar(lang, orders=orders).order for lang in SYNTHETIC_LANGUAGES[1:]}
        assert drawn <= set(orders) and (len(drawn) == len(orders))
    assert make_grammar("en", orders=("SOV",)).order == "SVO"  # the probe keeps its order
    assert {make_grammar(lang).order for lang in SYNTHETIC_LANGUAGES} <= set(ORDERS)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"private_facts": -1}, r"data.private_facts=-1: a number of fact-table entries"),
    ({"shared_facts": 300, "private_facts": 100}, r"= 400: the fact table has 384 entries"),
    ({"vocab_overlap": 1.5}, r"data.vocab_overlap=1.5: a fraction in \[0, 1\]"),
    ({"orders": ("SVO", "XYZ")}, r"unknown: \['XYZ'\]"),
    ({"orders": ()}, r"a non-empty list"),
])  # fmt: skip
def test_bad_world_settings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WorldSettings(**kwargs)


def test_the_paper_presets_share_one_world(tmp_path):
    """Pre-training, fine-tuning and post-hoc runs must generate the same folder and tokenizer, and the
    study's world has knowledge of each language's own to store."""
    keys = ("vocab_size", "n_train", "n_eval", "n_corpus", "seed", *WORLD_DEFAULTS)
    worlds = []
    for preset in ("paper_mlm", "paper_nli", "paper_posthoc_modular", "paper_posthoc_shared"):
        with no_hydra():
            cfg = compose_run("train", tmp_path / preset, tmp_path / "cache", [f"experiment={preset}",
                                                                               "model.pretrained=x"])
        worlds.append({k: cfg.data[k] for k in keys})
    assert all(w == worlds[0] for w in worlds) and worlds[0]["private_facts"] > 0
