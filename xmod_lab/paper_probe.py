"""The fact probe of ``make paper``: what a pre-trained model knows of one language's fact table.

The knowledge the synthetic languages compete for is their fact tables (:mod:`xmod_lab.data.synthetic_world`):
each language states its own number for the same person, verb and object. The held-out MLM loss mixes that
knowledge with everything else a masked token can be (names, verbs, connectives, the random number of a
negated clause), so interference moves it by a few hundredths. The probe asks for the knowledge alone, as a
cloze test (LAMA-style): every entry of the language's table, its clause rendered alone and not negated, with
the number masked; the cross-entropy of the true number, averaged over the shared entries and over the
language's own (private) ones. 0: certain of every number; ln 9 = 2.197: no knowledge (uniform over 1-9).

It reads a finished ``paper_mlm`` run: its ``config.yaml`` (the world: ``data.*``), ``results.json`` (which
adapter the language uses) and ``export/`` (model and tokenizer), and writes ``fact_probe.json`` beside them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from xmod_lab.data.synthetic import make_language
from xmod_lab.data.synthetic_world import NUMBERS, Fact, WorldSettings, fact_table
from xmod_lab.data.tokenizer import load_tokenizer
from xmod_lab.models import XmodForMaskedLM
from xmod_lab.paper_summary import PROBE_FILE

NO_KNOWLEDGE = math.log(len(NUMBERS))  # the loss of a uniform guess among the numbers


def run_world(run_dir: Path) -> tuple[WorldSettings, int]:
    """The world and ``data.seed`` a run generated its data with, from its saved config."""
    data = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml")).get("data") or {}  # type: ignore[union-attr]
    orders = data.get("orders")
    world = WorldSettings(int(data.get("shared_facts", 0)), int(data.get("private_facts", 0)),
                          float(data.get("vocab_overlap", 0.0)), tuple(orders) if orders is not None else None)  # fmt: skip
    return world, int(data.get("seed", 0))


def _clauses(tokenizer: Any, lang: str, facts: list[Fact], seed: int, world: WorldSettings) -> tuple[dict, list[int]]:
    """The clauses with their number masked (one batch) and each number's token id. A number that is not one
    token of its own is refused: the probe would score a piece of it."""
    language = make_language(lang, seed, world)
    texts, targets = [], []
    for fact in facts:
        words = language.clause(fact)
        with_number = tokenizer(" ".join(words))["input_ids"]
        words[words.index(fact.number)] = tokenizer.mask_token
        masked = tokenizer(" ".join(words))["input_ids"]
        differ = [i for i, (a, b) in enumerate(zip(with_number, masked, strict=False)) if a != b]
        if len(with_number) != len(masked) or len(differ) != 1 or masked[differ[0]] != tokenizer.mask_token_id:
            raise ValueError(f"the number {fact.number!r} of the {lang} clause {' '.join(language.clause(fact))!r} is "
                             "not one token of the run's tokenizer: the fact probe needs single-token numbers")  # fmt: skip
        texts.append(" ".join(words))
        targets.append(with_number[differ[0]])
    return tokenizer(texts, padding=True, return_tensors="pt"), targets


def fact_probe(run_dir: Path, lang: str) -> dict[str, Any]:
    """The probe of ``lang`` (a dataset code, e.g. ``en``) on the run's exported model; written to
    ``<run_dir>/fact_probe.json`` and returned."""
    world, seed = run_world(run_dir)
    if not world.has_facts:
        raise ValueError(f"{run_dir}: its world has no fact table (data.shared_facts = data.private_facts = 0): "
                         "nothing to probe; use the paper world (`- /world@data: paper`)")  # fmt: skip
    adapters = json.loads((run_dir / "results.json").read_text()).get("adapters") or {}
    if lang not in adapters:
        raise ValueError(f"{run_dir}/results.json: no adapter recorded for {lang!r} (has {sorted(adapters)})")
    tokenizer = load_tokenizer(str(run_dir / "export"))
    model = XmodForMaskedLM.from_pretrained(run_dir / "export").eval()
    model.set_default_language(adapters[lang])
    table = fact_table(world, lang, seed)
    batch, targets = _clauses(tokenizer, lang, table, seed, world)
    with torch.no_grad():
        logits = model(**batch).logits  # (entries, length, vocab)
    at_mask = logits[batch["input_ids"] == tokenizer.mask_token_id]  # one mask per clause, in order
    losses = torch.nn.functional.cross_entropy(at_mask.float(), torch.tensor(targets), reduction="none").tolist()
    shared, private = losses[: world.shared_facts], losses[world.shared_facts :]
    found = {
        "language": lang,
        "adapter": adapters[lang],
        "shared_fact_loss": sum(shared) / len(shared) if shared else None,
        "private_fact_loss": sum(private) / len(private) if private else None,
        "entries": [{"name": f.name, "verb": f.verb, "object": f.obj, "number": f.number, "loss": loss,
                     "private": i >= world.shared_facts} for i, (f, loss) in enumerate(zip(table, losses, strict=True))],
        "no_knowledge": NO_KNOWLEDGE,
    }  # fmt: skip
    (run_dir / PROBE_FILE).write_text(json.dumps(found, indent=2) + "\n")
    return found
