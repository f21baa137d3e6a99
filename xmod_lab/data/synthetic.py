"""Synthetic languages for the default experiment and the paper study: no network, no shipped corpora.

Every language renders the same latent world with its own words and its own grammar. A clause states a
fact ``(NAME, VERB, NUMBER, OBJECT)``, possibly negated. Names (``Anna``) and numbers (``7``) are shared
by all languages (the anchors that let transfer happen); verbs, objects, negation, connectives and fillers
are pseudo-words in the language's script (Latin, Cyrillic, CJK, Arabic, Devanagari), and each language
orders subject, verb and object its own way (SVO, SOV, VSO, ...) and puts negation in its own place. The
world is shared: each verb takes the same 4 of the 16 objects in every language, so a model that learns it
once can reuse it everywhere, while the grammars compete for capacity in a shared model. How much the
languages share and how much each must store alone (fact tables, vocabulary overlap, word-order variety)
are the world settings of :mod:`xmod_lab.data.synthetic_world` (the default experiment shares a quarter of the
word slots: ``conf/data/synthetic_nli.yaml``).

NLI (XNLI-style) label, a rule over the facts:

* entailment: the premise states the hypothesis' fact, same number, same polarity;
* contradiction: it states that person's fact with the polarity flipped or another number;
* neutral: the premise does not mention the hypothesis' person.

The hypothesis is drawn first, from one distribution for every label, and the premise is built around it
(one or two clauses whatever the label), so neither sentence alone tells the label: the hypothesis-only
ceiling is chance (``hypothesis_only_ceiling`` measures it on the generated data). Deciding needs matching
the name across the pair and comparing number and polarity.

Post-hoc languages (:data:`POSTHOC_LANGUAGES`) are not in the pre-training set: their words are borrowed
from related pre-trained languages (as Romansh shares with German, French and Italian) and their grammar
is their own, so a new adapter on a frozen body can learn them.

Files (XNLI / PAN-X schema, so the ordinary datamodules read them)::

    <root>/xnli/<lang>/{train,validation,test}.jsonl   premise, hypothesis, label (0/1/2)
    <root>/panx/<lang>/{train,validation,test}.jsonl   tokens, ner_tags (PAN-X tag ids), langs
    <root>/mlm/<lang>/{train,validation,test}.txt      one sentence per line (masked-LM pre-training)
    <root>/corpus/<lang>.txt                           the MLM train text again (tokenizer, single-file readers)
    <root>/tokenizer/                                  an XLM-R-format tokenizer trained on every language
    <root>/synthetic.json                              the generation settings (written last)

where ``<root>`` is ``root/<hash>``: one folder per set of *generation* settings, always for every language
of :data:`ALL_LANGUAGES`, so which languages a run trains or evaluates never changes data or tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xmod_lab.data.language_modeling import LanguageModelingDataModule
from xmod_lab.data.languages import to_xmod_language
from xmod_lab.data.sentence_pair import XNLI_LABELS, SentencePairDataModule
from xmod_lab.data.synthetic_world import (
    CONTENT_WORDS,
    FUNCTION_WORDS,
    N_OBJECTS,
    N_VERBS,
    NAMES,
    NEGATED_SHARE,
    NUMBERS,
    ORDERS,
    SURNAMES,
    Fact,
    WorldSettings,
    fact_table,
    loan_slots,
    random_fact,
    table_clause,
)
from xmod_lab.data.tokenizer import train_tokenizer

# Pre-training languages, in the order the paper study adds them (K = 1, 2, 4, 8, 16 takes a prefix):
# the first 5 are the default experiment's.
SYNTHETIC_LANGUAGES = ("en", "de", "fr", "ru", "zh", "it", "es", "ar", "hi", "nl", "pt", "bg", "fa", "sv",
                       "ja", "pl")  # fmt: skip
# Added after pre-training: code -> the languages its words come from.
POSTHOC_LANGUAGES: dict[str, tuple[str, ...]] = {"rm": ("de", "fr", "it")}
ALL_LANGUAGES = SYNTHETIC_LANGUAGES + tuple(POSTHOC_LANGUAGES)
# Dataset code -> X-MOD adapter code for languages outside xmod_lab.data.DEFAULT_LANGUAGE_MAP.
SYNTHETIC_LANGUAGE_MAP = {"rm": "rm_CH"}

PANX_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")
# Where negation goes (the constituent orders: xmod_lab.data.synthetic_world.ORDERS).
NEGATION_PLACES = ("before_verb", "after_verb", "clause_end")

_SCRIPTS = {
    "latin": ("bdfgklmnprstvz", "aeiou"),
    "cyrillic": ("бвгдзклмнпрстф", "аеиоуыя"),
    "arabic": ("بتدرزسفقكلمنه", "اوي"),
    "devanagari": ("कगचजतदनपबमरलसह", "ािीुेो"),
}
_SCRIPT_OF = {"ru": "cyrillic", "bg": "cyrillic", "uk": "cyrillic", "ar": "arabic", "fa": "arabic", "ur": "arabic",
              "hi": "devanagari", "mr": "devanagari", "ne": "devanagari", "zh": "cjk", "ja": "cjk"}  # fmt: skip


def _word(rng: random.Random, script: str, syllables: int) -> str:
    if script == "cjk":
        return "".join(chr(rng.randrange(0x4E00, 0x4E00 + 2000)) for _ in range(syllables))
    consonants, vowels = _SCRIPTS[script]
    return "".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(syllables))


def make_lexicon(lang: str, seed: int = 0, world: WorldSettings | None = None) -> dict[str, list[str]]:
    """Deterministic pseudo-words of one language for every language-specific concept (all distinct).

    A post-hoc language borrows each word from one of its source languages. With ``world.vocab_overlap``,
    the loan slots (:func:`~xmod_lab.data.synthetic_world.loan_slots`) hold English's words in every
    language."""
    if lang in POSTHOC_LANGUAGES:
        rng = random.Random(f"{seed}:{lang}:borrow")
        sources = [make_lexicon(src, seed, world) for src in POSTHOC_LANGUAGES[lang]]
        return {kind: [rng.choice(sources)[kind][i] for i in range(len(words))] for kind, words in sources[0].items()}
    rng = random.Random(f"{seed}:{lang}")
    script = _SCRIPT_OF.get(lang, "latin")
    used: set[str] = set()

    def fresh(syllables: int) -> str:
        while True:
            w = _word(rng, script, syllables)
            if w not in used:
                used.add(w)
                return w

    lex = {kind: [fresh(rng.choice((2, 3))) for _ in range(n)] for kind, n in CONTENT_WORDS.items()}
    lex.update({kind: [fresh(1)] for kind in FUNCTION_WORDS})
    if world is not None and world.vocab_overlap > 0 and lang != "en":
        english, slots = make_lexicon("en", seed), loan_slots(world, seed)
        loans = {english[kind][i] for kind, i in slots}
        used |= loans
        for kind, words in lex.items():
            for i, word in enumerate(words):
                if (kind, i) in slots:
                    words[i] = english[kind][i]
                elif word in loans:  # an own word that a Latin-script language drew the same as a loan
                    words[i] = fresh(2)
    return lex


@dataclass(frozen=True)
class Grammar:
    order: str  # e.g. "SOV"
    negation: str  # one of NEGATION_PLACES


def make_grammar(lang: str, seed: int = 0, orders: Sequence[str] | None = None) -> Grammar:
    """English is SVO with negation before the verb; every other language draws its own, its order among
    ``orders`` (default: all of ORDERS)."""
    if lang == "en":
        return Grammar("SVO", "before_verb")
    rng = random.Random(f"{seed}:{lang}:grammar")
    return Grammar(rng.choice(tuple(orders) if orders else ORDERS), rng.choice(NEGATION_PLACES))


@dataclass(frozen=True)
class Language:
    code: str
    lexicon: Mapping[str, list[str]]
    grammar: Grammar

    def clause(self, fact: Fact) -> list[str]:
        lex, neg = self.lexicon, self.lexicon["neg"] if fact.negated else []
        verb = [lex["verb"][fact.verb]]
        if self.grammar.negation == "before_verb":
            verb = neg + verb
        elif self.grammar.negation == "after_verb":
            verb = verb + neg
        parts = {"S": [fact.name], "V": verb, "O": [fact.number, lex["object"][fact.obj]]}
        words = [w for slot in self.grammar.order for w in parts[slot]]
        return words + neg if self.grammar.negation == "clause_end" else words

    def sentence(self, facts: Sequence[Fact]) -> list[str]:
        words: list[str] = []
        for i, fact in enumerate(facts):
            words += (self.lexicon["conj"] if i else []) + self.clause(fact)
        return words


def make_language(lang: str, seed: int = 0, world: WorldSettings | None = None) -> Language:
    return Language(lang, make_lexicon(lang, seed, world), make_grammar(lang, seed, world.orders if world else None))


def fact_clauses(tokenizer: Any, lang: str, seed: int, world: WorldSettings) -> tuple[list[str], list[int]]:
    """The cloze test of a language's fact table (the fact probe of ``make paper``): every entry of
    :func:`~xmod_lab.data.synthetic_world.fact_table` (shared entries first) as a clause alone, not negated, with
    its number replaced by the tokenizer's mask token, and each number's token id. A number that is not one
    token of its own is refused: the probe would score a piece of it."""
    if not world.has_facts:
        raise ValueError("the world has no fact table (data.shared_facts = data.private_facts = 0): nothing to probe; "
                         "use the paper world (`- /world@data: paper`)")  # fmt: skip
    language = make_language(lang, seed, world)
    texts, targets = [], []
    for fact in fact_table(world, lang, seed):
        words = language.clause(fact)
        with_number = tokenizer(" ".join(words))["input_ids"]
        words[words.index(fact.number)] = tokenizer.mask_token
        masked = tokenizer(" ".join(words))["input_ids"]
        differ = [i for i, (a, b) in enumerate(zip(with_number, masked, strict=False)) if a != b]
        if len(with_number) != len(masked) or len(differ) != 1 or masked[differ[0]] != tokenizer.mask_token_id:
            raise ValueError(f"the number {fact.number!r} of the {lang} clause {' '.join(language.clause(fact))!r} is "
                             "not one token of the tokenizer: the fact probe needs single-token numbers")  # fmt: skip
        texts.append(" ".join(words))
        targets.append(with_number[differ[0]])
    return texts, targets


def indistinguishable_facts(lang: str, others: Sequence[str], seed: int, world: WorldSettings) -> tuple[int, float]:
    """How much of ``lang``'s own fact table a model without language-specific parameters cannot tell from
    ``others``': how many of its private entries read, as the fact probe's clause with the number masked,
    exactly as the same entry of another language (the same order, and loanwords of ``vocab_overlap`` for the
    verb and object), and the fact probe's loss (own entries) of a model that fits every language's text
    equally on those clauses: it predicts the numbers of the languages that read alike, each as often (every
    table entry is stated equally often), and is exact on the rest. A shared model's shortfall up to that
    loss is ambiguity; beyond it, competition for capacity."""
    if not world.has_facts:
        raise ValueError("the world has no fact table (data.shared_facts = data.private_facts = 0)")
    def masked(language: Language, fact: Fact) -> list[str]:
        return language.clause(Fact(fact.name, fact.verb, "?", fact.obj, False))

    language, own = make_language(lang, seed, world), fact_table(world, lang, seed)[world.shared_facts :]
    tables = {other: (make_language(other, seed, world), fact_table(world, other, seed)[world.shared_facts :])
              for other in others if other != lang}  # fmt: skip
    alike, loss = 0, 0.0
    for i, fact in enumerate(own):
        numbers = [other_table[i].number for other_lang, other_table in tables.values()
                   if masked(other_lang, other_table[i]) == masked(language, fact)]  # fmt: skip
        if numbers:
            alike += 1
            loss -= math.log((1 + numbers.count(fact.number)) / (1 + len(numbers)))
    return alike, loss / max(1, len(own))


def nli_facts(rng: random.Random, label: int) -> tuple[list[Fact], Fact]:
    """(premise facts, hypothesis fact) for ``label`` (0 entailment, 1 neutral, 2 contradiction).

    The hypothesis is drawn the same way for every label; so is the number of premise clauses (1 or 2).
    """
    hyp = random_fact(rng)
    others = [n for n in NAMES if n != hyp.name]
    n_clauses = rng.choice((1, 2))
    distractors = [random_fact(rng, name) for name in rng.sample(others, 2)]
    if rng.random() < 0.3:  # a distractor that differs from the hypothesis only by its person
        d = distractors[0]
        distractors[0] = Fact(d.name, hyp.verb, hyp.number, hyp.obj, hyp.negated)
    if label == 1:
        premise = distractors[:n_clauses]
    else:
        key = hyp
        if label == 2:
            if rng.random() < 0.5:
                key = Fact(hyp.name, hyp.verb, hyp.number, hyp.obj, not hyp.negated)
            else:
                key = Fact(hyp.name, hyp.verb, rng.choice([n for n in NUMBERS if n != hyp.number]), hyp.obj,
                           hyp.negated)  # fmt: skip
        premise = [key, *distractors[: n_clauses - 1]]
        rng.shuffle(premise)
    return premise, hyp


def nli_label(premise: Sequence[Fact], hyp: Fact) -> int:
    """The rule of the module docstring, from the facts."""
    about = [f for f in premise if f.name == hyp.name]
    if not about:
        return 1
    return 0 if any(f == hyp for f in about) else 2


def nli_example(rng: random.Random, language: Language, label: int) -> dict[str, Any]:
    premise, hyp = nli_facts(rng, label)
    filler = [rng.choice(language.lexicon["filler"])] if rng.random() < 0.3 else []
    return {"premise": " ".join(filler + language.sentence(premise)), "hypothesis": " ".join(language.clause(hyp)),
            "label": label}  # fmt: skip


def ner_example(rng: random.Random, lex: Mapping[str, list[str]], lang: str) -> dict[str, Any]:
    """A clause with a person (1-2 tokens), optionally an organisation and a place, tagged PAN-X style."""
    tokens, tags = [rng.choice(NAMES)], [1]
    if rng.random() < 0.4:
        tokens.append(rng.choice(SURNAMES))
        tags.append(2)
    tokens += [
        lex["verb"][rng.randrange(N_VERBS)],
        rng.choice(NUMBERS),
        lex["object"][rng.randrange(N_OBJECTS)],
    ]
    tags += [0, 0, 0]
    for kind, prep, b_tag in (("org", "org_prep", 3), ("place", "loc_prep", 5)):
        if rng.random() < 0.6:
            span = rng.sample(lex[kind], rng.choice((1, 1, 2)))
            tokens += [lex[prep][0], *span]
            tags += [0, b_tag] + [b_tag + 1] * (len(span) - 1)
    return {"tokens": tokens, "ner_tags": tags, "langs": [lang] * len(tokens)}


def corpus_line(rng: random.Random, language: Language, table: Sequence[Fact] | None = None) -> str:
    """Running text: 1-3 facts (30 % negated), sometimes opened by a filler word; with a fact ``table`` (a
    world with facts), clauses true in the language (:func:`~xmod_lab.data.synthetic_world.table_clause`)."""
    if table:
        facts = [table_clause(rng, table) for _ in range(rng.choice((1, 2, 3)))]
    else:
        facts = [random_fact(rng, name, rng.random() < NEGATED_SHARE) for name in rng.sample(NAMES, rng.choice((1, 2, 3)))]
    filler = [rng.choice(language.lexicon["filler"])] if rng.random() < 0.3 else []
    return " ".join(filler + language.sentence(facts))


def hypothesis_only_ceiling(train: Sequence[Mapping[str, Any]], test: Sequence[Mapping[str, Any]]) -> float:
    """Test accuracy of the best lookup from hypothesis to label learnt on ``train`` (majority label of
    each hypothesis word, combined by vote): what a model that ignores the premise can reach."""
    counts: dict[str, list[int]] = {}
    for row in train:
        for w in set(row["hypothesis"].split()):
            counts.setdefault(w, [0, 0, 0])[row["label"]] += 1
    correct = 0
    for row in test:
        votes = [0.0, 0.0, 0.0]
        for w in set(row["hypothesis"].split()):
            c = counts.get(w)
            if c:
                total = sum(c)
                votes = [v + k / total for v, k in zip(votes, c, strict=True)]
        correct += max(range(3), key=lambda k: (votes[k], -k)) == row["label"]
    return correct / max(1, len(test))


SETTINGS_FILE, LANGUAGES_FILE = "synthetic.json", "languages.json"


def _write_jsonl(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def generate_synthetic(
    root: str | Path,
    languages: Sequence[str] = ALL_LANGUAGES,
    n_train: int = 4000,
    n_eval: int = 500,
    n_corpus: int = 2000,
    seed: int = 0,
    ner: bool = True,
    world: WorldSettings | None = None,
) -> Path:
    """Write the NLI (and NER) splits and the MLM text of every language under ``root``; deterministic.

    Facts about each language (grammar, the hypothesis-only ceiling of its NLI test set) go to
    ``root/languages.json``. ``world``: the knowledge settings (default: every setting off).
    """
    root = Path(root)
    world = world or WorldSettings()
    sizes = {"train": n_train, "validation": n_eval, "test": n_eval}
    info: dict[str, Any] = {}
    for lang in languages:
        language = make_language(lang, seed, world)
        table = fact_table(world, lang, seed) if world.has_facts else None
        nli: dict[str, list[dict[str, Any]]] = {}
        for split, n in sizes.items():
            rng = random.Random(f"{seed}:{lang}:{split}:nli")
            labels = [i % 3 for i in range(n)]
            rng.shuffle(labels)
            nli[split] = [nli_example(rng, language, y) for y in labels]
            _write_jsonl(root / "xnli" / lang / f"{split}.jsonl", nli[split])
            if ner:
                rng = random.Random(f"{seed}:{lang}:{split}:ner")
                _write_jsonl(
                    root / "panx" / lang / f"{split}.jsonl",
                    [ner_example(rng, language.lexicon, lang) for _ in range(n)],
                )
        # MLM text: held-out lines are a tenth of the training text (at least 50)
        for split, n in (("train", n_corpus), ("validation", max(50, n_corpus // 10)), ("test", max(50, n_corpus // 10))):
            rng = random.Random(f"{seed}:{lang}:{split}:corpus")
            text = "\n".join(corpus_line(rng, language, table) for _ in range(n)) + "\n"
            (root / "mlm" / lang).mkdir(parents=True, exist_ok=True)
            (root / "mlm" / lang / f"{split}.txt").write_text(text, encoding="utf-8")
            if split == "train":
                (root / "corpus").mkdir(parents=True, exist_ok=True)
                (root / "corpus" / f"{lang}.txt").write_text(text, encoding="utf-8")
        info[lang] = {
            "order": language.grammar.order,
            "negation": language.grammar.negation,
            "hypothesis_only_ceiling": round(100 * hypothesis_only_ceiling(nli["train"], nli["test"]), 2),
        }
    (root / LANGUAGES_FILE).write_text(json.dumps(info, indent=1, ensure_ascii=False))
    return root


_VERSION = 3  # bump when the generator changes what it writes


def prepare_synthetic(
    root: str | Path,
    vocab_size: int = 1000,
    n_train: int = 4000,
    n_eval: int = 500,
    n_corpus: int = 2000,
    seed: int = 0,
    world: WorldSettings | None = None,
) -> Path:
    """Generate the data of every language in :data:`ALL_LANGUAGES` and train its tokenizer once; returns
    ``root/<hash of the generation settings>``.

    The folder depends on the generation settings only (never on which languages a run uses), so a
    checkpoint evaluated on any subset of languages sees the data and tokenizer it was trained with. Each
    setting gets its own folder, never replaced once written, so runs with different settings can share
    ``root`` concurrently. A folder is built in a private temporary directory and renamed into place
    atomically; the first finished builder wins.
    """
    params = {"languages": list(ALL_LANGUAGES), "vocab_size": vocab_size, "n_train": n_train, "n_eval": n_eval,
              "n_corpus": n_corpus, "seed": seed, "version": _VERSION}  # fmt: skip
    world = world or WorldSettings()
    if not world.is_default():  # the default world keeps the folder it had before these settings existed
        params["world"] = world.as_dict()
    stamp = json.dumps(params, sort_keys=True)
    root = Path(root).expanduser()
    target = root / hashlib.sha256(stamp.encode()).hexdigest()[:12]
    if (target / SETTINGS_FILE).is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{target.name}-tmp-"))
    try:
        generate_synthetic(tmp, ALL_LANGUAGES, n_train, n_eval, n_corpus, seed, world=world)
        info = json.loads((tmp / LANGUAGES_FILE).read_text())
        texts = [
            line
            for lang in ALL_LANGUAGES
            for line in (tmp / "corpus" / f"{lang}.txt").read_text("utf-8").splitlines()
        ]
        # Each word once on its own line too: sentencepiece seeds only substrings with varied right contexts,
        # and in this templated text a name is always followed by a space, so it would otherwise be split
        # into letters.
        words = sorted({w for line in texts for w in line.split()})
        train_tokenizer(texts + words, vocab_size, tmp / "tokenizer")
        # written last: marks a complete folder
        (tmp / SETTINGS_FILE).write_text(json.dumps({**params, "languages_info": info}, indent=1))
        os.replace(tmp, target)
    except OSError:
        if not (target / SETTINGS_FILE).is_file():
            raise
        # another process finished the same folder first (rename onto a non-empty directory fails)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def synthetic_info(folder: str | Path) -> dict[str, Any]:
    """The generation settings and per-language facts (grammar, hypothesis-only ceiling) of a folder."""
    return json.loads((Path(folder) / SETTINGS_FILE).read_text())


def synthetic_codes(adapters: Sequence[str], language_map: Mapping[str, str] | None) -> list[str]:
    """Dataset codes of the synthetic languages behind X-MOD adapter codes (``en_XX`` -> ``en``)."""
    mapping = {**SYNTHETIC_LANGUAGE_MAP, **(language_map or {})}
    by_adapter = {to_xmod_language(code, mapping): code for code in ALL_LANGUAGES}
    missing = [code for code in adapters if code not in by_adapter]
    if missing:
        raise ValueError(
            f"pretrain: adapters {missing} have no synthetic language to pre-train on (synthetic languages: "
            f"{list(ALL_LANGUAGES)}); choose languages.adapters among them or use pretrain=none"
        )
    return [by_adapter[code] for code in adapters]


def _check_languages(codes: Sequence[str], role: str) -> None:
    unknown = [c for c in codes if c not in ALL_LANGUAGES]
    if unknown:
        raise ValueError(
            f"{role}: {unknown} are not synthetic languages; the synthetic data has {list(ALL_LANGUAGES)} "
            "(dataset codes). Choose among them, e.g. languages.eval=[en,de]."
        )


def synthetic_nli(
    root: str,
    languages: Sequence[str],
    train_langs: Sequence[str] = ("en",),
    eval_langs: Sequence[str] | None = SYNTHETIC_LANGUAGES[:5],
    vocab_size: int = 1000,
    n_train: int = 4000,
    n_eval: int = 500,
    n_corpus: int = 2000,
    seed: int = 0,
    shared_facts: int = 0,
    private_facts: int = 0,
    vocab_overlap: float = 0.0,
    orders: Sequence[str] | None = None,
    max_length: int = 64,
    batch_size: int = 32,
    eval_batch_size: int | None = None,
    batching: str = "mixed",
    language_map: Mapping[str, str] | None = None,
    cache_dir: str | None = None,
    num_workers: int = 0,
    label_names: Sequence[str] = XNLI_LABELS,
    group_by_length: bool | None = None,
    sort_eval_by_length: bool | None = None,
    tokenizer: str | None = None,
) -> SentencePairDataModule:
    """The default experiment's datamodule: generates the data and tokenizer under ``root`` if needed and
    returns a :class:`SentencePairDataModule` over them. ``languages`` is the model's adapter list; ``tokenizer``:
    None for the one trained with the data, or the one a model was trained with (a checkpoint's, an export's);
    ``shared_facts`` ... ``orders``: the world's knowledge settings
    (:class:`~xmod_lab.data.synthetic_world.WorldSettings`; the defaults: every setting off)."""
    eval_langs = list(eval_langs) if eval_langs is not None else list(train_langs)
    _check_languages(train_langs, "languages.train")
    _check_languages(eval_langs, "languages.eval")
    world = WorldSettings(shared_facts, private_facts, vocab_overlap, tuple(orders) if orders is not None else None)
    folder = prepare_synthetic(root, vocab_size, n_train, n_eval, n_corpus, seed, world)
    language_map = {**SYNTHETIC_LANGUAGE_MAP, **(language_map or {})}
    datamodule = SentencePairDataModule(
        source={"path": str(folder / "xnli" / "{lang}" / "{split}.jsonl")},
        tokenizer=tokenizer or str(folder / "tokenizer"),
        languages=languages,
        train_langs=train_langs,
        eval_langs=eval_langs,
        max_length=max_length,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        batching=batching,
        language_map=language_map,
        cache_dir=cache_dir,
        num_workers=num_workers,
        seed=seed,
        label_names=label_names,
        group_by_length=group_by_length,
        sort_eval_by_length=sort_eval_by_length,
    )
    # test accuracy a hypothesis-only model reaches, per evaluation set (xmod_lab.diagnostics reads it)
    facts = synthetic_info(folder)["languages_info"]
    datamodule.shortcut_ceiling = {code: facts[code]["hypothesis_only_ceiling"] for code in eval_langs}
    return datamodule


def synthetic_mlm(
    root: str,
    languages: Sequence[str],
    train_langs: Sequence[str],
    eval_langs: Sequence[str] | None = None,
    vocab_size: int = 1000,
    n_train: int = 4000,
    n_eval: int = 500,
    n_corpus: int = 2000,
    seed: int = 0,
    shared_facts: int = 0,
    private_facts: int = 0,
    vocab_overlap: float = 0.0,
    orders: Sequence[str] | None = None,
    max_length: int = 64,
    mlm_probability: float = 0.15,
    pack: bool = True,
    alpha: float | None = None,
    batch_size: int = 32,
    eval_batch_size: int | None = None,
    batching: str = "mixed",
    language_map: Mapping[str, str] | None = None,
    cache_dir: str | None = None,
    num_workers: int = 0,
    tokenizer: str | None = None,
) -> LanguageModelingDataModule:
    """Masked-LM pre-training on the synthetic text (held-out validation/test lines per language), with the
    same generated folder and tokenizer as :func:`synthetic_nli` for the same generation settings (``tokenizer``:
    another one, as there)."""
    eval_langs = list(eval_langs) if eval_langs is not None else list(train_langs)
    _check_languages(train_langs, "languages.train")
    _check_languages(eval_langs, "languages.eval")
    world = WorldSettings(shared_facts, private_facts, vocab_overlap, tuple(orders) if orders is not None else None)
    folder = prepare_synthetic(root, vocab_size, n_train, n_eval, n_corpus, seed, world)
    datamodule = LanguageModelingDataModule(
        source={"path": str(folder / "mlm" / "{lang}" / "{split}.txt")},
        tokenizer=tokenizer or str(folder / "tokenizer"),
        languages=languages,
        train_langs=train_langs,
        eval_langs=eval_langs,
        objective="mlm",
        mlm_probability=mlm_probability,
        max_length=max_length,
        pack=pack,
        holdout=0.0,
        alpha=alpha,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        batching=batching,
        language_map={**SYNTHETIC_LANGUAGE_MAP, **(language_map or {})},
        cache_dir=cache_dir,
        num_workers=num_workers,
        seed=seed,
    )
    # the world its text states (the fact probe reads it: xmod_lab.tasks.fact_probe)
    datamodule.world, datamodule.world_seed = world, seed
    return datamodule
