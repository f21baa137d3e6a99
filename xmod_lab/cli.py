"""The ``xmod-train`` and ``xmod-eval`` commands: Hydra's command line, fast, with plain error messages.

Only Hydra and OmegaConf load here. The command itself (``xmod_lab.train:train``, ``xmod_lab.eval:evaluate``,
which bring torch and Lightning) is looked up by name once a config has composed, so ``--help``,
``--cfg job`` and a mistyped key answer in about a second instead of after every import.

- ``--help``: conf/hydra/help/<command>.yaml (what the command does, common commands, the other commands).
- ``-v`` / ``--verbose``: framework messages and data-cache lines too (``hydra/job_logging=verbose``).
- Errors: a config that does not compose, and the errors xmod-lab raises itself on bad input, print one
  message (with the closest valid key or option); anything else prints its traceback; with
  ``HYDRA_FULL_ERROR=1`` everything does.
- A run that fails: see ``xmod_lab.run_dir.record_failure`` (no directory, or one marked ``run_failed``).
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import inspect
import os
import re
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, InstantiationException, MissingConfigException
from hydra.types import RunMode
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import xmod_lab.conf.schema  # noqa: F401  (registers the schemas train.yaml / eval.yaml start from)
from xmod_lab import run_dir

COMMANDS = {"train": "xmod_lab.train:train", "eval": "xmod_lab.eval:evaluate"}
PACKAGE_DIR = Path(__file__).resolve().parent
HYDRA_DIR = Path(hydra.__file__).resolve().parent  # its usage errors ("Only one of --run, --cfg, ...")
# Exceptions xmod-lab raises on bad input (a value, a file, a language) or a run that cannot go on (a diverged
# loss, a full disk); printed without traceback when raised by xmod-lab's own code (the traceback is in the
# run's log and run_failed). The same types from inside a library are bugs until shown otherwise.
KNOWN_ERRORS = (ValueError, OSError, RuntimeError, KeyError, TypeError, FloatingPointError)
VERBOSE_FLAGS = ("-v", "--verbose")
# Framework warnings a user cannot act on (Lightning calling a deprecated torch API): shown with -v only
FRAMEWORK_WARNINGS = (r"`isinstance\(treespec, LeafSpec\)` is deprecated",)

run_dir.register_resolvers()


def train() -> None:
    """Console script ``xmod-train``."""
    main("train")


def evaluate() -> None:
    """Console script ``xmod-eval``."""
    main("eval")


def main(command: str) -> None:
    """Run Hydra's command line for ``command`` (train | eval) and turn failures into one clear message."""
    argv = [("hydra/job_logging=verbose" if a in VERBOSE_FLAGS else a) for a in sys.argv[1:]]
    if argv in (["--help"], ["-h"]):
        print(help_text(command))
        return
    sys.argv[1:] = argv
    users = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises instead of printing a trimmed traceback
    multirun = any(a in ("-m", "--multirun") for a in argv)
    try:
        with contextlib.nullcontext() if multirun or users == "1" else _StderrWithout(_HYDRA_JOB_LINE):
            hydra.main(version_base="1.3", config_path="conf", config_name=command)(_job_function(command, users))()
    except Exception as err:
        if users == "1" or not explain(err, command, argv):
            raise
        sys.exit(1)
    finally:
        _set_env("HYDRA_FULL_ERROR", users)


# Hydra writes this before re-raising a job's error: in a single run it only repeats the command line (a sweep
# keeps it: it names the point that failed)
_HYDRA_JOB_LINE = "Error executing job with overrides: "


