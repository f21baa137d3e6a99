"""Lightning checkpoints that can be trusted: complete or absent, `last.ckpt` always the latest state, loaded
without running code from the file, and carrying the tokenizer the weights were trained with.

- :class:`XmodCheckpoint`: Lightning's ModelCheckpoint, writing every file under a hidden temporary name and
  renaming it into place (a kill or a full disk never leaves a truncated file under a real name), and
  rewriting `last.ckpt` at every epoch end and every `last_every_n_train_steps` steps, not only when the
  monitored metric improves. When a best checkpoint was just written at the same step, `last.ckpt` becomes a hard
  link to it (the same bytes a second write would produce, without serialising and writing them again).
- :class:`TokenizerRecord`: puts the tokenizer's files and fingerprint into every checkpoint.
- :func:`load_checkpoint` / :func:`safe_loading`: `torch.load(weights_only=True)` with the few non-tensor
  types a Lightning checkpoint of this project holds allowed, nothing else.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import shutil
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
        link_last: `last.ckpt` due at the step a best checkpoint was just written (an improving epoch) is a hard
            link to that file (a copy where the filesystem has no hard links) instead of a second write of the
            same state; single-process runs with file checkpoints only. False: always write it.
        The other arguments are ModelCheckpoint's.
    """

    def __init__(self, *args: Any, last_every_n_train_steps: int | None = DEFAULT_LAST_EVERY_N_TRAIN_STEPS,
                 link_last: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.link_last = link_last
        # the last file written in full: (global step, path, last_model_path it recorded), see _save_checkpoint
        self._written: tuple[int, str, str] | None = None
        if last_every_n_train_steps is not None and last_every_n_train_steps < 0:
            raise ValueError(f"last_every_n_train_steps={last_every_n_train_steps}: use a positive number, "
                             "or 0 / null for epoch ends only")
        self.last_every_n_train_steps = last_every_n_train_steps or 0
        self._latest_step: int | None = None
        self._restoring_fit = True  # set by on_load_checkpoint: whether a fit (resume) restores this state

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if trainer.is_global_zero and self.dirpath:
            remove_partial_files(self.dirpath)

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        if self._same_state_as_written(trainer, filepath):
            assert self._written is not None
            partial = partial_path(filepath)
            _link_or_copy(self._written[1], partial)
            os.replace(partial, filepath)
            self._saved(trainer, filepath)
            return
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
        # what this file records of this callback: last.ckpt due at this step holds the same only if this matches
        self._written = (trainer.global_step, filepath, self.last_model_path)
        self._saved(trainer, filepath)

    def _saved(self, trainer: L.Trainer, filepath: str) -> None:
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))

    def _same_state_as_written(self, trainer: L.Trainer, filepath: str) -> bool:
        """Whether ``filepath`` (last.ckpt being saved) would hold exactly the state of the file last written: the same
        step, and that file already recorded ``last_model_path`` as ``filepath`` (nothing else of the run changes
        between the best checkpoint's write and last.ckpt's at one step; the first one is made so by
        :meth:`_save_topk_checkpoint`). One process only (ranks would need to agree), a file (not a sharded directory)."""
        written = self._written
        return (self.link_last and trainer.world_size == 1 and filepath == self.last_model_path
                and written is not None and written[0] == trainer.global_step and written[1] != filepath
                and written[2] == filepath and Path(written[1]).is_file())

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

    # -- resuming: the run's memory (best checkpoint, best score, top-k) comes along --------------------------

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        """Before Lightning restores this callback's state (``load_state_dict``) on resume: bring the previous
        run's top-k checkpoints into this run's directory and point the state at them.

        A resumed run writes into its own run directory, and Lightning drops ``best_model_score`` and the top-k
        of a checkpoint written in another directory ("The dirpath has changed ..."): the first validation after
        resuming would become "best" and the run would test it, not the best checkpoint over the whole run."""
        state = (checkpoint.get("callbacks") or {}).get(self.state_key)
        self._restoring_fit = trainer.state.fn == TrainerFn.FITTING
        if not self._restoring_fit or not state or not self.dirpath:
            return
        old_dir = state.get("dirpath")
        if not old_dir or Path(old_dir).resolve() == Path(self.dirpath).resolve():
            return
        resumed_from = Path(trainer.ckpt_path).parent if trainer.ckpt_path else None
        scores = adopt_checkpoints(state, Path(self.dirpath), resumed_from, trainer.is_global_zero)
        trainer.strategy.barrier("XmodCheckpoint.adopt")
        # the ranking as Lightning keeps it (ModelCheckpoint._update_best_and_save), over the files still there
        best, worst = (max, min) if self.mode == "max" else (min, max)
        state["best_k_models"] = scores
        state["best_model_path"] = best(scores, key=scores.get) if scores else ""
        state["best_model_score"] = scores[state["best_model_path"]] if scores else None
        full = len(scores) == self.save_top_k
        state["kth_best_model_path"] = worst(scores, key=scores.get) if full else ""
        state["kth_value"] = scores[state["kth_best_model_path"]] if full else self.kth_value
        state["last_model_path"] = ""  # this run writes its own last.ckpt
        state["dirpath"] = self.dirpath
        if scores:
            log.info("resumed: the previous run's best checkpoint(s) %s are in %s (best %s: %.4f)",
                     [Path(p).name for p in scores], self.dirpath, self.monitor, float(state["best_model_score"]))

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # trainer.test(ckpt_path=<best>) restores callbacks too: the tested file's bookkeeping (as of when it
        # was written, possibly in another directory) must not replace this run's
        if self._restoring_fit:
            super().load_state_dict(state_dict)

    def _save_topk_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, torch.Tensor]) -> None:
        # Resuming from a checkpoint written at an epoch end, Lightning runs that epoch's end hooks again
        # before any validation: there is no score to rank then (its warning "could not find the monitored
        # key" would be false), and the restored top-k already holds that epoch's checkpoint.
        if (self.monitor is not None and self.monitor not in monitor_candidates
                and not trainer.fit_loop.epoch_loop.val_loop._has_run and trainer.fit_loop.restarting):
            return
        if self.save_last and self.link_last and not self.last_model_path:
            # the first best checkpoint records last.ckpt's path as every later one does (Lightning sets it just
            # before writing last.ckpt, at this same step), so that last.ckpt can be a link to it. Not where an
            # old last.ckpt exists: Lightning then names the new one last-v1.ckpt
            last = self.format_checkpoint_name(monitor_candidates, self.CHECKPOINT_NAME_LAST)
            if not self.file_exists(last, trainer):
                self.last_model_path = last
        super()._save_topk_checkpoint(trainer, monitor_candidates)


