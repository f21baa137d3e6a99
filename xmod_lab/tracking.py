"""Weights & Biases tracking that works on a laptop, in a sweep, on a cluster node without credentials.

``logger=wandb`` builds the logger through ``wandb_logger`` (conf/logger/wandb.yaml):

- mode: ``logger.wandb.mode``, else ``WANDB_MODE``, else offline. Online needs credentials
  (``WANDB_API_KEY`` or ``wandb login``); without them the run goes offline and the log says how to
  ``wandb sync`` it. Offline runs live in the run directory (``<run>/wandb/offline-run-*``).
- project, group, tags and name come from config; under ``-m`` the group defaults to the sweep directory,
  so a sweep's runs are grouped, and the name to the job's overrides (``adapter.adapter_reduction_factor=4``).
- the resolved config is logged when the run is created; at fit start the trainable and frozen parameter
  counts; every ``<stage>/<language>/<metric>`` the task logs is also gathered into a per-language
  ``wandb.Table`` per stage (``test/results``).
- the W&B run id is stored in ``<run>/wandb_run_id.txt``; ``ckpt_path=<old run>/checkpoints/...`` finds the
  old run's id and continues that W&B run (``resume="allow"``), its history at the checkpoint's step: W&B's
  step is the trainer's global step, so the resumed process's rows follow the killed one's. Offline, each
  process writes its own ``offline-run-*`` folder under the same id; ``wandb sync`` both, in order.
- the resolved config is the run's config, logged once, nested, numbers as numbers: Lightning's own
  hyper-parameter logging (the task's ``save_hyperparameters``) adds only keys the config lacks, as plain
  values, never a ``repr`` string over a config group. Under ``-m`` the job's swept overrides are also its
  tags (``adapter.adapter_reduction_factor=4``), so a sweep can be filtered and grouped by them.
- seeds: under ``-m`` the config also carries ``config_id``, the job's overrides minus ``seed``
  (``xmod_lab.seeds.config_id``, the same key ``xmod-report`` groups runs by). The group stays the sweep;
  group the sweep's runs by ``config_id`` in the W&B UI and runs that differ only in seed become one line
  with its mean and spread (``xmod-train -m seed=0,1,2 adapter.adapter_reduction_factor=4,8``).
- wandb not installed or misconfigured (bad mode, entity, ...): a warning and a CSV logger instead.

``ValidationScores`` (conf/callbacks/default.yaml) prints the main validation metric per language and its
average after every validation epoch, on the console and in the run's log.
"""

from __future__ import annotations

import logging
import netrc
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lightning.fabric.utilities.logger import _add_prefix
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import OmegaConf

from xmod_lab.results import AVERAGES, csv_rows, parse_metric_key, scores_by_set
from xmod_lab.run_dir import swept_keys
from xmod_lab.seeds import config_id
from xmod_lab.tasks.common import plain

log = logging.getLogger(__name__)

RUN_ID_FILE = "wandb_run_id.txt"


def has_credentials() -> bool:
    """Whether an API key is available for the W&B host, without contacting it."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def resolve_mode(mode: str | None) -> tuple[str, str | None]:
    """(mode to use, why it differs from what was asked, or None)."""
    asked = mode or os.environ.get("WANDB_MODE")
    if asked is None:
        return "offline", "WANDB_MODE is not set"
    if asked == "online" and not has_credentials():
        return "offline", "no W&B credentials (set WANDB_API_KEY or run `wandb login`)"
    return asked, None


def find_run_id(save_dir: str | os.PathLike, resume_from: str | os.PathLike | None) -> str | None:
    """The W&B run id to continue: this run directory's, else that of the run ``resume_from`` belongs to."""
    candidates = [Path(save_dir)]
    if resume_from:
        # <run>/checkpoints/last.ckpt -> <run>; also a run directory given directly
        candidates += list(Path(resume_from).resolve().parents)[:3]
    for folder in candidates:
        id_file = folder / RUN_ID_FILE
        if id_file.is_file():
            return id_file.read_text().strip() or None
    return None


