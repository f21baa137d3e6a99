"""The fact probe of ``make paper`` as a learning curve: what a masked-LM knows of one language's fact table
(:func:`xmod_lab.data.synthetic.fact_clauses`, a cloze test), scored at every validation of a pre-training run.

The held-out MLM loss mixes the knowledge the synthetic languages compete for with everything else a masked
token can be, so whether a shared model's shortfall on its facts is lost to the other languages or only not
learnt yet needs the probe's own curve: a shortfall that has stopped shrinking is not a shorter training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer

from xmod_lab.data.common import resolve_languages
from xmod_lab.data.synthetic import fact_clauses
from xmod_lab.data.synthetic_world import NUMBERS, WorldSettings

NO_KNOWLEDGE = math.log(len(NUMBERS))  # the loss of a uniform guess among the numbers


def clause_losses(model: Any, tokenizer: Any, lang: str, lang_id: int, seed: int, world: WorldSettings) -> list[float]:
    """The cross-entropy of each entry's true number (shared entries first) under an :class:`XmodForMaskedLM`
    run with adapter ``lang_id``; the model's train/eval mode is the caller's (eval: no dropout)."""
    texts, targets = fact_clauses(tokenizer, lang, seed, world)
    # padded by `pad`, not by a `padding=True` call: transformers 5 would leave padding on in the tokenizer
    # (the run's, which the export saves)
    batch = tokenizer.pad(tokenizer(texts), return_tensors="pt").to(model.device)
    lang_ids = torch.full((len(texts),), lang_id, dtype=torch.long, device=model.device)
    with torch.no_grad():
        logits = model(**batch, lang_ids=lang_ids).logits  # (entries, length, vocab)
    at_mask = logits[batch["input_ids"] == tokenizer.mask_token_id]  # one mask per clause, in order
    if at_mask.shape[0] != len(targets):
        raise ValueError(f"the fact probe found {at_mask.shape[0]} masks in {len(targets)} clauses")
    return torch.nn.functional.cross_entropy(at_mask.float(), torch.tensor(targets, device=at_mask.device),
                                             reduction="none").tolist()  # fmt: skip


def split_losses(losses: Sequence[float], world: WorldSettings) -> dict[str, float | None]:
    """Mean loss over the shared entries and over the language's own (None where the table has none)."""
    shared, private = losses[: world.shared_facts], losses[world.shared_facts :]
    return {"shared_fact_loss": sum(shared) / len(shared) if shared else None,
            "private_fact_loss": sum(private) / len(private) if private else None}  # fmt: skip


class FactProbe(Callback):
    """Logs ``val/<language>/fact_private`` and ``val/<language>/fact_shared`` (the probe's mean loss over the
    language's own and the shared entries; 0: certain, ln 9: a uniform guess) after every validation of a
    masked-LM run on synthetic text with fact tables (``data=synthetic_mlm`` with the paper world). The
    model is in eval mode there, as for the validation loss."""

    def __init__(self, language: str = "en") -> None:
        self.language = language

    def _target(self, datamodule: Any) -> tuple[WorldSettings, int]:
        """The world the run's text states and the adapter index of the probed language; a clear error where
        the run cannot be probed."""
        world = getattr(datamodule, "world", None)
        if world is None:
            raise ValueError("callbacks.fact_probe needs synthetic masked-LM text (data=synthetic_mlm), whose "
                             f"datamodule knows the world its text states; this run's data is "
                             f"{type(datamodule).__name__}. Drop the callback with `~callbacks.fact_probe`")  # fmt: skip
        if not world.has_facts:
            raise ValueError("callbacks.fact_probe: the run's world has no fact table (data.shared_facts = "
                             "data.private_facts = 0): nothing to probe. Give it facts or drop the callback with "
                             "`~callbacks.fact_probe`")  # fmt: skip
        spec = datamodule.spec
        _, (lang_id,) = resolve_languages([self.language], spec.languages, spec.language_map, "callbacks.fact_probe")
        return world, lang_id

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._target(trainer.datamodule)  # before any training: a run it cannot probe fails now, not an epoch in

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        datamodule = trainer.datamodule
        world, lang_id = self._target(datamodule)
        was_training = pl_module.model.training
        pl_module.model.eval()
        try:
            losses = clause_losses(pl_module.model, datamodule.tokenizer, self.language, lang_id,
                                   datamodule.world_seed, world)  # fmt: skip
        finally:
            pl_module.model.train(was_training)
        for part, value in split_losses(losses, world).items():
            if value is not None:
                name = part.removesuffix("_fact_loss")
                # every rank scores the same clauses on the same weights: the mean over ranks is each one's value
                pl_module.log(f"val/{self.language}/fact_{name}", value, batch_size=len(losses),
                              sync_dist=trainer.world_size > 1)  # fmt: skip
