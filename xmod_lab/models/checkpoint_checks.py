"""Does a checkpoint fit the model about to receive it? Checked from key names and shapes alone.

transformers initialises any weight a checkpoint lacks with a log line; for an X-MOD checkpoint
whose languages or adapter layout differ from the config that is a model that runs and gives wrong
numbers. Here only task heads and the pooler may be missing or extra (loading a checkpoint into
another head class); anything else, or a shape mismatch outside a head, raises naming the keys.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

# Task heads and the pooler: absent ones are freshly initialised, others' are dropped (transformers warns).
_HEAD_RE = re.compile(r"^(lm_head|classifier|qa_outputs)\.|(^|\.)pooler\.")
# Buffers old transformers versions saved; recomputed, never loaded.
_OBSOLETE_RE = re.compile(r"embeddings\.(position_ids|token_type_ids)$")


def unpickling_refused(path: str | os.PathLike, err: BaseException) -> str:
    """The one-line refusal of a file that ``torch.load(weights_only=True)`` would not read: what it would import."""
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
    what = f"it would import and call {found[1]}" if found else str(err).strip().splitlines()[-1][:200]
    return (f"{path}: unpickling refused: it holds objects beyond tensors and plain values, and unpickling them "
            f"could run code ({what}); only files of tensors and plain values are read")


def checkpoint_shapes(files: Iterable[str | os.PathLike]) -> dict[str, tuple[int, ...]]:
    """Key -> shape of every tensor in these checkpoint files, without reading safetensors data. A ``.bin`` that
    needs code to unpickle is refused (ValueError naming the file)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for path in files:
        path = str(path)
        if path.endswith(".safetensors"):
            with safe_open(path, framework="pt") as handle:
                shapes.update({k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()})
        else:  # pytorch_model.bin: memory-mapped, so only the shapes are touched
            try:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except pickle.UnpicklingError as err:
                raise ValueError(unpickling_refused(path, err)) from None
            if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
                raise ValueError(f"{path}: refused: not a state dict of tensors")
            shapes.update({k: tuple(v.shape) for k, v in state.items()})
    return shapes


def check_weight_files(directory: str | os.PathLike) -> None:
    """Every weight file of a model directory reads as tensors only (shapes read, data untouched)."""
    folder = Path(directory)
    if folder.is_dir():
        checkpoint_shapes(sorted(p for p in folder.iterdir() if p.suffix in (".bin", ".safetensors", ".pt", ".pth")))


def _to_model_key(key: str, prefix: str, has_base: bool) -> str:
    if has_base and not key.startswith(prefix) and not _HEAD_RE.search(key):
        return prefix + key  # bare-model file into a head class
    if not has_base and key.startswith(prefix):
        return key[len(prefix) :]  # head-class file into the bare model
    return key


def check_checkpoint_fits(
    model: nn.Module,
    state_dict: dict[str, torch.Tensor] | None,
    checkpoint_files: Iterable[str | os.PathLike] | None,
    ignore_mismatched_sizes: bool = False,
) -> None:
    """Raise a ValueError naming every encoder key the checkpoint lacks or adds, and every shape that differs."""
    if state_dict is not None:
        found = {k: tuple(v.shape) for k, v in state_dict.items()}
    else:
        found = checkpoint_shapes(checkpoint_files or [])
    prefix = model.base_model_prefix + "."
    has_base = hasattr(model, model.base_model_prefix)
    found = {
        _to_model_key(k, prefix, has_base): shape for k, shape in found.items() if not _OBSOLETE_RE.search(k)
    }
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    tied = set(getattr(model, "all_tied_weights_keys", {}) or {}) | {"lm_head.decoder.bias"}
    missing = [k for k in own if k not in found and k not in tied and not _HEAD_RE.search(k)]
    unexpected = [k for k in found if k not in own and not _HEAD_RE.search(k)]
    if missing or unexpected:
        raise ValueError(
            "Checkpoint keys do not match the model:\n"
            f"  missing from the checkpoint: {missing}\n  not in the model: {unexpected}\n"
            "Check that the config matches the checkpoint (languages, adapter_layers, adapter_mode, "
            "pre_norm, adapter_layer_norm, num_hidden_layers, position_embedding_type)."
        )
    mismatched = [(k, found[k], own[k]) for k in found if k in own and found[k] != own[k]]
    if ignore_mismatched_sizes:
        encoder = [m for m in mismatched if not _HEAD_RE.search(m[0])]
        if encoder:
            raise ValueError(f"ignore_mismatched_sizes only covers task heads; encoder shapes differ: {encoder}")
    elif mismatched:
        lines = "\n".join(f"  {k}: checkpoint {a} vs model {b}" for k, a, b in mismatched)
        raise ValueError(
            f"Checkpoint shapes do not match the model config:\n{lines}\nCheck the config (hidden_size, "
            "vocab_size, num_labels, adapter_reduction_factor...), or pass ignore_mismatched_sizes=True to "
            "re-initialise a task head of a different size"
        )