def _hydra_defaults() -> dict[str, Any]:
    """Group/name defaults and the resolved job config from the current Hydra job (empty outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return {}
    hydra_cfg = HydraConfig.get()
    out: dict[str, Any] = {}
    if hydra_cfg.mode == RunMode.MULTIRUN:
        sweep_dir = Path(hydra_cfg.sweep.dir)
        try:
            sweep_dir = sweep_dir.resolve().relative_to(Path(hydra_cfg.runtime.cwd).resolve())
        except ValueError:
            pass
        out["group"] = str(sweep_dir)[-128:]  # W&B's limit
        swept = swept_keys(hydra_cfg.sweep.dir) | set((hydra_cfg.sweeper.get("params") or {}).keys())
        own = [o for o in hydra_cfg.overrides.task if o.split("=", 1)[0].lstrip("+~") in swept]
        out["name"] = ",".join(own) or hydra_cfg.job.override_dirname or f"job{hydra_cfg.job.num}"
        out["tags"] = [o[:64] for o in own]  # W&B's tag limit
        out["config_id"] = config_id(hydra_cfg.overrides.task)
    # xmod-train's resolved config.yaml (written before the loggers are built), else Hydra's composed one,
    # resolved now that the job's Hydra context is set
    run_dir = Path(hydra_cfg.runtime.output_dir)
    for saved in (
        run_dir / "config.yaml",
        run_dir / str(hydra_cfg.output_subdir or ".hydra") / "config.yaml",
    ):
        if saved.is_file():
            try:
                out["config"] = OmegaConf.to_container(OmegaConf.load(saved), resolve=True)
                break
            except Exception as e:  # an interpolation only the job itself can resolve: log without config
                log.warning("W&B: could not resolve %s for the run config (%s)", saved, e)
    return out


def wandb_logger(
    save_dir: str,
    project: str = "xmod-lab",
    entity: str | None = None,
    group: str | None = None,
    name: str | None = None,
    tags: Sequence[str] = (),
    mode: str | None = None,
    job_type: str = "train",
    resume_from: str | None = None,
    config: Mapping[str, Any] | None = None,
    log_model: bool = False,
) -> Logger:
    """A ``WandbLogger`` for this run (see the module doc), or a ``CSVLogger`` if W&B cannot be used.

    ``group``/``name`` None: the sweep directory / the job's overrides under ``-m``, W&B's default
    otherwise. ``config`` None: the Hydra job's resolved config. ``resume_from``: a checkpoint (or run
    directory) of an earlier run whose W&B run to continue.
    """
    try:
        import wandb
    except ImportError:
        return _fallback(save_dir, "wandb is not installed (pip install wandb)")
    defaults = _hydra_defaults()
    mode, why = resolve_mode(mode)
    run_id = find_run_id(save_dir, resume_from)
    if wandb.run is not None:  # the previous job of this sweep process: do not log into it
        wandb.finish()
    try:
        logger = ResultsTableWandbLogger(
            save_dir=save_dir,
            project=project,
            entity=entity,
            group=group or defaults.get("group"),
            name=name or defaults.get("name"),
            tags=list(dict.fromkeys([*tags, *defaults.get("tags", [])])),
            mode=mode,
            job_type=job_type,
            id=run_id,
            resume="allow" if run_id else None,
            config=_with_config_id(dict(config) if config is not None else defaults.get("config"),
                                   defaults.get("config_id")),
            log_model=log_model,
        )
        _start(logger, save_dir, mode, why)
    except Exception as e:  # wandb raises many types (UsageError, CommError, ValueError...) for bad settings
        return _fallback(save_dir, f"W&B could not start a run ({type(e).__name__}: {e})")
    return logger


def _with_config_id(config: dict[str, Any] | None, cid: str | None) -> dict[str, Any] | None:
    """The run config with ``config_id`` (the key runs that differ only in seed share), under ``-m``."""
    return config if cid is None else {**(config or {}), "config_id": cid}


@rank_zero_only
def _start(logger: WandbLogger, save_dir: str, mode: str, why: str | None) -> None:
    # create the run now, so a misconfiguration falls back before training instead of crashing after it
    run = logger.experiment
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    (Path(save_dir) / RUN_ID_FILE).write_text(run.id)
    if mode == "offline":
        sync_dir = Path(run.dir).parent.resolve()
        log.warning(
            "W&B runs offline (%s); the run is in %s. Upload it later with:  wandb sync %s",
            why or "WANDB_MODE=offline",
            sync_dir,
            sync_dir,
        )


def _fallback(save_dir: str, reason: str) -> CSVLogger:
    log.warning("%s; logging to CSV in %s/wandb_fallback instead.", reason, save_dir)
    return CSVLogger(save_dir=save_dir, name="wandb_fallback", version="")


def parameter_counts(model: Any) -> dict[str, int]:
    """Trainable and frozen parameter counts of a module (each shared tensor counted once)."""
    seen: set[int] = set()
    counts = {"trainable": 0, "frozen": 0}
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        counts["trainable" if p.requires_grad else "frozen"] += p.numel()
    return counts


class ValidationScores(Callback):
    """After every validation epoch, one line: the task's main metric per language and their average."""

    @rank_zero_only
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        name = str(getattr(pl_module, "main_metric", "acc"))
        scores = scores_by_set({k: float(v) for k, v in trainer.callback_metrics.items()}, "val", name)
        if not scores:
            return
        cells = [f"{eval_set} {value:.2f}" for eval_set, value in scores.items() if eval_set not in AVERAGES]
        cells += [f"{average} {scores[average]:.2f}" for average in AVERAGES if average in scores]
        epochs = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        log.info("epoch %d%s (step %d) validation %s: %s", trainer.current_epoch + 1, epochs, trainer.global_step,
                 name, " | ".join(cells))


