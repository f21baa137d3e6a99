"""What xmod-train and xmod-eval share: building the datamodule, and run-directory bookkeeping.

A run directory (Hydra's output dir) ends up holding::

    .hydra/               Hydra's composed config and overrides
    config.yaml           the resolved config (every interpolation filled in)
    git.txt               the commit (and whether the tree had local changes)
    <job>.log             the log
    tokenizer/            the tokenizer the model was trained with (also inside every checkpoint)
    checkpoints/          Lightning checkpoints (train), each written to a temporary name and renamed
    results.json, .csv    metrics per evaluation set (and the adapter that scored it), written at the very end
    run_complete          written last: a run without it did not finish
    run_failed            the error of a run that failed (xmod_lab.run_dir)

Everything here writes on global rank 0 only.
"""

from __future__ import annotations

import csv
import hashlib
import inspect
import json
import logging
import subprocess
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from lightning.pytorch.accelerators import CPUAccelerator, CUDAAccelerator
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from xmod_lab.checkpoints import TOKENIZER_KEY, TokenizerRecord, load_checkpoint
from xmod_lab.data.languages import to_xmod_language
from xmod_lab.data.sources import SourceSpec, missing_local_file
from xmod_lab.data.tokenizer import (
    check_same_tokenizer,
    check_vocab_size,
    load_tokenizer,
    tokenizer_fingerprint,
    tokenizer_record,
    write_tokenizer_files,
)
from xmod_lab.results import AVG, csv_rows, format_table, metric_key
from xmod_lab.run_dir import FAILED
from xmod_lab.tasks.common import check_freeze_languages

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


def build_datamodule(cfg: DictConfig, languages: list[str], checkpoint: Mapping[str, Any] | None = None) -> Any:
    """The datamodule for a backbone whose adapters are `languages` (the built model's `config.languages`,
    in index order: the one list `lang_ids` index into), tokenizing with the model's own tokenizer where the
    model carries one (:func:`model_tokenizer`), chosen before it is built and passed as its `tokenizer`.
    `checkpoint`: the contents of `ckpt_path` when the caller has read them already (not read again)."""
    chosen = model_tokenizer(cfg.paths.output_dir, cfg.get("ckpt_path"), cfg.model.get("pretrained"),
                             explicit=overridden(command_line(), "data.tokenizer"), checkpoint=checkpoint)
    takes = "tokenizer" in inspect.signature(get_object(cfg.data._target_)).parameters  # a datamodule of one's own may not
    tokenizer = {"tokenizer": chosen.path} if chosen is not None and chosen.path is not None and takes else {}
    datamodule = build(cfg.data, languages=list(languages), **tokenizer)
    check_model_tokenizer(datamodule, chosen)
    return datamodule


def check_task_fits_data(cfg: DictConfig) -> None:
    """Refuse a task that cannot train on the data (``data=panx task=sequence_classification``) before anything
    is built: otherwise it fails in its first step, or on a missing label set, far from the cause. Each data
    preset selects its task (conf/data/*.yaml), so the pair only mismatches when ``task=`` is given."""
    task_cls, made = get_object(cfg.task._target_), get_object(cfg.data._target_)
    data_cls = made if isinstance(made, type) else typing.get_type_hints(made).get("return")
    wanted = getattr(task_cls, "DATA", None)
    if wanted is None or not isinstance(data_cls, type):
        return  # a task or datamodule of the user's own: nothing declared to compare
    objective = getattr(task_cls, "OBJECTIVE", None)
    fits = issubclass(data_cls, wanted) and (objective is None or cfg.data.get("objective", "mlm") == objective)
    if not fits:
        choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
        task_name, data_name = choices.get("task") or cfg.task._target_, choices.get("data") or cfg.data._target_
        data_kind = data_cls.__name__ + (f" (objective {cfg.data.get('objective', 'mlm')})" if objective else "")
        needs = wanted.__name__ + (f" (objective {objective})" if objective else "")
        raise ValueError(
            f"task={task_name} ({task_cls.__name__}) cannot run on data={data_name}, a {data_kind}: it needs a "
            f"{needs}. Drop task=... (each data preset selects its own task) or choose data for that task."
        )


