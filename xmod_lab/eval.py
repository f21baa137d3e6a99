"""xmod-eval: evaluate a trained X-MOD on every evaluation language and write the results table.

    xmod-eval ckpt_path=outputs/default/runs/<time>                           # the checkpoint that run tested
    xmod-eval ckpt_path=outputs/default/runs/<time>/checkpoints/last.ckpt     # a Lightning checkpoint
    xmod-eval model.pretrained=<export_dir> freeze=none                          # a save_pretrained directory
    xmod-eval ckpt_path=... languages.eval=[en,de,sw] split=validation

With a checkpoint of an xmod-train run, its task/data/model/languages/adapter settings are reused from
the run's config.yaml unless given here (`task=...`, `languages.eval=[...]`, `experiment=...`); the
architecture and weights come from the checkpoint, the languages to evaluate from `languages.eval`.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
import logging
from collections.abc import Iterator
from dataclasses import is_dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

import xmod_lab.conf.schema  # noqa: F401  (registers eval_schema)
from xmod_lab import diagnostics, results, runs, trust
from xmod_lab.checkpoints import load_checkpoint
from xmod_lab.tasks.common import plain

log = logging.getLogger("xmod_lab.eval")


def load_task(cfg: DictConfig, checkpoint: dict[str, Any]) -> L.LightningModule:
    """The task from a Lightning checkpoint already read (``load_checkpoint(cfg.ckpt_path)``): its saved
    hyper-parameters with our evaluation languages, and its weights. What ``load_from_checkpoint`` does, on the
    object in hand: the file is read once per evaluation (it can be gigabytes)."""
    task_cls = get_class(cfg.task._target_)
    hparams = checkpoint.get("hyper_parameters") or {}
    if migrate_hyperparameters(hparams):
        log.info("%s was written by an older xmod-lab: its hyper-parameters are read in today's names", cfg.ckpt_path)
    arguments = {**hparams, "languages": plain(cfg.languages), "freeze": {"policy": "none"}}
    accepted = inspect.signature(task_cls.__init__).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        # as load_from_checkpoint: a hyper-parameter the task no longer takes is dropped
        arguments = {k: v for k, v in arguments.items() if k in accepted and k != "self"}
    try:
        task = task_cls(**arguments)
        task.on_load_checkpoint(checkpoint)
        task.load_state_dict(checkpoint["state_dict"], strict=task.strict_loading)
    except (TypeError, KeyError, RuntimeError) as err:
        raise ValueError(
            f"ckpt_path={cfg.ckpt_path!r} does not load as {task_cls.__name__} ({err}); "
            "pass the task=... (or experiment=...) the checkpoint was trained with"
        ) from err
    return task


# Names xmod-lab used before evaluation sets (adapter options under short names, a class count without the
# label names), read from older checkpoints and run directories so their runs stay evaluable.
LEGACY_ADAPTER_KEYS = {"reduction_factor": "adapter_reduction_factor", "layer_norm": "adapter_layer_norm",
                       "reuse_layer_norm": "adapter_reuse_layer_norm", "ln_before": "ln_before_adapter",
                       "mode": "adapter_mode", "layers": "adapter_layers", "activation": "adapter_activation"}
LEGACY_DATA_KEYS = ("languages", "n_best", "max_answer_length")


def migrate_hyperparameters(hp: dict) -> bool:
    """Rename an older checkpoint's task hyper-parameters in place; whether anything changed. The label names
    come from the checkpoint's own model config (id2label), never from today's config."""
    changed = False
    if "num_labels" in hp and "label_names" not in hp:
        id2label = (hp.get("model_config") or {}).get("id2label") or {}
        hp["label_names"] = [id2label.get(str(i), id2label.get(i, f"LABEL_{i}")) for i in range(int(hp.pop("num_labels")))]
        changed = True
    adapter = hp.get("adapter")
    if isinstance(adapter, dict) and set(adapter) & set(LEGACY_ADAPTER_KEYS):
        hp["adapter"] = {LEGACY_ADAPTER_KEYS.get(k, k): v for k, v in adapter.items()}
        changed = True
    return changed


def migrate_saved_config(saved: DictConfig) -> list[str]:
    """Rename an older run's config.yaml groups in place (adapter keys, data keys that moved); what changed."""
    notes = []
    adapter = saved.get("adapter")
    if isinstance(adapter, DictConfig):
        for old, new in LEGACY_ADAPTER_KEYS.items():
            if old in adapter:
                adapter[new] = adapter.pop(old)
                notes.append(f"adapter.{old} -> adapter.{new}")
    data = saved.get("data")
    if isinstance(data, DictConfig):
        for key in LEGACY_DATA_KEYS:
            if key in data:
                data.pop(key)
                notes.append(f"data.{key} dropped")
    task = saved.get("task")
    if isinstance(task, DictConfig) and "num_labels" in task and "label_names" not in task:
        task.pop("num_labels")
        notes.append("task.num_labels dropped (the checkpoint's own labels are used)")
    return notes


