"""The latent world the synthetic languages talk about (:mod:`xmod_lab.data.synthetic` renders it), and the
knowledge settings that decide how much the languages compete for a model's capacity.

A fact is ``(NAME, VERB, NUMBER, OBJECT)``, possibly negated. In the default world (:class:`WorldSettings`
with every field off: the data generated before these settings existed, byte for byte) the only knowledge is which objects
a verb takes (the same 4 of the 16 in every language); a clause's name and number are random. Languages of
that world compete for almost nothing in a shared model. The settings add knowledge that a model must store:

* ``shared_facts``: entries of a fact table ``(NAME, VERB, OBJECT) -> NUMBER`` that hold in every language:
  what transfers (learnt once, used by every language);
* ``private_facts``: entries that each language holds with its own number (the same persons, verbs and
  objects, a number drawn per language: two languages agree on about a ninth by chance). A shared body
  has to store K copies; a modular model can keep each language's in its adapters;
* ``vocab_overlap``: the fraction of the 48 word slots (16 objects, 8 verbs, 6 fillers, 8 places, 6
  organisations, 4 function words) for which every language uses English's word, whatever its script
  (loanwords); 0: only names and digits are shared;
* ``orders``: the constituent orders the other languages draw from (English stays SVO, the probe); null:
  every order of :data:`ORDERS`; ``[SVO]``: no word-order variety.

With a fact table (``shared_facts + private_facts > 0``) every clause of the MLM text states an entry of its
language's table: with its number, or (30 %) negated with another number, so every clause is true in its
language. NLI and NER are generated as in the default world: their labels are rules over the sentences.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

NAMES = ("Anna", "Ben", "Carla", "David", "Eva", "Felix", "Greta", "Hugo", "Ida", "Jonas", "Klara", "Leo")
SURNAMES = ("Berg", "Costa", "Dumas", "Ivanov", "Kim", "Lopez", "Meyer", "Novak")
NUMBERS = tuple(str(i) for i in range(1, 10))
N_OBJECTS, N_VERBS, N_FILLERS, N_PLACES, N_ORGS = 16, 8, 6, 8, 6
OBJECTS_PER_VERB = 4
# Constituent orders (S = name, V = verb, O = number + object).
ORDERS = ("SVO", "SOV", "VSO", "VOS", "OVS", "OSV")
# Every language's word slots: content words, then function words (one each), in lexicon order.
CONTENT_WORDS = {"object": N_OBJECTS, "verb": N_VERBS, "filler": N_FILLERS, "place": N_PLACES, "org": N_ORGS}
FUNCTION_WORDS = ("neg", "conj", "loc_prep", "org_prep")
NEGATED_SHARE = 0.3  # of the clauses of running text


def verb_objects(verb: int) -> tuple[int, ...]:
    """The objects a verb takes: the same in every language (the shared latent world)."""
    return tuple((2 * verb + j) % N_OBJECTS for j in range(OBJECTS_PER_VERB))


# every (name, verb, object) a fact table can hold: 12 x 8 x 4
FACT_KEYS = tuple((n, v, o) for n in NAMES for v in range(N_VERBS) for o in verb_objects(v))


@dataclass(frozen=True)
class Fact:
    name: str
    verb: int
    number: str
    obj: int
    negated: bool


def random_fact(rng: random.Random, name: str | None = None, negated: bool | None = None) -> Fact:
    verb = rng.randrange(N_VERBS)
    return Fact(
        name=name or rng.choice(NAMES),
        verb=verb,
        number=rng.choice(NUMBERS),
        obj=rng.choice(verb_objects(verb)),
        negated=rng.random() < 0.5 if negated is None else negated,
    )


@dataclass(frozen=True)
class WorldSettings:
    """How much the languages share and how much each must hold alone (the module docstring); the data
    config's fields of the same names. The defaults are every setting off; the default experiment's world is
    in ``conf/data/synthetic_nli.yaml`` (``vocab_overlap: 0.25``)."""

    shared_facts: int = 0
    private_facts: int = 0
    vocab_overlap: float = 0.0
    orders: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for key in ("shared_facts", "private_facts"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"data.{key}={value!r}: a number of fact-table entries (an int >= 0) is needed")
        if self.shared_facts + self.private_facts > len(FACT_KEYS):
            raise ValueError(
                f"data.shared_facts + data.private_facts = {self.shared_facts + self.private_facts}: the fact "
                f"table has {len(FACT_KEYS)} entries (names x verbs x objects per verb); lower them"
            )
        if isinstance(self.vocab_overlap, bool) or not isinstance(self.vocab_overlap, int | float) or \
                not 0.0 <= self.vocab_overlap <= 1.0:  # fmt: skip
            raise ValueError(f"data.vocab_overlap={self.vocab_overlap!r}: a fraction in [0, 1] is needed")
        object.__setattr__(self, "vocab_overlap", float(self.vocab_overlap))  # 1 and 1.0: one folder
        if self.orders is not None:
            orders = tuple(self.orders)
            object.__setattr__(self, "orders", orders)
            bad = [o for o in orders if o not in ORDERS]
            if not orders or bad or len(set(orders)) != len(orders):
                raise ValueError(
                    f"data.orders={list(orders)}: a non-empty list of distinct constituent orders among "
                    f"{list(ORDERS)} is needed (unknown: {bad}), or null for all of them"
                )

    @classmethod
    def from_config(cls, data: Mapping[str, Any]) -> WorldSettings:
        """The world of a data config (e.g. a run's saved ``data``): its fields, the ones it lacks off."""
        return cls(**{key: data.get(key, off) for key, off in asdict(cls()).items()})

    def is_default(self) -> bool:
        return self == WorldSettings()

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["orders"] = list(self.orders) if self.orders is not None else None
        return out

    @property
    def has_facts(self) -> bool:
        return self.shared_facts + self.private_facts > 0


# the data config fields and their "off" values (today's world): left out of every cache key when off
WORLD_DEFAULTS = WorldSettings().as_dict()


def fact_table(world: WorldSettings, lang: str, seed: int = 0) -> list[Fact]:
    """The language's fact table: the shared entries (the same in every language), then its own."""
    keys = list(FACT_KEYS)
    random.Random(f"{seed}:world:keys").shuffle(keys)
    shared_rng, own_rng = random.Random(f"{seed}:world:shared"), random.Random(f"{seed}:{lang}:world:private")
    cut = world.shared_facts
    shared = [Fact(n, v, shared_rng.choice(NUMBERS), o, False) for n, v, o in keys[:cut]]
    own = [Fact(n, v, own_rng.choice(NUMBERS), o, False) for n, v, o in keys[cut : cut + world.private_facts]]
    return shared + own


def table_clause(rng: random.Random, table: list[Fact]) -> Fact:
    """A true clause about an entry of ``table``: the entry itself, or it negated with another number."""
    fact = rng.choice(table)
    if rng.random() < NEGATED_SHARE:
        return Fact(fact.name, fact.verb, rng.choice([n for n in NUMBERS if n != fact.number]), fact.obj, True)
    return fact


def loan_slots(world: WorldSettings, seed: int = 0) -> set[tuple[str, int]]:
    """The word slots ``(kind, index)`` for which every language uses English's word."""
    slots = [(kind, i) for kind, n in CONTENT_WORDS.items() for i in range(n)] + [(k, 0) for k in FUNCTION_WORDS]
    random.Random(f"{seed}:world:overlap").shuffle(slots)
    return set(slots[: round(world.vocab_overlap * len(slots))])
