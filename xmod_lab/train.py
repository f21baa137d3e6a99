"""xmod-train: fine-tune or pre-train X-MOD on some languages, evaluate per language.

    xmod-train                                   # the default experiment (tiny model, synthetic data, CPU)
    xmod-train experiment=xnli_zero_shot trainer=gpu
    xmod-train freeze=adapters_only languages=xmod13 adapter.reduction_factor=4 ...
    python -m xmod_lab.train --help              # groups and options

Instantiates data, task, callbacks, loggers and trainer once each from the composed config
(conf/train.yaml), fits, tests on every evaluation language, writes the results table.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, open_dict

import xmod_lab.conf.schema  # noqa: F401  (registers train_schema)
from xmod_lab import diagnostics, pretraining, runs
from xmod_lab.tasks.common import backbone_languages

log = logging.getLogger("xmod_lab.train")


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit + test; returns every logged metric (`test/de_DE/acc`, `val/avg/acc`, ...)."""
    out = Path(cfg.paths.output_dir)
    runs.check_ckpt_path(cfg.ckpt_path)
    if pretraining.wanted(cfg):  # the `pretrain` stage: an MLM run (cached) whose export becomes model.pretrained
        pretraining.use_pretrained(cfg, train)
    L.seed_everything(cfg.seed, workers=True)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    datamodule = runs.build_datamodule(cfg, backbone_languages(cfg.model, cfg.languages))
    task = runs.build(cfg.task)
    if sorted(datamodule.eval_languages) != sorted(task.eval_languages):
        raise ValueError(f"data evaluates {datamodule.eval_languages} but the task expects {task.eval_languages}")
    runs.check_tokenizer_fits(datamodule, task.model)
    with open_dict(cfg):  # the task names its main metric (checkpoint selection); config may override it
        cfg.monitor = cfg.monitor or runs.default_monitor(task, cfg.languages)
        cfg.monitor_mode = cfg.monitor_mode or task.monitor_mode
    runs.start_run(out, cfg)
    counts = task.parameter_counts
    log.info("parameters: %s trainable, %s frozen (freeze.policy=%s)", f"{counts['trainable']:,}",
             f"{counts['frozen']:,}", cfg.freeze.policy)

    callbacks = [instantiate(c) for c in (cfg.callbacks or {}).values()]
    loggers = [instantiate(c) for c in (cfg.logger or {}).values()]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for logger in trainer.loggers:
        logger.log_hyperparams({"parameters/trainable": counts["trainable"], "parameters/frozen": counts["frozen"]})

    if cfg.train:
        trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    checkpoint = next((c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)), None)
    best = checkpoint.best_model_path if checkpoint is not None and checkpoint.best_model_path else None
    if not cfg.train:
        best = cfg.ckpt_path
    split = "test" if cfg.test else "val"
    if cfg.test:
        trainer.test(task, datamodule=datamodule, ckpt_path=best, verbose=False)
    else:
        trainer.validate(task, datamodule=datamodule, ckpt_path=best, verbose=False)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    table = runs.table_from_metrics(metrics, split)

    if cfg.export_dir and trainer.is_global_zero:
        export(task, datamodule, cfg.export_dir)
    diagnosis = diagnostics.assess(table, trainer, datamodule)  # degenerate classifiers, flagged
    runs.finish_run(out, split, table, {
        "task": cfg.task._target_, "checkpoint": best, "train_languages": list(cfg.languages.train),
        "eval_languages": task.eval_languages, "parameters": counts, "global_step": trainer.global_step,
        "diagnostics": diagnosis,
    })
    if diagnosis and trainer.is_global_zero:
        log.info("\n%s", diagnostics.format_assessment(table, diagnosis))
    return metrics


def export(task: L.LightningModule, datamodule: L.LightningDataModule, export_dir: str) -> None:
    """save_pretrained of backbone + head, and the tokenizer: `transformers` loads the directory."""
    task.model.save_pretrained(export_dir)
    tokenizer = getattr(datamodule, "tokenizer", None)
    if tokenizer is not None:
        tokenizer.save_pretrained(export_dir)
    log.info("exported the model%s to %s", " and tokenizer" if tokenizer is not None else "", export_dir)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    return metrics.get(cfg.optimized_metric) if cfg.optimized_metric else None  # for hparams_search


if __name__ == "__main__":
    main()
