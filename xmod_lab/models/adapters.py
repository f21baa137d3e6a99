"""Languages after pre-training: add and remove language adapters, and the transformers story.

``add_language`` appends a code to ``config.languages`` (so every existing ``lang_ids`` value keeps
its meaning) and a new adapter to every adapter layer: a copy of one language, the average of
several, or a fresh random one. ``remove_languages`` prunes adapters; the remaining languages are
renumbered in their old order, and a warning lists each id that changed. Both edit the model in
place; ``save_pretrained`` writes the new language list, so ``from_pretrained`` rebuilds the same
adapters.

The adapter LayerNorm (``adapter_layer_norm``) is one per layer, shared by every language, exactly
as in fairseq and transformers; a new language reuses it and removing a language keeps it.
"""

from __future__ import annotations

import copy
import logging
import re
import warnings
from collections.abc import Iterator, Sequence

import torch
from torch import nn

logger = logging.getLogger(__name__)

RANDOM = "random"
_OUTPUT_RE = re.compile(r"(?:^|\.)encoder\.layer\.(\d+)\.output$")


def adapter_outputs(model: nn.Module) -> Iterator[tuple[int, nn.Module]]:
    """(layer index, ``encoder.layer.N.output`` module) for every layer that holds adapters."""
    for name, module in model.named_modules():
        match = _OUTPUT_RE.search(name)
        adapters = getattr(module, "adapter_modules", None)
        if match and isinstance(adapters, nn.ModuleDict) and len(adapters) > 0:
            yield int(match.group(1)), module


def _config(model: nn.Module):
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "languages"):
        raise TypeError(f"{type(model).__name__} has no X-MOD config; pass an xmod_lab model")
    return config


def _check_new_code(code: object, languages: Sequence[str]) -> str:
    if not isinstance(code, str) or not code or any(ch.isspace() for ch in code):
        raise ValueError(f"a language code must be a non-empty string without spaces, got {code!r}")
    if "." in code:
        # Parameter names use '.' as separator: 'adapter_modules.de.CH.dense1' would be ambiguous.
        raise ValueError(f"language code {code!r} contains '.'; use e.g. 'de_CH'")
    if code == RANDOM:
        raise ValueError(f"{RANDOM!r} is reserved for init_from='random'; pick another code")
    if code in languages:
        raise ValueError(
            f"language {code!r} already exists (id {list(languages).index(code)}); nothing to add"
        )
    return code


def _init_sources(init_from: str | Sequence[str] | None, languages: Sequence[str]) -> list[str]:
    if init_from is None or init_from == RANDOM:
        return []
    sources = [init_from] if isinstance(init_from, str) else list(init_from)
    if not sources:
        raise ValueError("init_from is an empty list; give one or more language codes, 'random' or None")
    if len(set(sources)) != len(sources):
        raise ValueError(f"init_from has duplicates: {sources}")
    unknown = [code for code in sources if code not in languages]
    if unknown:
        raise ValueError(f"init_from names unknown language(s) {unknown}; this model has {list(languages)}")
    return sources


def _reset_(module: nn.Module, std: float) -> None:
    # The model's own initialisation of a Linear (transformers' _init_weights): N(0, std), zero bias.
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            nn.init.normal_(sub.weight, mean=0.0, std=std)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
        elif isinstance(sub, nn.LayerNorm):
            nn.init.ones_(sub.weight)
            nn.init.zeros_(sub.bias)


def add_language(model: nn.Module, code: str, init_from: str | Sequence[str] | None = None) -> int:
    """Add language ``code`` after the existing ones; returns its ``lang_ids`` value.

    ``init_from``: None or ``"random"`` (the model's initialisation), one code (a copy of that
    language's adapters) or several codes (their element-wise average). The new adapters are
    trainable; freeze the rest with ``apply_freeze_policy(model, "adapters_only", [code])``.
    With ``adapter_mode="shared"`` or ``"none"`` there are no per-language adapters: the code is
    only appended to ``config.languages`` and ``init_from`` must be None.
    """
    config = _config(model)
    languages = config.languages
    _check_new_code(code, languages)
    mode = getattr(config, "adapter_mode", "modular")
    if mode != "modular":
        if init_from is not None:
            raise ValueError(
                f"adapter_mode={mode!r} has no per-language adapters, so init_from={init_from!r} has nothing "
                "to initialise; call add_language(code) without init_from"
            )
        languages.append(code)
        return len(languages) - 1

    sources = _init_sources(init_from, languages)
    for _, output in adapter_outputs(model):
        adapters = output.adapter_modules
        new = copy.deepcopy(adapters[sources[0] if sources else next(iter(adapters.keys()))])
        with torch.no_grad():
            if not sources:
                _reset_(new, float(getattr(config, "initializer_range", 0.02)))
            elif len(sources) > 1:
                stacked = [dict(adapters[src].named_parameters()) for src in sources]
                for name, param in new.named_parameters():
                    param.copy_(torch.stack([p[name] for p in stacked]).mean(dim=0))
        for param in new.parameters():
            param.requires_grad_(True)
        adapters[code] = new
    languages.append(code)
    how = (
        f"the average of {sources}"
        if len(sources) > 1
        else (f"a copy of {sources[0]}" if sources else "random")
    )
    logger.info("added language %s (lang_id %d), adapters initialised as %s", code, len(languages) - 1, how)
    return len(languages) - 1


def remove_languages(model: nn.Module, codes: str | Sequence[str]) -> dict[str, tuple[int, int]]:
    """Prune the adapters of ``codes``; returns {code: (old id, new id)} for every renumbered language.

    The remaining languages keep their relative order, so ids after a removed one shift down; a
    warning lists each change because ``lang_ids`` built for the old model now mean other languages.
    """
    config = _config(model)
    languages = config.languages
    codes = [codes] if isinstance(codes, str) else list(codes)
    if not codes:
        raise ValueError("remove_languages got no language codes")
    if len(set(codes)) != len(codes):
        raise ValueError(f"remove_languages got duplicate codes: {codes}")
    unknown = [code for code in codes if code not in languages]
    if unknown:
        raise ValueError(f"cannot remove unknown language(s) {unknown}; this model has {list(languages)}")
    default = getattr(config, "default_language", None)
    if default in codes:
        raise ValueError(
            f"{default!r} is the default language; call set_default_language(<another code>) before removing it"
        )
    keep = [code for code in languages if code not in codes]
    if not keep:
        raise ValueError("remove_languages would remove every language; keep at least one")

    if getattr(config, "adapter_mode", "modular") == "modular":
        for _, output in adapter_outputs(model):
            for code in codes:
                del output.adapter_modules[code]
    old_ids = {code: i for i, code in enumerate(languages)}
    languages[:] = keep  # in place: modules holding the same list object stay in sync
    renumbered = {code: (old_ids[code], new) for new, code in enumerate(keep) if old_ids[code] != new}
    if renumbered:
        changes = ", ".join(f"{code} {old} -> {new}" for code, (old, new) in renumbered.items())
        warnings.warn(
            f"removed languages {codes}; lang_ids renumbered: {changes}. Rebuild any lang_ids made for the old model.",
            UserWarning,
            stacklevel=2,
        )
    else:
        logger.info("removed languages %s; no remaining lang_id changed", codes)
    return renumbered
