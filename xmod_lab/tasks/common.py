"""What the task modules share, as plain functions (no base class, see docs: torchtune style).

Every task's ``__init__`` saves its arguments and calls :func:`setup_task` (backbone + head, freezing,
evaluation sets); it builds AdamW + schedule with :func:`configure_adamw` and logs its scores per evaluation
set with :func:`log_eval_scores`. Evaluation sets are the dataset's codes (``languages.eval``: ``de``,
``en-ar``), one val/test dataloader each, in that order: a score is keyed by the set it was computed on
(``xmod_lab.results``), never by the adapter that scored it, so sets that share an adapter stay apart.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

import torch
from lightning import LightningModule
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn
from torchmetrics import MeanMetric

from xmod_lab import hub
from xmod_lab.data.languages import to_xmod_language
from xmod_lab.models import XmodConfig
from xmod_lab.models.freezing import apply_freeze_policy, parameter_report, resolve_policy
from xmod_lab.options import ADAPTER_FIELDS
from xmod_lab.results import check_eval_set_names, metric_key, with_averages

log = logging.getLogger(__name__)

# Lightning asks for sync_dist=True on every epoch-level value under DDP; log_eval_scores' values come
# from torchmetrics' compute(), which already synced them: the warning is false for those keys only.
SYNCED_METRIC_WARNING = r"It is recommended to use `self.log\('(val|test)/[^/']+/[^/']+', \.\.\., sync_dist=True\)`"
warnings.filterwarnings("ignore", message=SYNCED_METRIC_WARNING)


def plain(value: Any) -> Any:
    """OmegaConf containers -> dict/list, so checkpoints hold plain values only."""
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True, enum_to_str=True)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [plain(v) for v in value]
    return value


def _adapter_overrides(adapter: Mapping[str, Any] | None) -> dict[str, Any]:
    adapter = dict(adapter or {})
    unknown = set(adapter) - set(ADAPTER_FIELDS)
    if unknown:
        raise ValueError(f"unknown adapter option(s) {sorted(unknown)}; known (XmodConfig fields): "
                         f"{tuple(ADAPTER_FIELDS)}")
    return {k: v for k, v in adapter.items() if v is not None}  # null = keep the model's (or XmodConfig's) value


def build_model(
    head_cls: type,
    model: Mapping[str, Any],
    languages: Mapping[str, Any],
    adapter: Mapping[str, Any] | None = None,
    head_config: Mapping[str, Any] | None = None,
    model_config: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Backbone + head from plain config.

    model: {pretrained: hub id | local dir | None, config: {XmodConfig fields}}. With `pretrained`
    the weights are loaded and `config` holds overrides (dropout, ...); without, a fresh model is
    built from `config`, `adapter` and `languages.adapters`.
    languages: {adapters: list | None, add: {code: init_from | list | None}, ...}.
    model_config: the final XmodConfig as a dict; given when restoring a Lightning checkpoint, so
    nothing is downloaded and the architecture (languages added/pruned) is rebuilt exactly.
    The built model's ``config.languages`` is the one list of adapters (index order) everything else reads.
    """
    if model_config is not None:
        return head_cls(XmodConfig.from_dict(dict(model_config)))

    config = {**(model.get("config") or {}), **(head_config or {})}
    arch = _adapter_overrides(adapter)
    wanted = languages.get("adapters")
    to_add = dict(languages.get("add") or {})
    pretrained = model.get("pretrained")
    if pretrained:
        _check_pretrained_source(pretrained)
        with hub.reaching("model", pretrained, "model.pretrained"):
            ckpt_config = XmodConfig.from_pretrained(pretrained)
        clashing = {k: (getattr(ckpt_config, k, None), v) for k, v in arch.items() if getattr(ckpt_config, k, None) != v}
        if clashing:
            raise ValueError(
                f"adapter options {clashing} (checkpoint value, requested value) change the architecture of "
                f"{pretrained!r}; they apply only to models trained from scratch (model.pretrained=null). "
                "Use adapter=default with a pretrained checkpoint."
            )
        _check_overrides(pretrained, ckpt_config, model.get("config") or {})
        with hub.reaching("model", pretrained, "model.pretrained"):
            net = head_cls.from_pretrained(pretrained, **config)
        have = list(net.config.languages)
        _check_available(pretrained, have, wanted, to_add)
        if wanted is not None:
            prune = [code for code in have if code not in wanted]
            if prune:
                log.info("pruning %d adapters not in languages.adapters: %s", len(prune), prune)
                net.remove_languages(prune)
    else:
        if not wanted:
            raise ValueError("a model built from scratch (model.pretrained=null) needs languages.adapters")
        base_langs = [code for code in wanted if code not in to_add]
        net = head_cls(XmodConfig(languages=base_langs, **{**config, **arch}))
    for code, init_from in to_add.items():
        if code in net.config.languages:
            raise ValueError(f"languages.add: {code!r} already has an adapter; remove it from languages.add")
        log.info("adding language %s (adapter initialised from %s)", code, init_from or "random")
        net.add_language(code, init_from=init_from)
    return net