class _StderrWithout(contextlib.AbstractContextManager):
    """sys.stderr, minus the writes that start with ``prefix``, while in the ``with`` block."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def __enter__(self) -> _StderrWithout:
        self.stream = sys.stderr
        sys.stderr = self
        return self

    def __exit__(self, *exc: object) -> None:
        sys.stderr = self.stream

    def write(self, text: str) -> int:
        return len(text) if text.startswith(self.prefix) else self.stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def _set_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def help_text(command: str) -> str:
    """``conf/hydra/help/<command>.yaml`` with the config groups and their options.

    What Hydra's own ``--help`` prints from the same file, without composing the config and listing every
    Hydra group twice first (2 s of CPU); ``--help`` after overrides still goes through Hydra.
    """
    conf = PACKAGE_DIR / "conf"
    page = OmegaConf.load(conf / "hydra" / "help" / f"{command}.yaml")
    groups = sorted(d for d in conf.iterdir() if d.is_dir() and d.name != "hydra" and any(d.glob("*.yaml")))
    listing = "\n".join(f"{g.name}: {', '.join(sorted(p.stem for p in g.glob('*.yaml')))}" for g in groups)
    return f"{page.header}\n== Configuration groups (group=option) ==\n{listing}\n\n{page.footer}"


def _job_function(command: str, users_full_error: str | None) -> Callable[[DictConfig], Any]:
    module_name, _, function_name = COMMANDS[command].partition(":")

    def job(cfg: DictConfig) -> Any:
        # while the job runs, processes it starts (DDP ranks) see the user's HYDRA_FULL_ERROR
        _set_env("HYDRA_FULL_ERROR", users_full_error)
        if HydraConfig.get().runtime.choices.get("hydra/job_logging") != "verbose":
            for message in FRAMEWORK_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
        try:
            run = getattr(importlib.import_module(module_name), function_name)
            result = run(cfg)
        except BaseException as err:
            hydra_cfg = HydraConfig.get()
            done = run_dir.record_failure(hydra_cfg.runtime.output_dir, err,
                                          discard=hydra_cfg.mode == RunMode.RUN)
            if done == "marked":
                print(f"run directory marked failed: {Path(hydra_cfg.runtime.output_dir) / run_dir.FAILED}",
                      file=sys.stderr)
            raise
        finally:
            os.environ["HYDRA_FULL_ERROR"] = "1"
        if command == "train" and cfg.get("optimized_metric"):
            return result.get(cfg.optimized_metric)  # what a hparams_search sweeper optimises
        return None

    return job


# --------------------------------------------------------------------------- error messages


def is_known(err: BaseException) -> bool:
    """An error raised on purpose about the input: a Hydra config error, or a KNOWN_ERRORS type whose
    innermost frame is xmod-lab's (or Hydra's command-line) code."""
    if isinstance(err, HydraException | OmegaConfBaseException):
        return True
    if not isinstance(err, KNOWN_ERRORS):
        return False
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    source = Path(tb.tb_frame.f_code.co_filename).resolve() if tb is not None else None
    return source is not None and any(source.is_relative_to(d) for d in (PACKAGE_DIR, HYDRA_DIR))


def explain(err: BaseException, command: str, argv: list[str]) -> bool:
    """Print ``xmod-<command>: error: ...`` with a suggestion for ``err``; False when it is not a known error."""
    if not is_known(err):
        return False
    prog = f"xmod-{command}"
    message = str(err).strip()
    cause = err.__cause__
    if isinstance(err, InstantiationException) and cause is not None:
        message = f"{message.splitlines()[0]}"
    elif isinstance(cause, OmegaConfBaseException) and str(cause) not in message:
        message = f"{message}\n{cause}"
    hint = suggestion(err, argv, command)
    message = "\n".join(line for line in _without_internals(message.splitlines())
                        # Hydra's hint (+key=value) would only lead to a second error
                        if not (hint and line.startswith("To append to")))
    lines = [f"{prog}: error: {message}"]
    if hint:
        lines.append(f"did you mean {hint}?")
    lines.append(f"({prog} --help lists the groups and options; HYDRA_FULL_ERROR=1 shows the traceback)")
    print("\n".join(lines), file=sys.stderr)
    return True


def _without_internals(lines: list[str]) -> Any:
    """OmegaConf's node types and Hydra's search path: for developers, not for a typo."""
    search_path = False
    for line in lines:
        search_path = line.startswith("Config search path") or (search_path and line.startswith("\t"))
        if not search_path and not re.match(r"\s+(reference_type|object_type)=", line):
            yield line


def suggestion(err: BaseException, argv: list[str], command: str) -> str | None:
    """The override the user probably meant: the closest valid key, option or value."""
    text = "\n".join(str(e) for e in (err, err.__cause__) if e is not None)
    if isinstance(err, MissingConfigException) and err.options:  # model=nonexistent
        group = re.search(r"Could not find '([^']+)/([^']+)'", text)
        if group:
            match = difflib.get_close_matches(group[2], list(err.options), n=1, cutoff=0.5)
            return f"{group[1]}={match[0]}" if match else None
    choices = re.search(r"expected one of \[([^\]]*)\]", text)  # freeze.policy=frozen
    value = re.search(r"Invalid value '([^']*)'", text)
    key = re.search(r"full_key: ([\w.]+)", text)
    if choices and value and key:
        match = difflib.get_close_matches(value[1], [c.strip() for c in choices[1].split(",")], n=1, cutoff=0.4)
        return f"{key[1]}={match[0]}" if match else None
    unexpected = re.search(r"unexpected keyword argument '(\w+)'", text)  # trainer.max_epoch=3
    if unexpected and key and isinstance(err, InstantiationException):
        candidates = _target_parameters(text)
        match = difflib.get_close_matches(unexpected[1], candidates, n=1, cutoff=0.6)
        return f"{key[1]}.{match[0]}" if match else None
    unknown = re.search(r"unknown (\w+) option\(s\) \['([^']+)'.*; known: \[([^\]]*)\]", text)  # +adapter.x=1
    if unknown:
        options = [o.strip(" '") for o in unknown[3].split(",")]
        match = difflib.get_close_matches(unknown[2], options, n=1, cutoff=0.6)
        return f"{unknown[1]}.{match[0]}" if match else None
    bad = re.search(r"Could not (?:override|append to config\. An item is already at|delete from config\.) "
                    r"'([\w.]+)'", text) or key
    if bad:
        return _closest_key(bad[1], argv, command)
    return None


def _closest_key(bad: str, argv: list[str], command: str) -> str | None:
    """``adapter.adapter_reduction_factor`` for ``adapter.reduction_factr``: a key of the config composed from the
    other overrides, or a config group."""
    others = [a for a in argv if not a.startswith("-") and "=" in a and a.split("=", 1)[0].lstrip("+~") != bad]
    try:
        with initialize_config_module("xmod_lab.conf", version_base="1.3"):
            cfg = compose(command, overrides=others)
    except Exception:  # another override is wrong too: suggest among the defaults' keys
        try:
            with initialize_config_module("xmod_lab.conf", version_base="1.3"):
                cfg = compose(command)
        except Exception:
            return None
    keys = list(_flat_keys(cfg))
    match = difflib.get_close_matches(bad, keys, n=1, cutoff=0.75)
    if not match:
        return None
    given = next((a.split("=", 1)[1] for a in argv if a.split("=", 1)[0].lstrip("+~") == bad and "=" in a), None)
    return f"{match[0]}={given}" if given is not None else match[0]


def _flat_keys(node: Any, prefix: str = "") -> Any:
    if isinstance(node, DictConfig):
        for key in node.keys():
            full = f"{prefix}{key}"
            yield full
            child = node._get_node(key)
            if isinstance(child, DictConfig | ListConfig) and not OmegaConf.is_interpolation(node, key):
                yield from _flat_keys(child, f"{full}.")


def _target_parameters(text: str) -> list[str]:
    target = re.search(r"Error in call to target '([\w.]+)'", text)
    if not target:
        return []
    try:
        return list(inspect.signature(get_object(target[1])).parameters)
    except (ImportError, ValueError, TypeError):
        return []
