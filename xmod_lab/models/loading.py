"""Checkpoint IO: local directories and Hugging Face hub ids, safetensors or pytorch_model.bin, and the
quirks of the hub's X-MOD files (extra position_ids buffer, no tied decoder keys, no pooler, bare-model
files without the ``roberta.`` prefix). The only module that knows foreign key names.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .configuration import CONFIG_NAME, XmodConfig

logger = logging.getLogger(__name__)

SAFETENSORS_NAME = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_NAME = "pytorch_model.bin"
TORCH_INDEX = "pytorch_model.bin.index.json"
WEIGHT_PATTERNS = [
    CONFIG_NAME,
    "*.safetensors",
    SAFETENSORS_INDEX,
    TORCH_NAME,
    TORCH_INDEX,
    "pytorch_model-*.bin",
]

# Buffers old transformers versions saved; they are recomputed, never loaded.
_OBSOLETE_SUFFIXES = ("embeddings.position_ids", "embeddings.token_type_ids")
# Task heads: missing ones are freshly initialised (a warning), other heads' keys are dropped (a warning).
_HEAD_PREFIXES = ("lm_head.", "classifier.", "qa_outputs.")
_POOLER_PREFIX = "pooler."


def resolve_checkpoint_dir(
    name_or_path: str | os.PathLike, allow_patterns: list[str] | None = None, revision: str | None = None
) -> Path:
    """A local directory as is; anything else is a hub id fetched with ``snapshot_download``.

    ``snapshot_download`` serves the local cache when ``HF_HUB_OFFLINE=1``.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    name = str(name_or_path)
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise FileNotFoundError(
            f"{name!r} is not a checkpoint directory (nor a hub id like 'facebook/xmod-base')"
        )
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                repo_id=name, allow_patterns=allow_patterns or WEIGHT_PATTERNS, revision=revision
            )
        )
    except Exception as err:  # offline without cache, unknown repo, ...
        raise OSError(
            f"Could not fetch {name!r} from the Hugging Face hub ({type(err).__name__}: {err}). Pass a local "
            "directory holding config.json and model.safetensors, or pre-download it into the HF cache."
        ) from err


def read_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint directory (single or sharded, safetensors preferred)."""
    if (directory / SAFETENSORS_NAME).is_file():
        return load_file(directory / SAFETENSORS_NAME)
    for index_name, reader in ((SAFETENSORS_INDEX, load_file), (TORCH_INDEX, _torch_load)):
        index = directory / index_name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(reader(directory / shard))
            return state
    if (directory / TORCH_NAME).is_file():
        return _torch_load(directory / TORCH_NAME)
    raise FileNotFoundError(f"no {SAFETENSORS_NAME} or {TORCH_NAME} (nor a sharded index) in {directory}")


def _torch_load(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def to_model_keys(state: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Rename checkpoint keys to ``model``'s: add or strip the ``roberta.`` prefix, drop obsolete buffers."""
    prefix = getattr(model, "base_model_prefix", "roberta") + "."
    has_base = hasattr(model, prefix[:-1])
    out = {}
    for key, tensor in state.items():
        if key.endswith(_OBSOLETE_SUFFIXES):
            continue
        if has_base and not key.startswith(prefix) and not key.startswith(_HEAD_PREFIXES):
            key = prefix + key  # bare-model file into a head class
        elif not has_base and key.startswith(prefix):
            key = key[len(prefix) :]  # head-class file into the bare model
        out[key] = tensor
    return out


@contextlib.contextmanager
def skip_init() -> Iterator[None]:
    """Build a model without the random init its weights are about to replace."""
    from . import heads

    previous = heads._SKIP_INIT[0]
    heads._SKIP_INIT[0] = True
    try:
        yield
    finally:
        heads._SKIP_INIT[0] = previous


def _is_head_key(key: str, model: torch.nn.Module) -> bool:
    bare = key.split(".", 1)[1] if key.startswith("roberta.") else key
    return key.startswith(_HEAD_PREFIXES) or bare.startswith(_POOLER_PREFIX)