# What model.config may change on a pretrained checkpoint: regularisation only. Any other field would build
# another network around the loaded weights (2 of its 12 layers, say), silently or with a shape error.
OVERRIDABLE = ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout")


def _check_overrides(source: str, ckpt_config: XmodConfig, overrides: Mapping[str, Any]) -> None:
    changed = {k: (getattr(ckpt_config, k, None), v) for k, v in overrides.items()
               if k not in OVERRIDABLE and getattr(ckpt_config, k, None) != v}
    if changed:
        raise ValueError(
            f"model.config {changed} (checkpoint value, configured value) would change the architecture of "
            f"{source!r}; with model.pretrained only {', '.join(OVERRIDABLE)} may be set. Choose a model preset "
            "without architecture fields (model=base: config {}), or drop them: '~model.config.<field>'."
        )


def _check_available(source: str, have: list[str], wanted: Sequence[str] | None, to_add: Mapping) -> None:
    missing = [code for code in wanted or [] if code not in have and code not in to_add]
    if missing:
        raise ValueError(
            f"languages {missing} have no adapter in {source!r} (it has {have}); "
            "add them with +languages.add.<code>=<init_from_language> or pick another language set"
        )


_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def _check_pretrained_source(source: str) -> None:
    if not Path(source).expanduser().exists() and not _HUB_ID.match(source):
        raise FileNotFoundError(
            f"model.pretrained={source!r}: no such directory, and not a hub id like 'facebook/xmod-base'"
        )


def setup_task(module: LightningModule, head_cls: type, head_config: Mapping[str, Any] | None = None) -> None:
    """What every task's ``__init__`` does after ``save_hyperparameters()``: plain hyper-parameters, the
    backbone + head (``module.model``, its config saved so a checkpoint rebuilds it), the evaluation sets
    (``module.eval_sets``, ``module.train_sets``) and the freezing policy (``module.parameter_counts``)."""
    module.hparams.update({k: plain(v) for k, v in module.hparams.items()})
    hp = module.hparams
    # weights from a checkpoint or a pretrained directory (model_config: restored from a Lightning checkpoint)
    from_scratch = not hp.model.get("pretrained") and hp.get("model_config") is None
    module.model = build_model(head_cls, hp.model, hp.languages, hp.adapter, head_config, hp.get("model_config"))
    module.hparams["model_config"] = module.model.config.to_dict()
    module.eval_sets = [str(code) for code in hp.languages.get("eval") or []]
    module.train_sets = [str(code) for code in hp.languages.get("train") or []]
    check_eval_set_names(module.eval_sets)
    freeze = dict(hp.freeze or {})
    freeze["policy"] = resolve_policy(freeze.get("policy", "auto"), from_scratch)  # auto: paper or none, as in conf
    check_freeze_languages(freeze, module.model.config.languages, hp.languages)
    module.hparams["freeze"] = freeze
    module.parameter_counts = apply_freeze(module.model, **freeze, from_scratch=from_scratch)


def check_freeze_languages(freeze: Mapping[str, Any], adapters: Sequence[str], languages: Mapping[str, Any]) -> None:
    """``freeze.languages`` (freeze=adapters_only) names adapters of the built model: otherwise one message with the
    fix, before anything trains (a dataset code given for its adapter code, or a language whose adapter is not
    added yet)."""
    listed = [str(code) for code in freeze.get("languages") or []]
    unknown = [code for code in listed if code not in adapters]
    if freeze.get("policy") != "adapters_only" or not unknown:
        return
    meant = {code: _adapter_code(code, languages.get("map")) for code in unknown}
    if all(adapter in adapters for adapter in meant.values()):
        fix = f"it takes adapter codes: freeze.languages=[{','.join(meant.get(code, code) for code in listed)}]"
    else:
        fix = ("a language without an adapter needs one first: +languages.add.<code>=<init_from_language> "
               "(e.g. '+languages.add.rm_CH=[de_DE,fr_XX]'), or name adapters the model has")
    raise ValueError(f"freeze.languages {unknown}: the model has no such adapter (its adapters: {list(adapters)}); {fix}")


