"""What ``XmodModel.forward`` checks and derives from its inputs before any layer maths (modeling.py).

- the language routing: ``lang_ids`` validated and each batch row assigned its adapter, once per forward and
  with at most one host sync (``route_languages`` -> ``LanguageRouting``, reused by every layer);
- the other input checks, each a clear error naming the argument and the fix: ``input_ids`` / ``inputs_embeds``
  shapes, the ``cache`` type, the length against ``max_position_embeddings``, token type ids in range.

Shape letters as in modeling.py (B batch, T tokens, D hidden size, L languages).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.cache_utils import Cache

from .configuration import SHARED_ADAPTER, XmodConfig


# ------------------------------------------------------------------------------------- routing
@dataclass
class LanguageRouting:
    """Which adapter each batch row uses, computed once per forward and shared by all layers.

    Either ``single`` names the one adapter of the whole batch (no indexing at all), or rows are
    gathered by language (``order``), split into ``counts`` runs for the adapters ``keys`` and put
    back with ``inverse``. Adapters absent from the batch are never called, so they get no gradient.
    """

    single: str | None = None
    keys: tuple[str, ...] = ()
    counts: tuple[int, ...] = ()
    order: torch.Tensor | None = None  # (B,) rows sorted by language
    inverse: torch.Tensor | None = None  # (B,) position of each row in ``order``
    row_lang: torch.Tensor | None = None  # (B,) each row's language index (mixed batches only)
    tokens: int | None = None  # sum of ``row_tokens`` when route_languages was given them
    token_counts: tuple[int, ...] = ()  # per adapter in ``keys``: its rows' share of ``tokens``

    def for_tokens(self, rows: torch.Tensor) -> LanguageRouting:
        """The same routing for a flat (N, D) batch of kept tokens; ``rows`` (N,) is each token's row."""
        if self.single is not None or not self.keys:
            return self
        order = torch.argsort(self.row_lang.index_select(0, rows), stable=True)  # (N,)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel(), device=order.device)
        return LanguageRouting(keys=self.keys, counts=self.token_counts, order=order, inverse=inverse)

    def apply(self, adapters: nn.ModuleDict, h: torch.Tensor) -> torch.Tensor:
        if self.single is not None:
            return adapters[self.single](h)
        grouped = h.index_select(0, self.order).split(list(self.counts))  # L' x (B_l, T, D)
        out = torch.cat([adapters[key](rows) for key, rows in zip(self.keys, grouped, strict=True)])
        return out.index_select(0, self.inverse)  # (B, T, D) back in input order


def _bad_lang_ids(message: str) -> ValueError:
    return ValueError(f"lang_ids {message}")


def route_languages(
    config: XmodConfig,
    lang_ids: torch.Tensor | int | None,
    batch_size: int,
    device: torch.device,
    also_check: torch.Tensor | None = None,
    row_tokens: torch.Tensor | None = None,
) -> tuple[LanguageRouting, bool]:
    """Validate ``lang_ids`` and build the routing, with at most one host sync.

    A python int, the default language or a shared/none adapter mode need no sync at all.
    ``also_check`` is an optional 0-d bool tensor (another input check, e.g. token type ids out of
    range) fetched in the same sync; its value is returned with the routing. ``row_tokens`` (B,),
    optional: the tokens each row keeps when padding is skipped; their total and per-language sums
    come back in the routing (``tokens``, ``token_counts``), in the same sync (one even where the
    language alone would need none).
    """
    no_sync = _route_without_sync(config, lang_ids, batch_size)
    if no_sync is not None:
        if row_tokens is None:
            return no_sync, bool(also_check) if also_check is not None else False
        fetched = torch.stack(
            [row_tokens.sum().double(), also_check.double() if also_check is not None else row_tokens.new_zeros((), dtype=torch.float64)]
        ).tolist()
        no_sync.tokens = int(fetched[0])
        return no_sync, bool(fetched[1])
    languages = config.languages
    num_languages = len(languages)
    if lang_ids.dim() == 2 and lang_ids.shape[1] == 1:  # (B, 1), a common collate output
        lang_ids = lang_ids[:, 0]
    if lang_ids.dim() == 0:
        lang_ids = lang_ids.reshape(1)
    elif lang_ids.dim() != 1 or lang_ids.shape[0] not in (1, batch_size):
        raise _bad_lang_ids(
            f"must have shape (batch_size,) = ({batch_size},) with one language index per sample, "
            f"got shape {tuple(lang_ids.shape)}"
        )
    if lang_ids.dtype == torch.bool or lang_ids.is_complex():
        raise _bad_lang_ids(f"must be integer indices, got dtype {lang_ids.dtype}; pass a LongTensor")
    if lang_ids.numel() == 0:  # an empty batch: nothing to route, min/max would fail
        return LanguageRouting(single=languages[0]), bool(also_check) if also_check is not None else False
    lang_ids = lang_ids.to(device)
    fraction = (
        (lang_ids != lang_ids.round()).any() if lang_ids.is_floating_point() else lang_ids.new_zeros(())
    )
    ids_long = lang_ids.long()
    if ids_long.numel() == 1 and batch_size != 1:  # one language for the whole batch
        ids_long = ids_long.expand(batch_size)
    one_hot = ids_long.clamp(0, num_languages - 1)[:, None] == torch.arange(num_languages, device=device)  # (B, L)
    per_language_tokens = []
    if row_tokens is not None:
        per_language_tokens = [(one_hot * row_tokens.to(device)[:, None]).sum(0).double()]
    # One sync brings back validity, the per-language counts and the caller's check together.
    stats = torch.cat(
        [
            torch.stack([lang_ids.min(), lang_ids.max()]).double(),
            torch.stack(
                [
                    fraction.double(),
                    also_check.to(device).double()
                    if also_check is not None
                    else fraction.new_zeros((), dtype=torch.float64),
                ]
            ),
            # A (B, L) comparison, not torch.bincount: CUDA's bincount reads min and max back (2 syncs).
            one_hot.sum(0).double(),
            *per_language_tokens,
        ]
    ).tolist()
    low, high, has_fraction, check = stats[0], stats[1], stats[2], bool(stats[3])
    counts, token_counts = stats[4 : 4 + num_languages], stats[4 + num_languages :]
    if has_fraction:
        raise _bad_lang_ids(
            f"must hold whole numbers (language indices), got {lang_ids.tolist()}; pass a LongTensor"
        )
    if low < 0 or high >= num_languages:
        raise _bad_lang_ids(
            f"values must be in 0..{num_languages - 1} (indices into config.languages={languages}), "
            f"got min {low:g}, max {high:g}"
        )
    present = [i for i, n in enumerate(counts) if n > 0]
    tokens = int(sum(token_counts)) if row_tokens is not None else None
    if len(present) == 1:  # includes a one-element lang_ids for the whole batch
        return LanguageRouting(single=languages[present[0]], tokens=tokens), check
    order = torch.argsort(ids_long, stable=True)  # (B,)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=order.device)
    routing = LanguageRouting(
        keys=tuple(languages[i] for i in present),
        counts=tuple(int(counts[i]) for i in present),
        order=order,
        inverse=inverse,
        row_lang=ids_long,
        tokens=tokens,
        token_counts=tuple(int(token_counts[i]) for i in present) if row_tokens is not None else (),
    )
    return routing, check