def load_state_dict_into(
    model: torch.nn.Module, state: dict[str, torch.Tensor], ignore_mismatched_sizes: bool = False
) -> list[str]:
    """Copy ``state`` into ``model``; returns the keys that were newly initialised.

    Missing or unexpected task-head/pooler keys are the normal result of loading a checkpoint into
    another head class (a warning); anything else, or a shape mismatch, raises naming the keys.
    """
    state = to_model_keys(state, model)
    own = model.state_dict()
    tied = set()
    if getattr(model, "lm_head", None) is not None:
        tied.add("lm_head.decoder.bias")  # always lm_head.bias
        if model.config.tie_word_embeddings:
            tied.add("lm_head.decoder.weight")
    missing = [k for k in own if k not in state and k not in tied]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        (k, tuple(state[k].shape), tuple(own[k].shape))
        for k in state
        if k in own and state[k].shape != own[k].shape
    ]
    if mismatched and ignore_mismatched_sizes:
        head_mismatch = [m for m in mismatched if _is_head_key(m[0], model)]
        if len(head_mismatch) != len(mismatched):
            bad = [m for m in mismatched if m not in head_mismatch]
            raise ValueError(f"ignore_mismatched_sizes only covers task heads; encoder shapes differ: {bad}")
        for key, _, _ in mismatched:
            state.pop(key)
            missing.append(key)
        mismatched = []
    if mismatched:
        lines = "\n".join(f"  {k}: checkpoint {a} vs model {b}" for k, a, b in mismatched)
        raise ValueError(
            f"Checkpoint shapes do not match the model config:\n{lines}\nCheck the config (hidden_size, "
            "vocab_size, num_labels, adapter_reduction_factor...), or pass ignore_mismatched_sizes=True to "
            "re-initialise a task head of a different size"
        )
    bad_missing = [k for k in missing if not _is_head_key(k, model)]
    bad_unexpected = [k for k in unexpected if not _is_head_key(k, model)]
    if bad_missing or bad_unexpected:
        raise ValueError(
            "Checkpoint keys do not match the model:\n"
            f"  missing from the checkpoint: {bad_missing}\n  not in the model: {bad_unexpected}\n"
            "Check that the config matches the checkpoint (languages, adapter_layers, adapter_mode, "
            "pre_norm, adapter_layer_norm, num_hidden_layers, position_embedding_type)."
        )
    if unexpected:
        logger.warning(
            "Dropping checkpoint weights the %s does not use: %s", type(model).__name__, unexpected
        )
    if missing:
        logger.warning(
            "Newly initialised weights of %s (not in the checkpoint; train them before use): %s",
            type(model).__name__,
            missing,
        )
    with torch.no_grad():
        for key, tensor in state.items():
            if key in own:
                own[key].copy_(tensor)
    _init_missing(model, missing)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    return missing


def _init_missing(model: torch.nn.Module, missing: list[str]) -> None:
    modules = dict(model.named_modules())
    for key in missing:
        owner = key.rsplit(".", 1)[0]
        module = modules.get(owner)
        if module is not None:
            model._init_weights(module)


def load_pretrained(
    cls: type,
    name_or_path: str | os.PathLike,
    *,
    config: XmodConfig | None = None,
    dtype: torch.dtype | None = None,
    ignore_mismatched_sizes: bool = False,
    revision: str | None = None,
    **config_overrides: Any,
):
    """Build ``cls`` from a checkpoint directory or hub id (see XmodPreTrainedModel.from_pretrained)."""
    if "torch_dtype" in config_overrides:  # transformers' older spelling
        dtype = config_overrides.pop("torch_dtype")
    directory = resolve_checkpoint_dir(name_or_path, revision=revision)
    model_kwargs = {}
    if "add_pooling_layer" in config_overrides:  # a constructor argument of XmodModel, not a config field
        model_kwargs["add_pooling_layer"] = config_overrides.pop("add_pooling_layer")
    if config is None:
        config = XmodConfig.from_pretrained(directory, **config_overrides)
    elif config_overrides:
        config = XmodConfig.from_dict(config.to_dict(), **config_overrides)
    state = read_state_dict(directory)
    with skip_init():
        model = cls(config, **model_kwargs)
    load_state_dict_into(model, state, ignore_mismatched_sizes=ignore_mismatched_sizes)
    if dtype is not None:
        model = model.to(dtype)
    model.eval()  # as transformers: dropout off until the caller calls .train()
    return model


def save_pretrained(model: torch.nn.Module, save_directory: str | os.PathLike) -> Path:
    """config.json (with ``architectures``) + model.safetensors, without tied duplicates."""
    directory = Path(save_directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = model.config.copy()
    config.architectures = [type(model).__name__]
    # Non-default ablation fields: transformers would build another model; say so in the file too.
    from .adapters import TRANSFORMERS_NOTE_KEY, warn_if_transformers_incompatible

    reasons = warn_if_transformers_incompatible(config)
    config.__dict__.pop(TRANSFORMERS_NOTE_KEY, None)
    if reasons:
        setattr(config, TRANSFORMERS_NOTE_KEY, reasons)
    config.save_pretrained(directory)
    state = model.state_dict()
    if getattr(model, "lm_head", None) is not None:
        state.pop("lm_head.decoder.bias", None)  # = lm_head.bias
        if model.config.tie_word_embeddings:
            state.pop("lm_head.decoder.weight", None)  # = the word embeddings
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    save_file(tensors, directory / SAFETENSORS_NAME, metadata={"format": "pt"})
    return directory