def _adapter_code(code: str, language_map: Mapping[str, str] | None) -> str | None:
    try:
        return to_xmod_language(code, language_map)
    except ValueError:
        return None


def fit_in_train_mode(module: LightningModule) -> None:
    """Every task's ``on_fit_start``: the whole module (backbone, adapters, head) in training mode.

    ``from_pretrained`` returns a model in eval mode, and Lightning 2.x trains in the mode it finds (it warns
    "Found N module(s) in eval mode at the start of training"): without this, fine-tuning a loaded model runs
    with dropout off, whatever its config says. Validation and test still switch to eval mode themselves,
    and ``requires_grad`` (the freezing policy) is not touched."""
    module.train()


def keep_train_loss(module: LightningModule, loss: torch.Tensor, batch_size: int) -> None:
    """Every task's ``training_step``: hold this step's loss for :func:`log_train_loss` (no ``self.log`` here).
    Not the ``outputs`` that Lightning hands ``on_train_batch_end``: with gradient accumulation that loss is
    divided by ``accumulate_grad_batches``, and logging it would understate the training loss."""
    module._train_loss = (loss.detach(), batch_size)


def log_train_loss(module: LightningModule, *_: Any) -> None:
    """Every task's ``on_train_batch_end``: ``train/loss`` (and the progress bar's loss) on the steps the loggers
    write it, and on each epoch's last batch, so epoch-end callbacks read the last step's loss.

    Lightning's ``self.log`` costs ~5% of a small model's step (5.3% of a paper_mlm K = 8 run's training loop
    under py-spy: it deep-copies the metric's metadata on every call), and an on-step value logged between two
    writes is never written. The write decision is Lightning's own (``should_update_logs``, read after the
    callbacks' batch-end hooks, which may stop training), so every written row holds the loss of its own step;
    in between, the progress bar and ``callback_metrics`` show the last logged value."""
    trainer = module.trainer
    connector = getattr(trainer, "_logger_connector", None)
    due = connector is None or connector.should_update_logs or trainer.fast_dev_run or trainer.is_last_batch
    if due and getattr(module, "_train_loss", None) is not None:
        loss, batch_size = module._train_loss
        module.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
    module._train_loss = None


def eval_set(module: Any, dataloader_idx: int) -> int:
    """The index of the evaluation set a val/test dataloader serves (one dataloader per set, in order)."""
    if not 0 <= dataloader_idx < len(module.eval_sets):
        raise ValueError(
            f"evaluation dataloader {dataloader_idx} has no evaluation set: the task evaluates {module.eval_sets} "
            "(languages.eval); the datamodule and the task must get the same evaluation sets, in the same order"
        )
    return dataloader_idx


def apply_freeze(net: nn.Module, from_scratch: bool = False, **freeze: Any) -> dict[str, int]:
    """Apply a freezing policy (``freeze``: the arguments of xmod_lab.models.freezing.apply_freeze_policy, the
    `freeze` config group); log and return the parameter counts."""
    languages = freeze.get("languages")
    apply_freeze_policy(net, **{**freeze, "languages": list(languages) if languages else None},
                        from_scratch=from_scratch)
    report = parameter_report(net)
    log.info("freeze=%s: %s trainable, %s frozen parameters\n%s", freeze.get("policy"), f"{report.trainable:,}",
             f"{report.frozen:,}", report.table)
    return {"trainable": report.trainable, "frozen": report.frozen}