def _columns_and_rows(rows: list[list[Any]]) -> tuple[list[str], list[list[Any]]]:
    return [str(c) for c in rows[0]], [[None if c == "" else c for c in row] for row in rows[1:]]


class ResultsTableWandbLogger(WandbLogger):
    """WandbLogger that also records parameter counts and a results table per stage (one row per evaluation set,
    with the adapter that scored it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._per_set: dict[str, dict[str, dict[str, float]]] = {}
        self._changed: set[str] = set()

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        # Lightning logs the task's saved hyper-parameters at fit start; its WandbLogger turns nested
        # DictConfig values into repr strings, overwriting the nested config groups logged at creation
        params = plain(vars(params) if not isinstance(params, Mapping) else params)
        known = self.experiment.config.keys()
        new = {k: v for k, v in params.items() if k not in known}
        if new:
            self.experiment.config.update(new, allow_val_change=True)

    @rank_zero_only
    def log_graph(self, model: Any, input_array: Any = None) -> None:
        # Lightning calls this once at fit start with the LightningModule: the moment the freezing
        # policy has been applied and the counts are final
        counts = parameter_counts(model)
        self.experiment.config.update({"params": counts}, allow_val_change=True)
        for key, value in counts.items():
            self.experiment.summary[f"params/{key}"] = value
        super().log_graph(model, input_array)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if step is None:
            super().log_metrics(metrics, step)
        else:
            # W&B's own step is the trainer's: a run resumed from a checkpoint continues its history at the
            # checkpoint's step (Lightning's logger would restart W&B's step at 0 in every process)
            values = {**_add_prefix(dict(metrics), self._prefix, self.LOGGER_JOIN_CHAR), "trainer/global_step": step}
            if step < self.experiment.step:  # re-logging an earlier step (W&B would drop it): keep the values
                self.experiment.log(values)
            else:
                self.experiment.log(values, step=step)
        for key, value in metrics.items():
            parsed = parse_metric_key(key)
            if parsed:
                stage, eval_set, metric = parsed
                self._per_set.setdefault(stage, {}).setdefault(eval_set, {})[metric] = float(value)
                self._changed.add(stage)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        # end of fit / validate / test: the latest value of every metric, one row per evaluation set
        import wandb

        adapters = dict(self.experiment.config.get("eval_adapters") or {})
        for stage in sorted(self._changed):
            rows = self._per_set[stage]
            table = wandb.Table(*_columns_and_rows(csv_rows(rows, adapters)))
            self.experiment.log({f"{stage}/results": table})
        self._changed.clear()
        super().finalize(status)
