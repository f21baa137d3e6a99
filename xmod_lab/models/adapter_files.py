"""One language's adapters in a standalone safetensors file: how users share a new language.

Layout: tensors ``layers.<N>.adapter.<param>`` (``dense1.weight`` ...) for every adapter layer N,
and optionally ``layers.<N>.adapter_layer_norm.{weight,bias}``; the safetensors metadata holds
``xmod_language_adapter``, a JSON header::

    {"format_version": 1, "language": "rm_CH", "num_hidden_layers": 12, "hidden_size": 768,
     "bottleneck_size": 384, "adapter_layers": [0, ..., 11], "adapter_activation": "gelu",
     "pre_norm": false, "adapter_layer_norm": false, "adapter_reuse_layer_norm": true,
     "ln_before_adapter": true, "includes_adapter_layer_norm": false, ...}

Keys name no language, so a file can be loaded under another code.

The adapter LayerNorm is shared by every language of a layer (X-MOD's design), so it is NOT part
of a language by default: ``include_layer_norm=True`` stores it, and ``load_layer_norm=True``
overwrites the model's (changing every language's outputs, hence opt-in on both sides).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .adapters import _config, adapter_outputs, add_language

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
HEADER_KEY = "xmod_language_adapter"
# Architecture facts an adapter's weights only make sense under; all must match to load.
_MUST_MATCH = (
    "num_hidden_layers",
    "hidden_size",
    "bottleneck_size",
    "adapter_layers",
    "adapter_activation",
    "pre_norm",
    "adapter_layer_norm",
    "adapter_reuse_layer_norm",
    "ln_before_adapter",
)


def _architecture(model: nn.Module) -> dict[str, Any]:
    config = _config(model)
    mode = getattr(config, "adapter_mode", "modular")
    if mode != "modular":
        raise ValueError(
            f"adapter_mode={mode!r} has no per-language adapters; language adapter files need adapter_mode='modular'"
        )
    layers = sorted(index for index, _ in adapter_outputs(model))
    return {
        "num_hidden_layers": int(config.num_hidden_layers),
        "hidden_size": int(config.hidden_size),
        "bottleneck_size": int(config.adapter_bottleneck_size),
        "adapter_reduction_factor": config.adapter_reduction_factor,
        "adapter_layers": layers,
        "adapter_activation": getattr(config, "adapter_activation", None) or config.hidden_act,
        "pre_norm": bool(config.pre_norm),
        "adapter_layer_norm": bool(config.adapter_layer_norm),
        "adapter_reuse_layer_norm": bool(config.adapter_reuse_layer_norm),
        "ln_before_adapter": bool(config.ln_before_adapter),
    }


def save_language_adapter(
    model: nn.Module, code: str, path: str | os.PathLike, include_layer_norm: bool = False
) -> Path:
    """Write ``code``'s adapters from every adapter layer (and optionally the adapter LayerNorms) to ``path``."""
    config = _config(model)
    header = _architecture(model)
    if code not in config.languages:
        raise ValueError(f"unknown language {code!r}; this model has {list(config.languages)}")
    if include_layer_norm and not config.adapter_layer_norm:
        raise ValueError(
            "include_layer_norm=True but this model has no adapter_layer_norm (adapter_layer_norm=False)"
        )
    tensors: dict[str, torch.Tensor] = {}
    for index, output in adapter_outputs(model):
        for name, tensor in output.adapter_modules[code].state_dict().items():
            tensors[f"layers.{index}.adapter.{name}"] = tensor.detach().to("cpu").contiguous().clone()
        if include_layer_norm:
            for name, tensor in output.adapter_layer_norm.state_dict().items():
                tensors[f"layers.{index}.adapter_layer_norm.{name}"] = (
                    tensor.detach().to("cpu").contiguous().clone()
                )
    header.update(
        format_version=FORMAT_VERSION,
        language=code,
        includes_adapter_layer_norm=include_layer_norm,
        dtype=str(next(iter(tensors.values())).dtype).removeprefix("torch."),
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": "pt", HEADER_KEY: json.dumps(header, sort_keys=True)})
    return path


def read_language_adapter_header(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON header of a language adapter file (ValueError if the file is not one)."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if HEADER_KEY not in metadata:
        raise ValueError(
            f"{path} is a safetensors file but not an xmod-lab language adapter (no {HEADER_KEY!r} header)"
        )
    header = json.loads(metadata[HEADER_KEY])
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{path} has language adapter format_version {version}; this xmod-lab reads version {FORMAT_VERSION}"
        )
    return header


def load_language_adapter(
    model: nn.Module, path: str | os.PathLike, code: str | None = None, load_layer_norm: bool = False
) -> str:
    """Load a language adapter file into ``model`` as ``code`` (default: the file's language); returns the code.

    A language the model lacks is added (``add_language``) at the end of ``config.languages``; an
    existing one is overwritten. A file made for another architecture is refused with every
    mismatching field named.
    """
    header = read_language_adapter_header(path)
    ours = _architecture(model)
    mismatches = [
        f"{key}: file {header.get(key)!r}, model {ours[key]!r}"
        for key in _MUST_MATCH
        if header.get(key) != ours[key]
    ]
    if mismatches:
        raise ValueError(
            f"language adapter {path} ({header.get('language')}) does not fit this model: "
            + "; ".join(mismatches)
        )
    if load_layer_norm and not header.get("includes_adapter_layer_norm"):
        raise ValueError(
            f"load_layer_norm=True but {path} holds no adapter LayerNorm (saved without include_layer_norm)"
        )

    with safe_open(str(path), framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    # Check every tensor before touching the model, so a bad file leaves it unchanged.
    expected: dict[str, torch.Size] = {}
    for index, output in adapter_outputs(model):
        template = next(iter(output.adapter_modules.values()))
        expected.update({f"layers.{index}.adapter.{k}": v.shape for k, v in template.state_dict().items()})
        if header.get("includes_adapter_layer_norm"):
            norm = output.adapter_layer_norm.state_dict()
            expected.update({f"layers.{index}.adapter_layer_norm.{k}": v.shape for k, v in norm.items()})
    if set(tensors) != set(expected):
        missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
        raise ValueError(
            f"{path} does not hold the expected tensors: missing {missing[:5]}, unexpected {extra[:5]}"
        )
    bad = [
        f"{k} {tuple(t.shape)} (model {tuple(expected[k])})"
        for k, t in tensors.items()
        if t.shape != expected[k]
    ]
    if bad:
        raise ValueError(f"{path} has tensors of the wrong shape: {bad[:5]}")

    code = code or header["language"]
    config = _config(model)
    added = code not in config.languages
    if added:
        add_language(model, code)
    with torch.no_grad():
        for index, output in adapter_outputs(model):
            _copy_into(output.adapter_modules[code], tensors, f"layers.{index}.adapter.")
            if load_layer_norm:
                _copy_into(output.adapter_layer_norm, tensors, f"layers.{index}.adapter_layer_norm.")
    if header.get("includes_adapter_layer_norm") and not load_layer_norm:
        logger.info(
            "%s holds adapter LayerNorms; kept the model's (pass load_layer_norm=True to load them)", path
        )
    logger.info("%s language %s from %s", "added" if added else "replaced", code, path)
    return code


def _copy_into(module: nn.Module, tensors: dict[str, torch.Tensor], prefix: str) -> None:
    for name, target in module.state_dict(keep_vars=True).items():
        target.data.copy_(tensors[prefix + name])
