"""Lightning checkpoints that can be trusted: complete or absent, `last.ckpt` always the latest state, loaded
without running code from the file, and carrying the tokenizer the weights were trained with.

- :class:`XmodCheckpoint`: Lightning's ModelCheckpoint, writing every file under a hidden temporary name and
  renaming it into place (a kill or a full disk never leaves a truncated file under a real name), and
  rewriting `last.ckpt` at every epoch end and every `last_every_n_train_steps` steps, not only when the
  monitored metric improves.
- :class:`TokenizerRecord`: puts the tokenizer's files and fingerprint into every checkpoint.
- :func:`load_checkpoint` / :func:`safe_loading`: `torch.load(weights_only=True)` with the few non-tensor
  types a Lightning checkpoint of this project holds allowed, nothing else.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from weakref import proxy

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn

from xmod_lab.models.checkpoint_checks import unpickling_refused

log = logging.getLogger(__name__)

# The key under which a checkpoint carries its tokenizer: {"fingerprint": str, "files": {name: bytes}}.
TOKENIZER_KEY = "xmod_tokenizer"
# Bounds the training lost to a kill between epoch ends (~minutes of a base-size run on one GPU).
DEFAULT_LAST_EVERY_N_TRAIN_STEPS = 500


class XmodCheckpoint(ModelCheckpoint):
    """ModelCheckpoint with atomic writes and a `last.ckpt` that always holds the latest state.

    Args:
        last_every_n_train_steps: also rewrite `last.ckpt` every this many optimizer steps (mid-epoch);
            null or 0: only at epoch ends / validations. Needs `save_last: true`.
        The other arguments are ModelCheckpoint's.
    """

    def __init__(self, *args: Any, last_every_n_train_steps: int | None = DEFAULT_LAST_EVERY_N_TRAIN_STEPS,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if last_every_n_train_steps is not None and last_every_n_train_steps < 0:
            raise ValueError(f"last_every_n_train_steps={last_every_n_train_steps}: use a positive number, "
                             "or 0 / null for epoch ends only")
        self.last_every_n_train_steps = last_every_n_train_steps or 0
        self._latest_step: int | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if trainer.is_global_zero and self.dirpath:
            remove_partial_files(self.dirpath)

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        partial = partial_path(filepath)
        try:
            trainer.save_checkpoint(partial, self.save_weights_only)  # rank 0 writes, then a barrier
            if trainer.is_global_zero:
                os.replace(partial, filepath)
        except OSError as err:  # a full disk, a file too large, a quota: the message names the file
            if trainer.is_global_zero:
                Path(partial).unlink(missing_ok=True)
            reason = err.strerror or str(err)
            raise OSError(err.errno, f"could not write the checkpoint {filepath}: {reason}") from err
        except BaseException:
            if trainer.is_global_zero:
                Path(partial).unlink(missing_ok=True)
            raise
        trainer.strategy.barrier("XmodCheckpoint.rename")
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))

    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, torch.Tensor]) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        if self.save_last:
            self._latest_step = trainer.global_step

    def _save_latest(self, trainer: L.Trainer) -> None:
        """`last.ckpt` at the current step unless it already is; the top-k bookkeeping is left as it was, so
        a best checkpoint due at this same step is still written."""
        if (not self.save_last or bool(trainer.fast_dev_run) or trainer.state.fn != TrainerFn.FITTING
                or trainer.sanity_checking or self._latest_step == trainer.global_step):
            return
        step, saved = self._last_global_step_saved, self._last_checkpoint_saved
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        self._last_global_step_saved, self._last_checkpoint_saved = step, saved

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        n = self.last_every_n_train_steps
        if n and trainer.global_step % n == 0:
            self._save_latest(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        self._save_latest(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._save_latest(trainer)


def remove_partial_files(directory: str | Path) -> list[Path]:
    """Remove the temporary files a run killed while saving left in ``directory`` (never a checkpoint: each is
    renamed into place only once complete); returns them."""
    folder = Path(directory)
    leftovers = sorted(folder.glob(".*.ckpt.partial")) if folder.is_dir() else []
    for leftover in leftovers:
        leftover.unlink(missing_ok=True)
        log.info("removed %s (left by a save that was interrupted)", leftover)
    return leftovers


def partial_path(filepath: str | Path) -> str:
    """Where a checkpoint is written before it is renamed to `filepath`: hidden, and not ending in .ckpt."""
    path = Path(filepath)
    return str(path.with_name(f".{path.name}.partial"))


class TokenizerRecord(Callback):
    """Puts `record` (see `xmod_lab.data.tokenizer.tokenizer_record`) into every checkpoint under
    TOKENIZER_KEY, so a checkpoint evaluates with the tokenizer it was trained with, wherever it is copied."""

    def __init__(self, record: Mapping[str, Any]) -> None:
        self.record = dict(record)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        checkpoint[TOKENIZER_KEY] = self.record


def _safe_types() -> list[Any]:
    """The non-container, non-tensor types a checkpoint of ours may hold (Lightning writes its version as
    a str and metric scores as tensors; hyper-parameters are plain values, see tasks.common.plain)."""
    from lightning.fabric.utilities.data import AttributeDict

    return [AttributeDict]


@contextlib.contextmanager
def safe_loading() -> Iterator[None]:
    """A context in which `torch.load(weights_only=True)` accepts our checkpoints (and no code)."""
    with torch.serialization.safe_globals(_safe_types()):
        yield


def load_checkpoint(path: str | Path, mmap: bool = False) -> dict[str, Any]:
    """A Lightning checkpoint read with weights_only=True: a file that needs code to unpickle is refused
    with a clear error (it was not written by xmod-train, or it was tampered with)."""
    try:
        with safe_loading():
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # the UnpicklingError of weights_only, or a truncated/corrupt file
        raise ValueError(unsafe_checkpoint_message(path, err)) from err


def unsafe_checkpoint_message(path: str | Path, err: BaseException) -> str:
    if isinstance(err, pickle.UnpicklingError):
        return unpickling_refused(path, err)  # checkpoints written by xmod-train hold nothing else
    first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
    return f"{path}: not a readable checkpoint ({type(err).__name__}: {first}). Is the file complete?"
