"""A synthetic multilingual benchmark for the default experiment: no network, no shipped corpora, < 5 s.

Every language renders the same latent world with its own words. A clause is
``NAME [NEG] VERB NUMBER OBJECT``: names (``Anna``) and numbers (``7``) are shared across languages, verbs,
objects, negation, fillers and connectives are pseudo-words in the language's own script (Latin, Cyrillic,
CJK, Arabic, Devanagari). The NLI label is a deterministic rule over concepts:

* neutral: the hypothesis is about a person the premise does not mention;
* entailment: it restates that person's fact (same number, not negated);
* contradiction: it negates the fact or changes its number.

Like the annotation artifacts of real NLI data, part of the labels can also be read off the hypothesis
alone, through shared tokens: half the neutral hypotheses name someone premises never mention (Mia, Noah,
Olga, Paul), and a quarter of the contradictions use a number premises never use (7-9); negation words are
a further, language-specific cue. So a tiny model trained on one language quickly gets well above chance
(the cues alone allow about 0.75), while the rest needs the name/number matching across the pair. Since
all cue-carrying and deciding tokens are shared, zero-shot transfer to the other languages is possible.

Files (XNLI / PAN-X schema, so the ordinary datamodules read them)::

    <root>/xnli/<lang>/{train,validation,test}.jsonl   premise, hypothesis, label (0/1/2)
    <root>/panx/<lang>/{train,validation,test}.jsonl   tokens, ner_tags (PAN-X tag ids), langs
    <root>/corpus/<lang>.txt                           one sentence per line (tokenizer / MLM)
    <root>/tokenizer/                                  an XLM-R-format tokenizer trained on the corpus

where ``<root>`` is ``root/<hash>``, one folder per set of generation settings (see ``prepare_synthetic``).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

SYNTHETIC_LANGUAGES = ("en", "de", "fr", "ru", "zh")
NAMES = ("Anna", "Ben", "Carla", "David", "Eva", "Felix", "Greta", "Hugo", "Ida", "Jonas", "Klara", "Leo",
         "Mia", "Noah", "Olga", "Paul")  # fmt: skip
SURNAMES = ("Berg", "Costa", "Dumas", "Ivanov", "Kim", "Lopez", "Meyer", "Novak")
NUMBERS = tuple(str(i) for i in range(1, 10))
# Premises use the first 12 names and the numbers 1-6; some neutral / contradicting hypotheses use the others.
_PREMISE_NAMES, _OUTSIDER_NAMES = NAMES[:12], NAMES[12:]
_PREMISE_NUMBERS, _OUTSIDER_NUMBERS = NUMBERS[:6], NUMBERS[6:]
_N_OBJECTS, _N_VERBS, _N_FILLERS, _N_PLACES, _N_ORGS = 16, 6, 6, 8, 6
PANX_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")

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


def make_lexicon(lang: str, seed: int = 0) -> dict[str, list[str]]:
    """Deterministic pseudo-words of one language for every language-specific concept (all distinct)."""
    rng = random.Random(f"{seed}:{lang}")
    script = _SCRIPT_OF.get(lang, "latin")
    used: set[str] = set()

    def fresh(syllables: int) -> str:
        while True:
            w = _word(rng, script, syllables)
            if w not in used:
                used.add(w)
                return w

    sizes = {"object": _N_OBJECTS, "verb": _N_VERBS, "filler": _N_FILLERS, "place": _N_PLACES, "org": _N_ORGS}
    lex = {kind: [fresh(rng.choice((2, 3))) for _ in range(n)] for kind, n in sizes.items()}
    lex.update(neg=[fresh(1)], conj=[fresh(1)], loc_prep=[fresh(1)], org_prep=[fresh(1)])
    return lex


def _clause(
    lex: Mapping[str, list[str]], name: str, verb: int, num: str, obj: int, negated: bool
) -> list[str]:
    return [name, *(lex["neg"] if negated else []), lex["verb"][verb], num, lex["object"][obj]]


def nli_example(rng: random.Random, lex: Mapping[str, list[str]], label: int) -> dict[str, Any]:
    """One premise/hypothesis pair whose label follows the rule in the module docstring."""
    n_facts = rng.choice((1, 1, 2))
    names = rng.sample(_PREMISE_NAMES, n_facts + 1)  # the last one is absent from the premise
    facts = [
        (names[i], rng.randrange(_N_VERBS), rng.choice(_PREMISE_NUMBERS), rng.randrange(_N_OBJECTS))
        for i in range(n_facts)
    ]
    premise: list[str] = [rng.choice(lex["filler"])] if rng.random() < 0.3 else []
    for i, fact in enumerate(facts):
        premise += (lex["conj"] if i else []) + _clause(lex, *fact, negated=False)
    name, verb, num, obj = rng.choice(facts)
    negated = False
    if label == 1:  # neutral: someone the premise does not mention (half the time a name premises never use)
        name = rng.choice(_OUTSIDER_NAMES) if rng.random() < 0.5 else names[-1]
        negated = rng.random() < 0.2
    elif label == 2:  # contradiction: negate, or change the number (half the time to one premises never use)
        if rng.random() < 0.5:
            negated = True
        else:
            pool = _OUTSIDER_NUMBERS if rng.random() < 0.5 else _PREMISE_NUMBERS
            num = rng.choice([n for n in pool if n != num])
    hypothesis = _clause(lex, name, verb, num, obj, negated)
    return {"premise": " ".join(premise), "hypothesis": " ".join(hypothesis), "label": label}


def ner_example(rng: random.Random, lex: Mapping[str, list[str]], lang: str) -> dict[str, Any]:
    """A clause with a person (1-2 tokens), optionally an organisation and a place, tagged PAN-X style."""
    tokens, tags = [rng.choice(NAMES)], [1]
    if rng.random() < 0.4:
        tokens.append(rng.choice(SURNAMES))
        tags.append(2)
    tokens += [
        lex["verb"][rng.randrange(_N_VERBS)],
        rng.choice(NUMBERS),
        lex["object"][rng.randrange(_N_OBJECTS)],
    ]
    tags += [0, 0, 0]
    for kind, prep, b_tag in (("org", "org_prep", 3), ("place", "loc_prep", 5)):
        if rng.random() < 0.6:
            span = rng.sample(lex[kind], rng.choice((1, 1, 2)))
            tokens += [lex[prep][0], *span]
            tags += [0, b_tag] + [b_tag + 1] * (len(span) - 1)
    return {"tokens": tokens, "ner_tags": tags, "langs": [lang] * len(tokens)}


def corpus_line(rng: random.Random, lex: Mapping[str, list[str]]) -> str:
    ex = nli_example(rng, lex, rng.randrange(3))
    return ex["premise"] if rng.random() < 0.5 else ex["hypothesis"]


def _write_jsonl(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def generate_synthetic(
    root: str | Path,
    languages: Sequence[str] = SYNTHETIC_LANGUAGES,
    n_train: int = 4000,
    n_eval: int = 500,
    n_corpus: int = 2000,
    seed: int = 0,
    ner: bool = True,
) -> Path:
    """Write the NLI (and NER) splits and the text corpus of every language under ``root``; deterministic."""
    root = Path(root)
    sizes = {"train": n_train, "validation": n_eval, "test": n_eval}
    for lang in languages:
        lex = make_lexicon(lang, seed)
        for split, n in sizes.items():
            rng = random.Random(f"{seed}:{lang}:{split}:nli")
            labels = [i % 3 for i in range(n)]
            rng.shuffle(labels)
            _write_jsonl(root / "xnli" / lang / f"{split}.jsonl", [nli_example(rng, lex, y) for y in labels])
            if ner:
                rng = random.Random(f"{seed}:{lang}:{split}:ner")
                _write_jsonl(
                    root / "panx" / lang / f"{split}.jsonl", [ner_example(rng, lex, lang) for _ in range(n)]
                )
        rng = random.Random(f"{seed}:{lang}:corpus")
        (root / "corpus").mkdir(parents=True, exist_ok=True)
        (root / "corpus" / f"{lang}.txt").write_text(
            "\n".join(corpus_line(rng, lex) for _ in range(n_corpus)) + "\n", encoding="utf-8"
        )
    return root


def prepare_synthetic(
    root: str | Path,
    languages: Sequence[str] = SYNTHETIC_LANGUAGES,
    vocab_size: int = 1000,
    n_train: int = 4000,
    n_eval: int = 500,
    n_corpus: int = 2000,
    seed: int = 0,
) -> Path:
    """Generate the data and train its tokenizer once; returns ``root/<hash of the arguments>``.

    Each set of arguments gets its own folder, never replaced once written, so runs with different data
    settings (a sweep, two users of one cache) can share ``root`` concurrently. A folder is built in a
    private temporary directory and renamed into place atomically; the first finished builder wins.
    """
    from xmod_lab.data.tokenizer import train_tokenizer

    params = {"languages": list(languages), "vocab_size": vocab_size, "n_train": n_train, "n_eval": n_eval,
              "n_corpus": n_corpus, "seed": seed, "version": 2}  # fmt: skip
    stamp = json.dumps(params, sort_keys=True)
    root = Path(root).expanduser()
    target = root / hashlib.sha256(stamp.encode()).hexdigest()[:12]
    if (target / "synthetic.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{target.name}-tmp-"))
    try:
        generate_synthetic(tmp, languages, n_train, n_eval, n_corpus, seed)
        texts = [
            line
            for lang in languages
            for line in (tmp / "corpus" / f"{lang}.txt").read_text("utf-8").splitlines()
        ]
        # Each word once on its own line too: sentencepiece seeds only substrings with varied right contexts,
        # and in this templated text a name is always followed by a space, so it would otherwise be split
        # into letters.
        words = sorted({w for line in texts for w in line.split()})
        train_tokenizer(texts + words, vocab_size, tmp / "tokenizer")
        (tmp / "synthetic.json").write_text(stamp)  # written last: marks a complete folder
        os.replace(tmp, target)
    except OSError:
        if not (target / "synthetic.json").is_file():
            raise
        # another process finished the same folder first (rename onto a non-empty directory fails)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def synthetic_nli(
    root: str,
    languages: Sequence[str],
    train_langs: Sequence[str] = ("en",),
    eval_langs: Sequence[str] | None = SYNTHETIC_LANGUAGES,
    vocab_size: int = 1000,
    n_train: int = 4000,
    n_eval: int = 500,
    seed: int = 0,
    max_length: int = 64,
    batch_size: int = 32,
    eval_batch_size: int | None = None,
    batching: str = "mixed",
    language_map: Mapping[str, str] | None = None,
    cache_dir: str | None = None,
    num_workers: int = 0,
):
    """The default experiment's datamodule: generates the data and tokenizer under ``root`` if needed and
    returns a :class:`SentencePairDataModule` over them. ``languages`` is the model's adapter list; the
    generated languages are the union of ``train_langs`` and ``eval_langs`` (dataset codes, e.g. ``de``)."""
    from xmod_lab.data.sentence_pair import SentencePairDataModule

    eval_langs = list(eval_langs) if eval_langs is not None else list(train_langs)
    generated = list(dict.fromkeys([*train_langs, *eval_langs]))
    root_path = prepare_synthetic(root, generated, vocab_size, n_train, n_eval, seed=seed)
    return SentencePairDataModule(
        source={"path": str(root_path / "xnli" / "{lang}" / "{split}.jsonl")},
        tokenizer=str(root_path / "tokenizer"),
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
    )
