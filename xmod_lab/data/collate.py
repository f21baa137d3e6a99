"""Collators: examples (dicts of python lists/ints) -> a batch of tensors padded to the longest example.

Every batch holds ``input_ids`` [B, T] (multiple choice: [B, C, T]), ``attention_mask`` like it, ``lang_ids`` [B]
(one adapter index per example) and, when the examples have them, ``labels``, ``start_positions`` and
``end_positions``. Evaluation metadata (QA: ``example_id``, ``offset_mapping``, ``context``, ``answers``, ``answer_language``) stays a python list so it never
reaches the model: pass ``model_inputs(batch)`` to the model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

IGNORE_INDEX = -100  # the label that cross-entropy ignores (padding, non-first subwords, unmasked MLM tokens)
# Batch keys the X-MOD heads' forward() accepts (a batch given by other code may carry token_type_ids)
MODEL_INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids", "lang_ids", "labels", "start_positions",
                    "end_positions")
_TENSOR_SCALARS = ("lang_ids", "start_positions", "end_positions")
# QA evaluation: what turns logits back into answer text and scores it (xmod_lab.tasks.qa_scoring)
EVAL_METADATA = ("example_id", "offset_mapping", "context", "answers", "answer_language")


def model_inputs(batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The subset of a batch that X-MOD forward() accepts (drops evaluation metadata): what every task passes."""
    return {k: batch[k] for k in MODEL_INPUT_KEYS if k in batch}


def _round_up(n: int, multiple: int | None) -> int:
    return n if not multiple else -(-n // multiple) * multiple


def _pad(seqs: Sequence[Sequence[int]], length: int, value: int) -> torch.Tensor:
    out = np.full((len(seqs), length), value, dtype=np.int64)  # numpy row writes: ~10x cheaper than torch's
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return torch.from_numpy(out)


class PadCollator:
    """Dynamic padding for classification, token classification, QA and multiple choice examples."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None) -> None:
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        if not examples:
            raise ValueError("Cannot collate an empty batch.")
        first = examples[0]
        batch: dict[str, Any] = {}
        if first["input_ids"] and isinstance(
            first["input_ids"][0], list
        ):  # multiple choice: [C][T] per example
            flat = [choice for ex in examples for choice in ex["input_ids"]]
            num_choices = len(first["input_ids"])
            length = _round_up(max(len(s) for s in flat), self.pad_to_multiple_of)
            ids = _pad(flat, length, self.pad_token_id)  # [B*C, T]
            batch["input_ids"] = ids.view(len(examples), num_choices, length)  # [B, C, T]
        else:
            seqs = [ex["input_ids"] for ex in examples]
            length = _round_up(max(len(s) for s in seqs), self.pad_to_multiple_of)
            batch["input_ids"] = _pad(seqs, length, self.pad_token_id)  # [B, T]
        batch["attention_mask"] = (batch["input_ids"] != self.pad_token_id).long()
        if "labels" in first:
            labels = [ex["labels"] for ex in examples]
            if isinstance(labels[0], list):  # one label per token
                batch["labels"] = _pad(labels, batch["input_ids"].shape[-1], IGNORE_INDEX)
            else:
                batch["labels"] = torch.tensor(labels, dtype=torch.long)
        for key in _TENSOR_SCALARS:
            if key in first:
                batch[key] = torch.tensor([ex[key] for ex in examples], dtype=torch.long)
        for key in EVAL_METADATA:
            if key in first:
                batch[key] = [ex[key] for ex in examples]
        return batch


class MaskedLMCollator:
    """BERT masking in the collator, so every epoch masks differently: of the non-special, non-pad tokens, a
    fraction ``mlm_probability`` become targets; of those 80% -> ``<mask>``, 10% -> a random token, 10% kept.
    With ``seed`` set, masks are a function of the batch content (stable validation losses)."""

    def __init__(
        self,
        pad_token_id: int,
        mask_token_id: int,
        vocab_size: int,
        special_token_ids: Sequence[int],
        mlm_probability: float = 0.15,
        pad_to_multiple_of: int | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
    ) -> None:
        if not 0.0 < mlm_probability < 1.0:
            raise ValueError(f"mlm_probability must be in (0, 1), got {mlm_probability}.")
        self.pad = PadCollator(pad_token_id, pad_to_multiple_of)
        self.mask_token_id = mask_token_id
        self.vocab_size = vocab_size
        self.special_ids = torch.tensor(sorted(set(special_token_ids) | {pad_token_id}), dtype=torch.long)
        # Random replacements are drawn from ordinary tokens only (never <s>, <pad>, </s>, <mask>).
        ordinary = torch.ones(vocab_size, dtype=torch.bool)
        ordinary[self.special_ids[self.special_ids < vocab_size]] = False
        self.ordinary_ids = ordinary.nonzero().squeeze(1)
        self.mlm_probability = mlm_probability
        self.generator = generator
        self.seed = seed

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        batch = self.pad([{"input_ids": ex["input_ids"], "lang_ids": ex["lang_ids"]} for ex in examples])
        ids = batch["input_ids"]  # [B, T]
        maskable = ~torch.isin(ids, self.special_ids)
        g = self.generator
        if self.seed is not None:  # evaluation: the same batch gets the same masks every epoch
            g = torch.Generator().manual_seed(self.seed + int(ids.sum()) * 7919 + ids.numel())
        chosen = (torch.rand(ids.shape, generator=g) < self.mlm_probability) & maskable
        labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE_INDEX))
        roll = torch.rand(ids.shape, generator=g)
        to_mask = chosen & (roll < 0.8)
        to_random = chosen & (roll >= 0.8) & (roll < 0.9)
        random_tokens = self.ordinary_ids[torch.randint(len(self.ordinary_ids), ids.shape, generator=g)]
        ids = torch.where(to_mask, torch.full_like(ids, self.mask_token_id), ids)
        batch["input_ids"] = torch.where(to_random, random_tokens, ids)
        batch["labels"] = labels
        return batch


class CausalLMCollator:
    """Next-token prediction: labels are the inputs (the model shifts them), pads ignored."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None) -> None:
        self.pad = PadCollator(pad_token_id, pad_to_multiple_of)

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        batch = self.pad([{"input_ids": ex["input_ids"], "lang_ids": ex["lang_ids"]} for ex in examples])
        batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, IGNORE_INDEX)
        return batch
