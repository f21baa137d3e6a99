"""Run-directory names and failure markers; stdlib + OmegaConf only, so the command line stays fast.

Names (conf/hydra/default.yaml)::

    outputs/<name>/runs/<time>_<overrides>            xmod-train freeze=paper  ->  ..._freeze-paper
    outputs/<name>/multiruns/<time>/<n>_<swept>       xmod-train -m adapter.adapter_reduction_factor=2,4
                                                      ->  .../0_adapter_reduction_factor-2, 1_adapter_reduction_factor-4

A run directory is claimed with an exclusive ``mkdir``: two runs started in the same second get
``<time>_<overrides>`` and ``<time>_<overrides>-2``, never one shared directory.

A run that fails before it wrote its ``config.yaml`` (a bad value, a missing file) leaves no run
directory when the directory was created for it; any other failed run gets ``run_failed`` (the error
and its traceback, also appended to the run's log).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import time
import traceback
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

FAILED = "run_failed"
CONFIG = "config.yaml"
# keys that say where things are, not what the run is: left out of directory names
_NOT_IN_NAME = ("hydra.", "paths.", "ckpt_path", "export_dir", "name", "tags", "logger")
_MAX_NAME = 60
_CLAIMED: dict[tuple[str, str], str] = {}  # (parent, name) -> directory: resolved once per process
_CREATED_PARENTS: list[Path] = []  # folders claim() created above run directories (outputs/<name>/runs), deepest first


def override_summary(overrides: Iterable[str], keys: set[str] | None = None, max_len: int = _MAX_NAME) -> str:
    """``freeze-paper+reduction_factor-4``: the overrides (of ``keys`` if given), short and safe both as a
    file name and inside a Hydra override (``ckpt_path=<run>/...`` needs no quotes: no ``=`` or ``,``).

    Each override keeps its last key component (``adapter.adapter_reduction_factor=4`` -> ``adapter_reduction_factor-4``);
    paths and output settings are left out; too long a summary ends in ``+<n>more``.
    """
    parts = []
    for override in overrides:
        key, sep, value = str(override).partition("=")
        key = key.lstrip("+~")
        if not sep or (keys is not None and key not in keys) or key.startswith(_NOT_IN_NAME):
            continue
        value = re.sub(r"[^A-Za-z0-9._]+", "-", value).strip("-")
        parts.append(f"{key.rsplit('.', 1)[-1]}-{value}")
    text = ""
    for i, part in enumerate(parts):
        rest = f"+{len(parts) - i}more"
        candidate = f"{text}+{part}" if text else part
        if len(candidate) > max_len - (len(rest) if i + 1 < len(parts) else 0):
            return f"{text}{rest}" if text else rest.lstrip("+")
        text = candidate
    return text


def claim(parent: str | os.PathLike, name: str) -> str:
    """``parent/name`` (else ``name-2``, ``name-3``, ...) created by this call: a directory no other run has."""
    key = (str(parent), name)
    if key not in _CLAIMED:
        missing = [p for p in (Path(parent), *Path(parent).parents) if not p.exists()]
        Path(parent).mkdir(parents=True, exist_ok=True)
        _CREATED_PARENTS.extend(missing)
        for n in range(1, 10_000):
            path = Path(parent) / (name if n == 1 else f"{name}-{n}")
            try:
                path.mkdir()
            except FileExistsError:
                continue
            _CLAIMED[key] = str(path)
            break
        else:
            raise FileExistsError(f"no free run directory name under {parent} for {name}")
    return _CLAIMED[key]


def new_run_dir(parent: str, overrides: Sequence[str]) -> str:
    """Resolver ``xmod_run_dir``: a fresh ``<parent>/<time>_<overrides>`` directory."""
    summary = override_summary(overrides)
    return claim(parent, time.strftime("%Y-%m-%d_%H-%M-%S") + (f"_{summary}" if summary else ""))


def new_sweep_dir(parent: str) -> str:
    """Resolver ``xmod_sweep_dir``: a fresh ``<parent>/<time>`` directory."""
    return claim(parent, time.strftime("%Y-%m-%d_%H-%M-%S"))


def job_subdir(num: Any, overrides: Sequence[str], sweep_dir: str) -> str:
    """Resolver ``xmod_job_subdir``: ``<job number>_<the values this job gives the swept keys>``."""
    summary = override_summary(overrides, swept_keys(sweep_dir) or None)
    return f"{num}_{summary}" if summary else str(num)


def swept_keys(sweep_dir: str | os.PathLike) -> set[str]:
    """The keys a sweep varies: its command-line sweeps (``a=1,2``) and the sweeper's ``params``, read
    from the sweep's ``multirun.yaml``; empty when the sweeper wrote none."""
    saved = Path(sweep_dir) / "multirun.yaml"
    if not saved.is_file():
        return set()
    hydra_cfg = OmegaConf.load(saved).hydra
    keys = {str(k) for k in (OmegaConf.select(hydra_cfg, "sweeper.params") or {})}
    parsed = OverridesParser.create().parse_overrides([str(o) for o in hydra_cfg.overrides.task])
    return keys | {o.key_or_group for o in parsed if o.is_sweep_override()}


def register_resolvers() -> None:
    for name, fn in (("xmod_run_dir", new_run_dir), ("xmod_sweep_dir", new_sweep_dir),
                     ("xmod_job_subdir", job_subdir)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn, use_cache=True)


def is_global_rank_zero() -> bool:
    return all(os.environ.get(var, "0") == "0" for var in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def record_failure(out_dir: str | os.PathLike, error: BaseException, discard: bool = True) -> str:
    """Mark ``out_dir`` as the directory of a failed run; returns what was done ("removed" / "marked").

    ``discard``: a directory this process created that holds nothing but Hydra's files and the log (the
    run failed before ``config.yaml``) is removed instead; the message on the console is all there was.
    """
    out = Path(out_dir)
    if not out.is_dir() or not is_global_rank_zero():
        return "nothing"
    own = str(out) in _CLAIMED.values()
    if discard and own and not (out / CONFIG).exists() and all(  # the model's tokenizer/ is written first
        p.name in (".hydra", "tokenizer") or p.suffix == ".log" for p in out.iterdir()
    ):
        shutil.rmtree(out, ignore_errors=True)
        for parent in _CREATED_PARENTS:  # outputs/<name>/runs made for this run only: gone with it
            with contextlib.suppress(OSError):
                parent.rmdir()  # only if empty
        return "removed"
    # Lightning turns Ctrl-C into a graceful shutdown and sys.exit(1)
    interrupted = isinstance(error, KeyboardInterrupt) or isinstance(error.__context__, KeyboardInterrupt)
    what = "interrupted (Ctrl-C)" if interrupted else f"{type(error).__name__}: {error}"
    trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    (out / FAILED).write_text(f"{what}\n\n{trace}")
    record = logging.LogRecord("xmod_lab", logging.ERROR, __file__, 0, "run failed: %s\n%s", (what, trace), None)
    for handler in logging.getLogger().handlers:  # the run's log file only: the console gets one message
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == out.resolve():
            handler.handle(record)
    return "marked"
