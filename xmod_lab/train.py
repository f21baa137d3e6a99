"""xmod-train: fine-tune or pre-train X-MOD on some languages, evaluate per language.

    xmod-train                                   # the default experiment (tiny model, synthetic data, CPU)
    xmod-train experiment=xnli_zero_shot trainer=gpu
    xmod-train freeze=adapters_only languages=xmod13 adapter.adapter_reduction_factor=4 ...
    python -m xmod_lab.train --help              # groups and options

Instantiates data, task, callbacks, loggers and trainer once each from the composed config
(conf/train.yaml), fits, tests on every evaluation set, writes the results table.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar, TQDMProgressBar
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

import xmod_lab.conf.schema  # noqa: F401  (registers train_schema)
from xmod_lab import diagnostics, pretraining, results, runs, trust
from xmod_lab.checkpoints import remove_partial_files, safe_loading
from xmod_lab.data.common import skipped_summary
from xmod_lab.data.tokenizer import save_tokenizer

log = logging.getLogger("xmod_lab.train")


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit + test; returns every logged metric (`test/de/acc`, `val/avg/acc`, ...)."""
    out = Path(cfg.paths.output_dir)
    runs.check_ckpt_path(cfg.ckpt_path)
    runs.check_task_fits_data(cfg)
    trust.check_handed_over(cfg)  # before pre-training or data preparation
    runs.check_freeze_config(cfg)  # freeze.languages, as far as the config tells, before pre-training
    cfg = runs.check_run_values(cfg, training=True)
    if cfg.ckpt_path and rank_zero_only.rank == 0:  # the run resumed from: a kill during a save left these
        remove_partial_files(Path(cfg.ckpt_path).parent)
    if pretraining.wanted(cfg):  # the `pretrain` stage: an MLM run (cached) whose export becomes model.pretrained
        cfg = pretraining.use_pretrained(cfg, train)
    L.seed_everything(cfg.seed, workers=True)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    task = runs.build(cfg.task)  # the backbone first: its config.languages is what lang_ids index
    datamodule = runs.build_datamodule(cfg, task.model.config.languages)
    runs.check_data_files(datamodule, ["train"] if cfg.train else [],
                          (["validation"] if cfg.train else []) + ["test" if cfg.test else "validation"])
    runs.check_eval_sets(datamodule, task)
    if cfg.train:
        runs.check_adapters_trained(task, datamodule)
    runs.check_tokenizer_fits(datamodule, task.model)
    # the task names its main metric (checkpoint selection) unless the config does; saved with the config
    # and the freezing policy it applied (freeze=auto: paper or none), so config.yaml says what ran
    cfg = runs.with_run_values(cfg, monitor=cfg.monitor or runs.default_monitor(task, cfg.languages),
                               monitor_mode=cfg.monitor_mode or task.monitor_mode,
                               freeze={"policy": task.hparams.freeze["policy"]})
    runs.start_run(out, cfg)
    counts = task.parameter_counts
    log.info("parameters: %s trainable, %s frozen (freeze.policy=%s)", f"{counts['trainable']:,}",
             f"{counts['frozen']:,}", cfg.freeze.policy)

    callbacks = [instantiate(c) for c in (cfg.callbacks or {}).values()] + runs.tokenizer_callbacks(datamodule, out)
    if cfg.trainer.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
        # not the rich bar Lightning picks when rich is installed (a thread re-rendering it, metrics read every
        # step: 3.3% of the default job; this one: 0.2%, docs/benchmarks.md); every 10 steps keeps logs short
        callbacks.append(TQDMProgressBar(refresh_rate=10))
    loggers = [instantiate(c) for c in (cfg.logger or {}).values()]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    runs.check_precision(trainer)
    adapters = datamodule.spec.eval_adapters
    for logger in trainer.loggers:
        logger.log_hyperparams({"parameters/trainable": counts["trainable"], "parameters/frozen": counts["frozen"],
                                "eval_adapters": adapters})

    if cfg.train:
        with safe_loading():
            trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=True)
    checkpoint = next((c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)), None)
    best = checkpoint.best_model_path if checkpoint is not None and checkpoint.best_model_path else None
    if not cfg.train:
        best = cfg.ckpt_path
    split = "test" if cfg.test else "val"
    with safe_loading():
        if cfg.test:
            trainer.test(task, datamodule=datamodule, ckpt_path=best, verbose=False, weights_only=True)
        else:
            trainer.validate(task, datamodule=datamodule, ckpt_path=best, verbose=False, weights_only=True)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    table = results.table_from_metrics(metrics, split)

    if cfg.export_dir and trainer.is_global_zero:
        export(task, datamodule, cfg.export_dir, cfg.get("export_default_language"))
    diagnosis = diagnostics.assess(table, trainer, datamodule)  # degenerate classifiers, flagged
    runs.finish_run(out, split, table, adapters, {
        "task": cfg.task._target_, "checkpoint": best, "train_languages": list(cfg.languages.train),
        "eval_sets": task.eval_sets, "parameters": counts, "global_step": trainer.global_step,
        **selection_score(checkpoint, cfg),
        "diagnostics": diagnosis,
        "skipped_rows": skipped_summary(datamodule),  # rows the data left out (label -1, ...), per split/language
    })
    if diagnosis and trainer.is_global_zero:
        log.info("\n%s", diagnostics.format_assessment(table, diagnosis))
    return metrics


def selection_score(checkpoint: ModelCheckpoint | None, cfg: DictConfig) -> dict[str, Any]:
    """The validation score the tested checkpoint was chosen on (reports pick the best run on it, never on
    a test score); None without a monitored checkpoint (debug=fdr, train=false)."""
    score = checkpoint.best_model_score if checkpoint is not None and cfg.train else None
    return {"monitor": cfg.monitor, "monitor_mode": cfg.monitor_mode,
            "best_score": float(score) if score is not None else None}


def export(task: L.LightningModule, datamodule: L.LightningDataModule, export_dir: str,
           default_language: str | None = None) -> None:
    """save_pretrained of backbone + head, and the tokenizer: `transformers` loads the directory. Its
    ``config.default_language`` (the adapter used when a caller passes no ``lang_ids``, as transformers' pipelines
    do) is ``default_language``, or the first training language's adapter."""
    language = default_language or datamodule.spec.train_languages[0]
    task.model.set_default_language(language)  # an unknown code: an error listing the model's languages
    task.model.save_pretrained(export_dir)
    tokenizer = getattr(datamodule, "tokenizer", None)
    if tokenizer is not None:
        save_tokenizer(tokenizer, export_dir)
    log.info("exported the model%s to %s (default_language: %s)", " and tokenizer" if tokenizer is not None else "",
             export_dir, language)


if __name__ == "__main__":  # python -m xmod_lab.train: the same as xmod-train
    from xmod_lab.cli import main

    main("train")
