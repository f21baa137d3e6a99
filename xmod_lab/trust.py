"""What a file handed to xmod-train / xmod-eval may make them do: choose among xmod-lab's options, never run code.

A checkpoint, the run directory around it (its ``config.yaml``) and an exported model directory are data. Before
any pre-training, data preparation or run directory, :func:`check_handed_over` refuses, with one line naming the
file and the reason:

- a checkpoint that needs code to unpickle, hyper-parameters that name a callable (``_target_``, Lightning's
  ``_instantiator``) or enable remote code, a tokenizer record holding code (``.py``, ``auto_map``) or files
  that are not tokenizer files;
- an exported directory with code (``.py``, ``auto_map``) or weights that need code to unpickle.

:func:`check_reused_config` does the same for the groups xmod-eval reuses from a run's ``config.yaml``: each
``_target_`` must be exactly the dotted name of one of xmod-lab's own tasks or datamodules (the names its
shipped config groups use, or the defining module's name); compared as text, never imported to be checked, so
``xmod_lab.checkpoints.torch.load`` is not a name of xmod-lab's. No Hydra instantiation keys beyond
``_target_`` (``_args_``, ``_partial_``, ...), no argument that enables remote code or unpickling, no resolver
(``${xmod_run_dir:...}`` creates directories) anywhere in the file.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from xmod_lab.checkpoints import TOKENIZER_KEY, load_checkpoint
from xmod_lab.data.tokenizer import check_model_directory, check_tokenizer_files
from xmod_lab.models.checkpoint_checks import check_weight_files

CONF_DIR = Path(__file__).resolve().parent / "conf"
# The groups whose `_target_` a reused config.yaml may set, and the shipped config groups that list their options
TARGET_GROUPS = {"task": "task", "data": "data"}
# Hydra's instantiation keys other than _target_: a file handed over may not use them
HYDRA_KEYS = ("_args_", "_partial_", "_recursive_", "_convert_")
# Arguments that would let a loaded file run code: refused at any depth when set to the value given here
UNSAFE_ARGUMENTS: dict[str, Any] = {"trust_remote_code": True, "weights_only": False, "allow_pickle": True,
                                    "_instantiator": None}
_RESOLVER = re.compile(r"\$\{\s*([\w.]+)\s*:")


@functools.cache
def own_targets(group: str) -> frozenset[str]:
    """The exact dotted names a `group` (task | data) `_target_` may have: those of xmod-lab's shipped
    ``conf/<group>/*.yaml``, and each object's name in its defining module."""
    names = set()
    for path in sorted((CONF_DIR / group).glob("*.yaml")):
        target = OmegaConf.load(path).get("_target_")
        if target:
            obj = get_object(str(target))  # a shipped config's name: importing it is what xmod-train does
            names |= {str(target), f"{obj.__module__}.{obj.__qualname__}"}
    return frozenset(names)


def _refuse(where: str, path: str, why: str) -> ValueError:
    return ValueError(f"{where}: {path} refused: {why}")


def check_reused_config(saved: DictConfig, where: str, groups: list[str]) -> None:
    """Refuse a config.yaml that came with a checkpoint (``where``) if the ``groups`` xmod-eval takes from it could
    run code. Read as written (interpolations stay text): nothing in the file is evaluated first."""
    raw = OmegaConf.to_container(saved, resolve=False)
    _check_no_resolvers(raw, where, "")
    for group in groups:
        if isinstance(raw, dict) and group in raw:
            allowed = own_targets(TARGET_GROUPS[group]) if group in TARGET_GROUPS else frozenset()
            if isinstance(raw[group], dict):
                _check_node(raw[group], where, group, allowed, top=True)


def _check_no_resolvers(node: Any, where: str, path: str) -> None:
    for _key, value, child in _children(node, path):
        found = _RESOLVER.search(value) if isinstance(value, str) else None
        if found:
            raise _refuse(where, child, f"{value!r} calls the resolver {found[1]!r}; a config "
                          "handed over with a checkpoint is read as plain values, resolvers are not evaluated")
        _check_no_resolvers(value, where, child)


def _children(node: Any, path: str) -> list[tuple[Any, Any, str]]:
    """(key, value, dotted path) of a mapping's or a list's items."""
    if isinstance(node, Mapping):
        return [(k, v, f"{path}.{k}" if path else str(k)) for k, v in node.items()]
    if isinstance(node, list | tuple):
        return [(i, v, f"{path}[{i}]") for i, v in enumerate(node)]
    return []


def _check_node(node: Any, where: str, path: str, allowed: frozenset[str], top: bool = False) -> None:
    for key, value, child in _children(node, path):
        if key == "_target_":
            if not top or str(value) not in allowed:
                what = "a nested _target_" if not top else f"_target_={value!r}"
                raise _refuse(where, child, f"{what} is not one of xmod-lab's own tasks or datamodules (the "
                              "exact names in xmod_lab/conf/task, conf/data); choose the group on the command line "
                              "instead (task=..., data=...)")
        elif key in HYDRA_KEYS:
            raise _refuse(where, child, "Hydra's instantiation keys are not read from a file handed over")
        elif key in UNSAFE_ARGUMENTS and (UNSAFE_ARGUMENTS[key] is None or value == UNSAFE_ARGUMENTS[key]
                                           or isinstance(value, str)):
            raise _refuse(where, child, f"{key}={value!r} would let a loaded file run code "
                          "(remote code and unpickling are refused)")
        _check_node(value, where, child, allowed)


def check_hyperparameters(hparams: Mapping[str, Any], where: str) -> None:
    """A checkpoint's saved hyper-parameters are plain values: no `_target_`, no Lightning `_instantiator`, no
    argument enabling remote code or unpickling."""
    _check_node(hparams, where, "hyper_parameters", frozenset())


def check_checkpoint(path: str | Path, checkpoint: Mapping[str, Any] | None = None) -> None:
    """A checkpoint handed over loads without code: weights_only unpickling, plain hyper-parameters, a tokenizer
    record of tokenizer files only. ``checkpoint``: the file's contents when the caller has read them already
    (with ``load_checkpoint``, the weights_only reader), so the file is not read again."""
    if checkpoint is None:
        checkpoint = load_checkpoint(path, mmap=True)
    hparams = checkpoint.get("hyper_parameters") or {}
    check_hyperparameters(hparams, str(path))
    model = hparams.get("model")
    if "model_config" not in hparams and isinstance(model, Mapping):  # rebuilt from model.pretrained then
        check_pretrained(model.get("pretrained"))
    record = checkpoint.get(TOKENIZER_KEY)
    if record is not None:
        files = record.get("files") if isinstance(record, Mapping) else None
        if not isinstance(files, Mapping) or not all(isinstance(v, bytes) for v in files.values()):
            raise ValueError(f"{path}: refused: its {TOKENIZER_KEY} record is not a mapping of file names to bytes")
        check_tokenizer_files(files, path)


def check_pretrained(source: str | None) -> None:
    """An exported (local) model directory: no code, weights of tensors only. A hub id is checked as it loads."""
    if source and Path(source).expanduser().is_dir():
        folder = Path(source).expanduser()
        check_model_directory(folder)
        check_weight_files(folder)


def check_handed_over(cfg: DictConfig, checkpoint: Mapping[str, Any] | None = None) -> None:
    """Every file-trust check of a run, before any work: its checkpoint (``ckpt_path``; ``checkpoint``: its
    contents, already read with ``load_checkpoint``), exported model directory (``model.pretrained``) and local
    tokenizer directory (``data.tokenizer``)."""
    if cfg.get("ckpt_path"):
        check_checkpoint(cfg.ckpt_path, checkpoint)
    check_pretrained(OmegaConf.select(cfg, "model.pretrained"))
    tokenizer = OmegaConf.select(cfg, "data.tokenizer")
    if isinstance(tokenizer, str) and Path(tokenizer).expanduser().is_dir():
        check_model_directory(Path(tokenizer).expanduser())