def check_eval_sets(datamodule: Any, task: Any) -> None:
    """The datamodule's val/test dataloaders and the task's metrics name the same evaluation sets, in order
    (dataloader i is scored as set i)."""
    data_sets = list(datamodule.spec.eval_langs)
    if data_sets != list(task.eval_sets):
        raise ValueError(f"data evaluates {data_sets} but the task scores {task.eval_sets} (in this order); both "
                         "take languages.eval")


def check_freeze_config(cfg: DictConfig) -> None:
    """``freeze.languages`` (freeze=adapters_only) checked from the config alone, before the pre-training stage and
    any build, where the config says enough: the model's adapters (``languages.adapters`` + ``languages.add``) and
    the training languages' adapters (when each dataset code maps without the datamodule's own map). The built
    task and datamodule are checked again (``setup_task``, :func:`check_adapters_trained`)."""
    freeze = cfg.get("freeze") or {}
    if str(freeze.get("policy")) != "adapters_only" or not freeze.get("languages") or not cfg.get("train", True):
        return
    languages = OmegaConf.to_container(cfg.languages, resolve=True)
    assert isinstance(languages, dict)
    listed = [str(code) for code in freeze.languages]
    if languages.get("adapters") is not None:
        adapters = [*languages["adapters"], *(languages.get("add") or {})]
        check_freeze_languages({"policy": "adapters_only", "languages": listed}, adapters, languages)
    try:
        trained = [to_xmod_language(str(code), languages.get("map")) for code in languages["train"]]
    except ValueError:  # a code only the datamodule maps (the synthetic rm): checked once it is built
        return
    _check_reached(listed, [str(code) for code in languages["train"]], trained)


def check_adapters_trained(task: Any, datamodule: Any) -> None:
    """freeze=adapters_only with ``freeze.languages`` trains only those adapters: each must be the adapter of a
    training language, or it gets no gradient (when none is, nothing trains and the first step fails inside
    torch). Refused before the run starts, with the fix."""
    freeze = task.hparams.get("freeze") or {}
    listed = [str(code) for code in freeze.get("languages") or []]
    spec = getattr(datamodule, "spec", None)
    if freeze.get("policy") == "adapters_only" and listed and spec is not None:
        _check_reached(listed, list(spec.train_langs), list(spec.train_languages))


def _check_reached(listed: list[str], train_langs: list[str], trained: list[str]) -> None:
    trained = list(dict.fromkeys(trained))
    unreached = [code for code in listed if code not in trained]
    if unreached:
        raise ValueError(
            f"freeze=adapters_only trains the adapters of freeze.languages, but no training language goes through "
            f"{unreached} (languages.train={train_langs} uses {trained}): they would get no gradient. "
            f"Add their languages to languages.train, or train the adapters the data reaches: "
            f"freeze.languages=[{','.join(trained)}]."
        )


def check_data_files(datamodule: Any, train_splits: Sequence[str], eval_splits: Sequence[str]) -> None:
    """The local files the datamodule will read exist (a FileNotFoundError naming the first missing one), checked
    before the run directory is written: ``train_splits`` of each training language, ``eval_splits`` of each
    evaluation set. Hub datasets are checked as they load."""
    source = getattr(datamodule, "source", None)
    eval_source = getattr(datamodule, "eval_source", source)  # language modelling: one source for every split
    spec = getattr(datamodule, "spec", None)
    if not isinstance(source, SourceSpec) or not isinstance(eval_source, SourceSpec) or spec is None:
        return
    # language modelling with a holdout evaluates on rows held out of each language's train split
    read = (lambda split: "train") if getattr(datamodule, "holdout", 0) else (lambda split: split)
    wanted = [(source, lang, split) for lang in spec.train_langs for split in train_splits]
    wanted += [(eval_source, lang, read(split)) for lang in spec.eval_langs for split in eval_splits]
    for where, lang, split in wanted:
        missing = missing_local_file(where, lang, split)
        if missing:
            raise FileNotFoundError(missing)


def check_tokenizer_fits(datamodule: Any, model: Any) -> None:
    """The data's tokenizer must not produce ids past the model's embeddings (an index error, or a CUDA
    device assert, deep inside training otherwise)."""
    tokenizer = getattr(datamodule, "tokenizer", None)
    if tokenizer is None:
        return
    try:
        check_vocab_size(tokenizer, model.config.vocab_size)
    except ValueError as err:
        raise ValueError(f"{err} (config: data.tokenizer and model.config.vocab_size)") from None