class _DropFreezingReport(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("freeze=")


@contextlib.contextmanager
def no_freezing_report() -> Iterator[None]:
    """Building a task logs its freezing table (what trains): nothing trains in an evaluation."""
    logger, drop = logging.getLogger("xmod_lab.tasks.common"), _DropFreezingReport()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


# What a checkpoint's run directory decides unless the command line says otherwise (its config.yaml).
REUSED_GROUPS = ("task", "data", "model", "languages", "adapter")
# Keys of a reused group that say where a run writes (generated data, tokenized caches): taken from this
# evaluation's config, so a config.yaml handed over cannot direct writes outside this machine's paths
WRITE_KEYS = ("root", "cache_dir")


def reuse_training_config(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """A copy of `cfg` with the groups of REUSED_GROUPS taken from the training run's resolved config.yaml, when
    ckpt_path sits in a run directory (`<run>/checkpoints/x.ckpt`).

    A group chosen on the command line (`task=...`, or any `experiment=...`) keeps the composed one; field
    overrides (`languages.eval=[de]`) apply on top of the training run's values. Fields that follow another
    group (`data.eval_langs: ${languages.eval}`, `task.model: ${model}`) are linked to it again, so such
    overrides reach them.
    """
    cfg = copy.deepcopy(cfg)  # the composed config itself stays as composed
    saved_path = Path(cfg.ckpt_path).resolve().parent.parent / "config.yaml"
    keys = [o.split("=", 1)[0].lstrip("+~") for o in overrides]
    if not saved_path.is_file() or "experiment" in keys:
        return cfg
    saved = OmegaConf.load(saved_path)
    reused = [g for g in REUSED_GROUPS if g in saved and g not in keys]
    # before any value of the file is read or resolved: it came with the checkpoint, it is data
    trust.check_reused_config(saved, str(saved_path), reused)
    migrated = migrate_saved_config(saved)
    if migrated:
        log.info("%s was written by an older xmod-lab: %s", saved_path, "; ".join(migrated))
    fields = {o: k for o, k in zip(overrides, keys, strict=True) if k.split(".")[0] in reused and "." in k}
    values = {k: OmegaConf.select(cfg, k) for o, k in fields.items() if not o.startswith("~")}
    with open_dict(cfg):
        for group in reused:
            node, composed = saved[group], cfg[group]
            if isinstance(node, DictConfig) and isinstance(composed, DictConfig):
                raw = OmegaConf.to_container(composed, resolve=False)
                for key in set(node.keys()) & set(raw):
                    if OmegaConf.is_interpolation(composed, key) and not raw[key].startswith(("${paths", "${oc.")):
                        node[key] = raw[key]
                    elif key in WRITE_KEYS:  # where the run writes: this machine's paths, never the file's
                        node[key] = raw[key]
                for key in set(node.keys()) & (set(WRITE_KEYS) - set(raw)):
                    node[key] = None
            schema = OmegaConf.get_type(cfg, group)
            if is_dataclass(schema):  # a typed group (languages, ...) takes only a node of its schema
                node = OmegaConf.merge(OmegaConf.structured(schema), node)
            cfg[group] = node
        for override, key in fields.items():
            if override.startswith("~"):
                parent, _, leaf = key.rpartition(".")
                OmegaConf.select(cfg, parent).pop(leaf, None)
            else:
                OmegaConf.update(cfg, key, values[key], merge=False)
    log.info("reusing %s from the training run's %s (overridden here: %s)", ", ".join(reused), saved_path,
             ", ".join(fields) or "nothing")
    return cfg


def tested_checkpoint(run_dir: Path) -> str:
    """``ckpt_path=<run directory>``: the checkpoint that run tested (``checkpoint`` in its results.json), found
    in the run's own ``checkpoints/`` when it is there (a moved or copied run directory), so a re-test scores
    the model the run's table scored, not ``last.ckpt``."""
    path = run_dir / runs.RESULTS_JSON
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={str(run_dir)!r} is a directory without {runs.RESULTS_JSON}: not a "
                                "finished xmod-train run. Pass a run directory, or a checkpoint file.")
    named = json.loads(path.read_text()).get("checkpoint")
    if not named or not str(named).endswith(".ckpt"):
        raise ValueError(f"{path} names no tested checkpoint (checkpoint: {named!r}); pass a checkpoint file: "
                         f"ckpt_path={run_dir / 'checkpoints'}/<file>.ckpt")
    own = run_dir / "checkpoints" / Path(named).name
    found = own if own.is_file() else Path(named)
    if not found.is_file():
        raise FileNotFoundError(f"{path} names {named}, which is neither in {run_dir / 'checkpoints'} nor at that "
                                "path; pass the checkpoint file as ckpt_path")
    log.info("ckpt_path=%s: the checkpoint that run tested, %s", run_dir, found)
    return str(found)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test (or validate) a checkpoint or an exported model; returns every logged metric."""
    out = Path(cfg.paths.output_dir)
    if cfg.ckpt_path and Path(cfg.ckpt_path).is_dir():
        cfg = runs.with_run_values(cfg, ckpt_path=tested_checkpoint(Path(cfg.ckpt_path)))
    runs.check_ckpt_path(cfg.ckpt_path)
    overrides = runs.command_line()
    if cfg.ckpt_path and HydraConfig.initialized():
        cfg = reuse_training_config(cfg, overrides)
    # the checkpoint file is read here, once: every check and the task take the object
    checkpoint = load_checkpoint(cfg.ckpt_path, mmap=True) if cfg.ckpt_path else None
    trust.check_handed_over(cfg, checkpoint)  # before any data preparation
    cfg = runs.check_run_values(cfg, training=False)
    if cfg.split not in ("test", "validation"):
        raise ValueError(f"split={cfg.split!r}; choose test or validation")
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    L.seed_everything(cfg.seed, workers=True)
    with no_freezing_report():  # a checkpoint, or model.pretrained (an exported directory or a hub id) as is
        runs.check_task_fits_data(cfg)  # data=panx task=sequence_classification: refused before building
        task = load_task(cfg, checkpoint) if checkpoint is not None else runs.build(cfg.task)
    datamodule = runs.build_datamodule(cfg, task.model.config.languages, checkpoint=checkpoint)
    runs.check_data_files(datamodule, [], [cfg.split])
    del checkpoint  # its weights are in the task now: the mapped file is not held through the evaluation
    runs.check_eval_sets(datamodule, task)
    runs.check_tokenizer_fits(datamodule, task.model)
    runs.start_run(out, cfg)

    # the logger configs are xmod-train's; W&B files this run as an evaluation
    loggers = [instantiate(c, job_type="eval") if "job_type" in c else instantiate(c)
               for c in (cfg.logger or {}).values()]
    # the degenerate-run checks of xmod-train (class counts), so a re-test flags what the run flagged
    trainer: L.Trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=[diagnostics.PredictedClasses()])
    runs.check_precision(trainer)
    if cfg.split == "test":
        trainer.test(task, datamodule=datamodule, verbose=False)
    else:
        trainer.validate(task, datamodule=datamodule, verbose=False)
    split = "test" if cfg.split == "test" else "val"
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    table = results.table_from_metrics(metrics, split)
    diagnosis = diagnostics.assess(table, trainer, datamodule)
    runs.finish_run(out, split, table, datamodule.spec.eval_adapters, {
        "task": cfg.task._target_, "checkpoint": cfg.ckpt_path or cfg.model.pretrained,
        "train_languages": list(task.train_sets), "eval_sets": task.eval_sets, "diagnostics": diagnosis,
    })
    if diagnosis and trainer.is_global_zero:
        log.info("\n%s", diagnostics.format_assessment(table, diagnosis))
    return metrics


if __name__ == "__main__":  # python -m xmod_lab.eval: the same as xmod-eval
    from xmod_lab.cli import main

    main("eval")