def _route_without_sync(config: XmodConfig, lang_ids, batch_size: int) -> LanguageRouting | None:
    """The routing when it is known without looking at device data; None when lang_ids is a tensor."""
    if config.adapter_mode == "none":
        return LanguageRouting()
    if config.adapter_mode == "shared":
        return LanguageRouting(single=SHARED_ADAPTER)
    languages = config.languages
    if lang_ids is None:
        if config.default_language is None:
            raise ValueError(
                "Input language unknown: pass lang_ids (a LongTensor of shape (batch_size,), indices into "
                f"config.languages={languages}) or call model.set_default_language(<code>) first"
            )
        return LanguageRouting(single=config.default_language)
    if isinstance(lang_ids, str):
        raise TypeError(
            f"lang_ids must hold indices, got the code {lang_ids!r}: pass config.lang_id({lang_ids!r}) or call "
            "model.set_default_language(code)"
        )
    if isinstance(lang_ids, bool) or not isinstance(lang_ids, int | torch.Tensor):
        raise TypeError(
            f"lang_ids must be a torch.LongTensor of shape (batch_size,) (or one python int for the whole "
            f"batch), got {type(lang_ids).__name__}; wrap it: torch.tensor(lang_ids, dtype=torch.long)"
        )
    if isinstance(lang_ids, int):
        if not 0 <= lang_ids < len(languages):
            raise _bad_lang_ids(f"value {lang_ids} is out of range 0..{len(languages) - 1} ({languages})")
        return LanguageRouting(single=languages[lang_ids])
    return None


# -------------------------------------------------------------------------------- other input checks
def check_input_tensors(input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None,
                        cache: Cache | None) -> torch.Tensor:
    """The tensor the batch comes from (``input_ids`` (B, T) or ``inputs_embeds`` (B, T, D)), once exactly one
    is given with its shape and ``cache`` is a transformers ``Cache`` or None."""
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("Pass exactly one of input_ids or inputs_embeds")
    source = input_ids if input_ids is not None else inputs_embeds
    if source.dim() != (2 if input_ids is not None else 3):
        raise ValueError(
            f"input_ids must be (batch, tokens) and inputs_embeds (batch, tokens, hidden); got "
            f"shape {tuple(source.shape)}"
        )
    if cache is not None and not isinstance(cache, Cache):
        raise TypeError(
            f"cache must be a transformers Cache (e.g. DynamicCache, the .cache of a previous output), "
            f"got {type(cache).__name__}"
        )
    return source


def check_length(config: XmodConfig, tokens: int, position_ids: torch.Tensor | None) -> None:
    """``tokens`` (cached + new) fit the position table, unless the caller gives its own ``position_ids``."""
    longest = tokens + (config.pad_token_id or 0) + 1  # highest RoBERTa position + 1
    if position_ids is None and longest > config.max_position_embeddings:
        raise ValueError(
            f"sequence too long: {tokens} tokens, but positions stop at "
            f"max_position_embeddings={config.max_position_embeddings} (RoBERTa positions start at "
            f"pad_token_id + 1); truncate to {config.max_position_embeddings - (config.pad_token_id or 0) - 1} tokens"
        )


def token_types_out_of_range(config: XmodConfig, token_type_ids: torch.Tensor | None) -> torch.Tensor | None:
    """A 0-d bool tensor, on the device (fetched in ``route_languages``' one sync): any id outside the table."""
    if token_type_ids is None:
        return None
    return ((token_type_ids < 0) | (token_type_ids >= config.type_vocab_size)).any()


def token_types_error(config: XmodConfig, token_type_ids: torch.Tensor) -> ValueError:
    return ValueError(
        f"token_type_ids must be in 0..{config.type_vocab_size - 1} (config.type_vocab_size="
        f"{config.type_vocab_size}); got values up to {int(token_type_ids.max())}. X-MOD/XLM-R checkpoints "
        "have one token type: drop token_type_ids (or pass zeros)"
    )