def default_monitor(task: Any, languages: DictConfig) -> str:
    """The task's main metric on the first training language when it is an evaluation set (zero-shot model
    selection must not peek at the target languages), else its average over evaluation sets."""
    first = str(languages.train[0]) if languages.train else None
    return metric_key("val", first if first in task.eval_sets else AVG, task.main_metric)


def with_run_values(cfg: DictConfig, **values: Any) -> DictConfig:
    """A copy of ``cfg`` with top-level ``values`` filled in (what the run decided, e.g. its monitor), so
    the config.yaml it saves is the config it ran; the composed config itself is never changed."""
    out = OmegaConf.merge(cfg, values)
    assert isinstance(out, DictConfig)
    return out


# Lightning's short precision names and the full ones it runs under (what config.yaml records)
PRECISION_NAMES = {"16": "16-mixed", "bf16": "bf16-mixed", "32": "32-true", "64": "64-true",
                   "16-mixed": "16-mixed", "bf16-mixed": "bf16-mixed", "16-true": "16-true", "bf16-true": "bf16-true",
                   "32-true": "32-true", "64-true": "64-true", "transformer-engine": "transformer-engine",
                   "transformer-engine-float16": "transformer-engine-float16"}


def check_run_values(cfg: DictConfig, training: bool) -> DictConfig:
    """Values that would fail (or silently mean something else) once the run started, refused before its
    directory holds anything: batch sizes, precision on its device, a fit that trains nothing (``training``:
    xmod-train). Returns ``cfg`` with the precision under the name the run uses, which config.yaml records."""
    data = cfg.get("data") or {}
    for key in ("batch_size", "eval_batch_size"):
        value = data.get(key) if isinstance(data, DictConfig) else None
        if value is None and key == "eval_batch_size":
            continue
        if key in data and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"data.{key}={value!r}: a batch size is a positive number of examples")
    trainer = cfg.get("trainer") or {}
    precision = str(trainer.get("precision", "32-true"))
    if precision not in PRECISION_NAMES:
        raise ValueError(f"trainer.precision={precision}: choose one of 32-true, bf16-mixed, 16-mixed, bf16-true, "
                         "16-true, 64-true")
    precision = PRECISION_NAMES[precision]
    accelerator = str(trainer.get("accelerator", "auto"))
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if on_cpu and precision.startswith("16"):
        raise ValueError(
            f"trainer.precision={trainer.precision} on CPU (trainer.accelerator={accelerator}): float16 is not "
            "trained on CPU (Lightning would switch 16-mixed to bf16-mixed; 16-true overflows to NaN). "
            "Use trainer.precision=32-true, or bf16-mixed."
        )
    if training and cfg.get("train", True):
        epochs, steps = trainer.get("max_epochs"), trainer.get("max_steps")
        if steps == 0 or (epochs == 0 and steps in (None, -1)):
            raise ValueError(
                f"trainer.max_epochs={epochs}, trainer.max_steps={steps}: the fit would train nothing and test the "
                "untrained model. Give trainer.max_epochs >= 1 (or max_steps), or train=false to only test."
            )
    if "precision" in trainer and str(trainer.precision) != precision:
        return with_run_values(cfg, trainer={"precision": precision})
    return cfg


def check_precision(trainer: L.Trainer) -> None:
    """Refuse a precision the device cannot train in before any work: fp16 on CPU gives a NaN loss from the
    first step (every score at chance), bf16 needs hardware support on CUDA."""
    precision = str(trainer.precision)
    if isinstance(trainer.accelerator, CPUAccelerator) and precision.startswith("16"):
        raise ValueError(
            f"trainer.precision={precision} on CPU: float16 arithmetic overflows there (NaN loss from the first "
            "step). Use trainer.precision=32-true, or bf16-mixed."
        )
    if (isinstance(trainer.accelerator, CUDAAccelerator) and precision.startswith("bf16")
            and not _cuda_bf16_supported()):
        raise ValueError(f"trainer.precision={precision}: this GPU has no bfloat16 support; use 16-mixed or 32-true.")


