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
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from xmod_lab.data.synthetic_world import WorldSettings, fact_table
from xmod_lab.data.tokenizer import load_tokenizer
from xmod_lab.models import XmodForMaskedLM
from xmod_lab.paper_summary import PROBE_FILE
from xmod_lab.tasks.fact_probe import NO_KNOWLEDGE, clause_losses, split_losses


def run_world(run_dir: Path) -> tuple[WorldSettings, int]:
    """The world and ``data.seed`` a run generated its data with, from its saved config."""
    data = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml")).get("data") or {}  # type: ignore[union-attr]
    return WorldSettings.from_config(data), int(data.get("seed", 0))


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
    losses = clause_losses(model, tokenizer, lang, model.config.lang_id(adapters[lang]), seed, world)
    found = {
        "language": lang,
        "adapter": adapters[lang],
        **split_losses(losses, world),
        "entries": [{"name": f.name, "verb": f.verb, "object": f.obj, "number": f.number, "loss": loss,
                     "private": i >= world.shared_facts}
                    for i, (f, loss) in enumerate(zip(fact_table(world, lang, seed), losses, strict=True))],
        "no_knowledge": NO_KNOWLEDGE,
    }  # fmt: skip
    (run_dir / PROBE_FILE).write_text(json.dumps(found, indent=2) + "\n")
    return found