def adopt_checkpoints(state: Mapping[str, Any], new_dir: Path, resumed_from: Path | None,
                      write: bool) -> dict[str, Any]:
    """The top-k checkpoints a ModelCheckpoint ``state`` names, hard-linked (or copied) into ``new_dir`` under
    their own names: ``{new path: score}``. Each is looked for where the state says, then beside the checkpoint
    resumed from (a run directory that was moved); one found nowhere is left out, with a warning.
    ``write``: this rank writes the files (global rank 0)."""
    adopted: dict[str, Any] = {}
    for path, score in (state.get("best_k_models") or {}).items():
        candidates = [Path(path), *([resumed_from / Path(path).name] if resumed_from else [])]
        found = next((c for c in candidates if c.exists()), None)  # a file, or a directory (sharded)
        if found is None:
            log.warning("resumed: the previous run's checkpoint %s (%s = %s) is missing; the run can only test "
                        "the checkpoints it still has", path, state.get("monitor"), score)
            continue
        target = new_dir / found.name
        if write and not target.exists():
            new_dir.mkdir(parents=True, exist_ok=True)
            if found.is_dir():
                shutil.copytree(found, partial_path(target), copy_function=_link_or_copy)
            else:
                _link_or_copy(found, partial_path(target))
            os.replace(partial_path(target), target)
        adopted[str(target)] = score
    return adopted


def _link_or_copy(source: str | Path, target: str | Path) -> None:
    """A hard link (no space, no time), or a copy where the two paths are on different filesystems."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


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