def parameter_groups(net: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups: decayed weights, and biases + LayerNorm parameters without decay."""
    decay, no_decay, seen = [], [], set()
    for module in net.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:  # tied weights (MLM decoder) appear twice
                continue
            seen.add(id(p))
            (no_decay if isinstance(module, nn.LayerNorm) or name == "bias" else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_lambda(name: str, warmup_steps: int, total_steps: int):
    """Multiplier for LambdaLR: linear warmup, then constant or linear decay to 0 at total_steps."""
    if name not in ("constant", "linear"):
        raise ValueError(f"scheduler.name={name!r}; choose 'constant' or 'linear'")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if name == "constant":
            return 1.0
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


def configure_adamw(module: LightningModule, optimizer: Mapping[str, Any] | None,
                    scheduler: Mapping[str, Any] | None) -> dict[str, Any]:
    """AdamW over the trainable parameters of `module.model` + a per-step LambdaLR. The values come from the
    run's config (conf/train.yaml holds the one default); a task built without them cannot train."""
    if not optimizer or optimizer.get("lr") is None:
        raise ValueError(f"{type(module).__name__} was built without optimizer settings (optimizer.lr, ...); "
                         "xmod-train passes the run's `optimizer` group")
    scheduler = scheduler or {}
    groups = parameter_groups(module.model, optimizer.get("weight_decay", 0.0))
    # One fused kernel per step instead of a python loop over ~200 tensors: 3.4x faster AdamW steps on CPU
    # (docs/benchmarks.md); plain tensors on CPU/GPU only (not DTensors of FSDP, not other devices).
    fused = all(type(p) is nn.Parameter and p.device.type in ("cpu", "cuda") and p.is_floating_point()
                for g in groups for p in g["params"])  # fmt: skip
    opt = torch.optim.AdamW(
        groups, lr=optimizer["lr"], betas=tuple(optimizer.get("betas", (0.9, 0.999))),
        eps=optimizer.get("eps", 1e-8), fused=fused or None,
    )  # fmt: skip
    total = module.trainer.estimated_stepping_batches
    total = int(total) if math.isfinite(total) else 0
    warmup = int(scheduler.get("warmup_steps") or 0) or int(round(scheduler.get("warmup_ratio", 0.0) * total))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(scheduler.get("name", "linear"), warmup, total))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class FloatMean(MeanMetric):
    """A MeanMetric that accumulates in float32 whatever the module is cast to: precision=bf16-true casts
    the whole LightningModule, and a bf16 sum keeps 8 significant bits (an accuracy of 0.734 read 73.44)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.set_dtype(torch.float32)  # also when built under a bf16 default dtype

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], exclude_state: Sequence[str] = ()) -> FloatMean:
        def keep_float32(t: torch.Tensor) -> torch.Tensor:
            out = fn(t)
            return out.to(t.dtype) if t.is_floating_point() and out.is_floating_point() else out

        return super()._apply(keep_float32, exclude_state)


def per_set_means(n_sets: int, stages: Sequence[str] = ("val", "test")) -> nn.ModuleDict:
    """{stage: {set index: FloatMean}}: a task's metric state per evaluation set (keys are indices: a
    dataset code such as ``PAN-X.de`` is not a valid module name)."""
    return nn.ModuleDict({stage: nn.ModuleDict({str(i): FloatMean() for i in range(n_sets)}) for stage in stages})


def check_finite_loss(module: Any, loss: torch.Tensor) -> None:
    """Stop training on a NaN/inf loss: the run would go on to report chance-level scores as if it had worked.

    One device sync per step (the loss value), negligible next to the step itself.
    """
    if not bool(torch.isfinite(loss.detach()).all()):
        trainer = getattr(module, "_trainer", None)
        where = f" at step {trainer.global_step} (epoch {trainer.current_epoch})" if trainer is not None else ""
        precision = f", trainer.precision={trainer.precision}" if trainer is not None else ""
        raise FloatingPointError(
            f"training loss is {float(loss.detach().float())}{where}{precision}: the run diverged, stopping. "
            "Lower optimizer.lr, keep trainer.gradient_clip_val, or use trainer.precision=32-true / bf16-mixed."
        )


def compute_means(metrics: nn.ModuleDict, names: Sequence[str]) -> dict[str, float]:
    """{evaluation set name: value}: compute() + reset() of per-set metrics (keyed by set index), dropping
    sets that saw no example. Every rank computes every set (compute() syncs across ranks, so skipping one
    would hang)."""
    out = {}
    for index, metric in metrics.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "compute before update" for a set without batches
            value = float(metric.compute())
        metric.reset()
        if not math.isnan(value):
            out[names[int(index)]] = value
    return out


def log_eval_scores(module: Any, stage: str, scores: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Log ``{stage}/{eval set}/{metric}`` and the averages over evaluation sets (``avg``, and ``zs_avg``
    over the sets that are not training languages)."""
    table = with_averages(scores, module.train_sets)
    logs = {metric_key(stage, name, metric): float(value) for name, row in table.items() for metric, value in row.items()}
    # values are already synced across ranks by torchmetrics (SYNCED_METRIC_WARNING); no dataloader suffix
    module.log_dict(logs, add_dataloader_idx=False, sync_dist=False)
    return logs
