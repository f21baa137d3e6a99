"""What xmod-train and xmod-eval share: building the datamodule, and run-directory bookkeeping.

A run directory (Hydra's output dir) ends up holding::

    .hydra/               Hydra's composed config and overrides
    config.yaml           the resolved config (every interpolation filled in)
    git.txt               the commit (and whether the tree had local changes)
    <job>.log             the log
    checkpoints/          Lightning checkpoints (train)
    results.json, .csv    per-language metrics, written at the very end
    run_complete          written last: a run without it did not finish
    run_failed            the error of a run that failed (xmod_lab.run_dir)

Everything here writes on global rank 0 only.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from xmod_lab.run_dir import FAILED

log = logging.getLogger(__name__)

RESULTS_JSON, RESULTS_CSV, COMPLETE = "results.json", "results.csv", "run_complete"


def build(node: DictConfig, **kwargs: Any) -> Any:
    """hydra.utils.instantiate, re-raising our own ValueError / FileNotFoundError unwrapped, so the
    user reads the message that names the problem rather than Hydra's wrapper."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, ValueError | FileNotFoundError | OSError):
            raise err.__cause__ from None
        raise


def build_datamodule(cfg: DictConfig, languages: list[str]):
    """The datamodule for a backbone with `languages` (its adapter list, in index order).

    The task's label set comes from the data (defined once): `???` values of `task.num_labels` /
    `task.label_names` are filled from the datamodule.
    """
    check_data_languages(cfg.languages, languages)
    datamodule = build(cfg.data, languages=list(languages))
    with open_dict(cfg):
        for key in ("num_labels", "label_names"):
            if key in cfg.task.keys() and OmegaConf.is_missing(cfg.task, key):
                cfg.task[key] = OmegaConf.create({"v": getattr(datamodule, key)}).v
    return datamodule


def check_data_languages(config: DictConfig, languages: list[str]) -> None:
    """Every train/eval dataset language maps to an adapter of the backbone (before any data is read)."""
    from xmod_lab.data.languages import to_xmod_language

    for role in ("train", "eval"):
        codes = {code: to_xmod_language(str(code), config.get("map")) for code in config[role]}
        missing = {code: xmod for code, xmod in codes.items() if xmod not in languages}
        if missing:
            raise ValueError(
                f"languages.{role}: {missing} (dataset code: adapter) have no adapter in the backbone, which has "
                f"{list(languages)}. Pick languages it has, map them to one with languages.map, or add one with "
                "+languages.add.<code>=<init_from_language>."
            )


def check_tokenizer_fits(datamodule: Any, model: Any) -> None:
    """The data's tokenizer must not produce ids past the model's embeddings (an index error, or a CUDA
    device assert, deep inside training otherwise)."""
    from xmod_lab.data.tokenizer import check_vocab_size

    tokenizer = getattr(datamodule, "tokenizer", None)
    if tokenizer is None:
        return
    try:
        check_vocab_size(tokenizer, model.config.vocab_size)
    except ValueError as err:
        raise ValueError(f"{err} (config: data.tokenizer and model.config.vocab_size)") from None


def default_monitor(task: Any, languages: DictConfig) -> str:
    """The task's main metric on the first training language when it is evaluated (zero-shot model
    selection must not peek at the target languages), else its average over languages."""
    from xmod_lab.data.languages import to_xmod_language

    first = to_xmod_language(str(languages.train[0]), languages.get("map")) if languages.train else None
    if first in task.eval_languages:
        return task.monitor.replace("/avg/", f"/{first}/")
    return task.monitor


def check_ckpt_path(path: str | None) -> None:
    if path is not None and not Path(path).is_file():
        raise FileNotFoundError(f"ckpt_path={path!r}: no such checkpoint file (runs keep them in <run>/checkpoints/)")


def git_revision(root: str | Path) -> str:
    """`<sha>` or `<sha>-dirty`, or 'unknown' outside a git checkout (an installed wheel)."""
    def run(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        sha = run("rev-parse", "HEAD")
        return sha + ("-dirty" if run("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@rank_zero_only
def start_run(out_dir: str | Path, cfg: DictConfig) -> None:
    """Resolved config + git revision; removes a stale completion marker (a reused directory)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in (COMPLETE, FAILED, RESULTS_JSON, RESULTS_CSV):
        (out / name).unlink(missing_ok=True)
    text = OmegaConf.to_yaml(cfg, resolve=True)
    (out / "config.yaml").write_text(text)
    _CONFIG_DIGESTS[str(out.resolve())] = hashlib.sha256(text.encode()).hexdigest()
    revision = git_revision(Path(__file__).resolve().parent)
    (out / "git.txt").write_text(revision + "\n")
    log.info("run directory %s (git %s)", out, revision)


# run directory -> sha256 of the config.yaml this process wrote there (start_run)
_CONFIG_DIGESTS: dict[str, str] = {}


def check_config_unchanged(out: Path) -> str | None:
    """The digest of ``out/config.yaml``; an error if it is not the config this process wrote: results
    must never sit beside another run's config (two runs given one directory with hydra.run.dir)."""
    path = out / "config.yaml"
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    expected = _CONFIG_DIGESTS.get(str(out.resolve()))
    if expected is not None and digest != expected:
        raise RuntimeError(
            f"{path} is no longer the config this run started with (another run wrote into {out}); "
            "its results are not written there. Give each run its own directory (drop hydra.run.dir)."
        )
    return digest


def table_from_metrics(metrics: Mapping[str, Any], split: str) -> dict[str, dict[str, float]]:
    """{'test/de_DE/acc': 71.2, ...} -> {'de_DE': {'acc': 71.2}, ..., 'avg': {...}} (avg last)."""
    table: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == split:
            table.setdefault(parts[1], {})[parts[2]] = round(float(value), 4)
    if "avg" in table:
        table["avg"] = table.pop("avg")
    return table


def format_table(table: Mapping[str, Mapping[str, float]], title: str) -> str:
    """Plain-text table (also what the log gets)."""
    names = sorted({m for row in table.values() for m in row})
    header = ["language", *names]
    rows = [[lang, *(f"{row[m]:.2f}" if m in row else "-" for m in names)] for lang, row in table.items()]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(f"{h:<{w}}" if i == 0 else f"{h:>{w}}" for i, (h, w) in enumerate(zip(header, widths, strict=True)))
    body = ["  ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(r, widths, strict=True)))
            for r in rows]
    return "\n".join([title, line, "-" * len(line), *body])


@rank_zero_only
def finish_run(out_dir: str | Path, split: str, table: Mapping[str, Mapping[str, float]],
               info: Mapping[str, Any]) -> None:
    """results.json / results.csv, the printed table, then the completion marker (last)."""
    out = Path(out_dir)
    digest = check_config_unchanged(out)
    payload = {**info, "split": split, split: table, "config_sha256": digest}
    (out / RESULTS_JSON).write_text(json.dumps(payload, indent=2) + "\n")
    names = sorted({m for row in table.values() for m in row})
    with (out / RESULTS_CSV).open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["language", *names])
        for lang, row in table.items():
            writer.writerow([lang, *(row.get(m, "") for m in names)])
    log.info("\n%s", format_table(table, f"{split} results ({out})"))
    (out / COMPLETE).write_text("ok\n")