def _cuda_bf16_supported() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def overridden(overrides: list[str], key: str) -> bool:
    """Whether the command line sets `key` (`key=...`, `+key=...`)."""
    return any(o.split("=", 1)[0].lstrip("+~") == key for o in overrides)


def command_line() -> list[str]:
    """The overrides given on the command line (none outside a Hydra run)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


@dataclass(frozen=True)
class ModelTokenizer:
    """The tokenizer a model was trained with: ``path``, the one the data is to be built with (None: the
    configured one, chosen on the command line), and the ``fingerprint`` it must have; ``what`` names the model."""

    path: str | None
    fingerprint: str
    what: str


def model_tokenizer(out_dir: str | Path, ckpt_path: str | None, pretrained: str | None, explicit: bool,
                    checkpoint: Mapping[str, Any] | None = None) -> ModelTokenizer | None:
    """The tokenizer the data must use: the one a checkpoint carries (its files written to `<out_dir>/tokenizer`),
    or an exported directory's. With `data.tokenizer` given on the command line (`explicit`) the configured one
    is kept, and must be that one (:func:`check_model_tokenizer`). None: the model carries no tokenizer.
    `checkpoint`: the contents of `ckpt_path` when the caller has read them already (not read again).

    A checkpoint without a record (written before records existed) keeps the configured tokenizer, with a
    warning: nothing can check it.
    """
    if ckpt_path:
        record = (checkpoint if checkpoint is not None else load_checkpoint(ckpt_path, mmap=True)).get(TOKENIZER_KEY)
        if record is None:
            log.warning("%s records no tokenizer (written by an older xmod-lab): the configured one is used "
                        "unchecked; it must be the tokenizer of the training run", ckpt_path)
            return None
        path = None if explicit else str(write_tokenizer_files(record, Path(out_dir) / "tokenizer", ckpt_path))
        return ModelTokenizer(path, record["fingerprint"], f"the checkpoint {ckpt_path}")
    if pretrained and (Path(pretrained).expanduser() / "tokenizer_config.json").is_file():
        directory = str(Path(pretrained).expanduser())
        fingerprint = tokenizer_fingerprint(load_tokenizer(directory))
        return ModelTokenizer(None if explicit else directory, fingerprint, f"the model in {pretrained}")
    return None


def check_model_tokenizer(datamodule: Any, chosen: ModelTokenizer | None) -> None:
    """The datamodule tokenizes with the model's tokenizer (a clear error naming both otherwise)."""
    if chosen is None or getattr(datamodule, "tokenizer", None) is None:
        return
    check_same_tokenizer(datamodule.tokenizer, chosen.fingerprint, chosen.what,
                         "Drop data.tokenizer=... to use the model's own tokenizer.")
    log.info("tokenizer: %s's own (fingerprint %s)", chosen.what, chosen.fingerprint)


def tokenizer_callbacks(datamodule: Any, out_dir: str | Path) -> list[Callback]:
    """Save the data's tokenizer in the run directory (`<run>/tokenizer/`) and return the callback that puts
    it into every checkpoint."""
    tokenizer = getattr(datamodule, "tokenizer", None)
    if tokenizer is None:
        return []
    record = tokenizer_record(tokenizer)
    if rank_zero_only.rank == 0:
        write_tokenizer_files(record, Path(out_dir) / "tokenizer")
    return [TokenizerRecord(record)]


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


@rank_zero_only
def finish_run(out_dir: str | Path, split: str, table: Mapping[str, Mapping[str, float]],
               adapters: Mapping[str, str], info: Mapping[str, Any]) -> None:
    """results.json / results.csv (one row per evaluation set, with its adapter), the printed table, then
    the completion marker (last)."""
    out = Path(out_dir)
    digest = check_config_unchanged(out)
    payload = {**info, "split": split, split: table, "adapters": dict(adapters), "config_sha256": digest}
    (out / RESULTS_JSON).write_text(json.dumps(payload, indent=2) + "\n")
    with (out / RESULTS_CSV).open("w", newline="") as f:
        csv.writer(f).writerows(csv_rows(table, adapters))
    log.info("\n%s", format_table(table, f"{split} results ({out})", adapters))
    (out / COMPLETE).write_text("ok\n")
