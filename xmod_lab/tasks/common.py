"""What the task modules share, as plain functions (no base class, see docs: torchtune style).

Every task builds its backbone + head with `build_model`, freezes with `freeze`, groups its
parameters with `parameter_groups`, builds AdamW + schedule with `configure_adamw`, and logs
per-language metrics with `log_per_language`.
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
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn
from torchmetrics import MeanMetric

from xmod_lab.data.languages import to_xmod_language
from xmod_lab.models import XmodConfig
from xmod_lab.models.freezing import apply_freeze_policy, parameter_report

log = logging.getLogger(__name__)

# Lightning asks for sync_dist=True on every epoch-level value under DDP; log_per_language's values come
# from torchmetrics' compute(), which already synced them: the warning is false for those keys only.
SYNCED_METRIC_WARNING = r"It is recommended to use `self.log\('(val|test)/[^/']+/[^/']+', \.\.\., sync_dist=True\)`"
warnings.filterwarnings("ignore", message=SYNCED_METRIC_WARNING)

# Config fields of the `adapter` group -> XmodConfig fields (names from the paper / transformers).
ADAPTER_FIELDS = {
    "reduction_factor": "adapter_reduction_factor",
    "layer_norm": "adapter_layer_norm",
    "reuse_layer_norm": "adapter_reuse_layer_norm",
    "ln_before": "ln_before_adapter",
    "mode": "adapter_mode",
    "layers": "adapter_layers",
    "activation": "adapter_activation",
}


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
        raise ValueError(f"unknown adapter option(s) {sorted(unknown)}; known: {sorted(ADAPTER_FIELDS)}")
    # null = keep the model's (or XmodConfig's) value
    return {ADAPTER_FIELDS[k]: v for k, v in adapter.items() if v is not None}


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
        ckpt_config = XmodConfig.from_pretrained(pretrained)
        clashing = {k: (getattr(ckpt_config, k, None), v) for k, v in arch.items() if getattr(ckpt_config, k, None) != v}
        if clashing:
            raise ValueError(
                f"adapter options {clashing} (checkpoint value, requested value) change the architecture of "
                f"{pretrained!r}; they apply only to models trained from scratch (model.pretrained=null). "
                "Use adapter=default with a pretrained checkpoint."
            )
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


def backbone_languages(model: Mapping[str, Any], languages: Mapping[str, Any]) -> list[str]:
    """The adapter languages (in index order) that `build_model` will produce, read without building it.

    The datamodule needs them for `lang_ids` before the task builds the model; only a checkpoint's
    config.json is read.
    """
    wanted, to_add = languages.get("adapters"), list((languages.get("add") or {}).keys())
    if model.get("pretrained"):
        _check_pretrained_source(model["pretrained"])
        have = list(XmodConfig.from_pretrained(model["pretrained"]).languages)
        _check_available(model["pretrained"], have, wanted, to_add)
        base = have if wanted is None else [code for code in have if code in wanted]
    else:
        base = [code for code in (wanted or []) if code not in to_add]
    return base + [code for code in to_add if code not in base]


def eval_languages(languages: Mapping[str, Any]) -> list[str]:
    """X-MOD codes of the evaluation languages (the config lists dataset codes: en, de, ...)."""
    return [to_xmod_language(str(code), languages.get("map")) for code in languages.get("eval") or []]


def check_languages(net: nn.Module, codes: Sequence[str], what: str) -> None:
    """Every code in `codes` must have an adapter in the backbone."""
    have = list(net.config.languages)
    if getattr(net.config, "adapter_mode", "modular") != "modular":
        return  # shared/none: one (or no) adapter serves every language listed in config.languages
    missing = [code for code in codes if code not in have]
    if missing:
        raise ValueError(
            f"{what} {missing} have no adapter in the backbone (it has {have}); "
            "choose languages the model has, or add them with +languages.add.<code>=<init_from_language>"
        )


def apply_freeze(net: nn.Module, policy: str = "paper", languages: Sequence[str] | None = None,
           include: Sequence[str] = (), exclude: Sequence[str] = (), train_embeddings: bool = False,
           train_head: bool = False) -> dict[str, int]:
    """Apply a freezing policy (xmod_lab.models.freezing); log and return the parameter counts."""
    apply_freeze_policy(net, policy, languages=list(languages) if languages else None, include=list(include),
                        exclude=list(exclude), train_embeddings=train_embeddings, train_head=train_head)
    report = parameter_report(net)
    log.info("freeze=%s: %s trainable, %s frozen parameters\n%s", policy, f"{report.trainable:,}",
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


def configure_adamw(module, optimizer: Mapping[str, Any], scheduler: Mapping[str, Any]) -> dict[str, Any]:
    """AdamW over the trainable parameters of `module.model` + a per-step LambdaLR."""
    opt = torch.optim.AdamW(
        parameter_groups(module.model, optimizer.get("weight_decay", 0.0)),
        lr=optimizer["lr"], betas=tuple(optimizer.get("betas", (0.9, 0.999))), eps=optimizer.get("eps", 1e-8),
    )
    total = module.trainer.estimated_stepping_batches
    total = int(total) if math.isfinite(total) else 0
    warmup = int(scheduler.get("warmup_steps") or 0) or int(round(scheduler.get("warmup_ratio", 0.0) * total))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(scheduler.get("name", "linear"), warmup, total))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


# Batch keys the X-MOD heads accept; collators may add others (example ids, offsets, ...).
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "lang_ids", "labels",
                "start_positions", "end_positions")


def model_inputs(batch: Mapping[str, Any]) -> dict[str, Any]:
    return {k: batch[k] for k in MODEL_INPUTS if k in batch}


def split_by_language(lang_ids: torch.Tensor, codes: Sequence[str]) -> dict[str, torch.Tensor]:
    """{language: boolean mask over the batch} for the languages present."""
    return {codes[int(i)]: lang_ids == i for i in torch.unique(lang_ids).tolist()}


def language_metric(metrics: nn.ModuleDict, lang: str):
    """The metric of one evaluation language; a clear error for a language the task was not told about."""
    if lang not in metrics:
        raise ValueError(
            f"evaluation batch has language {lang!r}, which is not in languages.eval={list(metrics)}; "
            "the datamodule and the task must get the same evaluation languages"
        )
    return metrics[lang]


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


def per_language_means(languages: Sequence[str], stages: Sequence[str] = ("val", "test")) -> nn.ModuleDict:
    """{stage: {language: FloatMean}}: the per-language metric states of a task."""
    return nn.ModuleDict({stage: nn.ModuleDict({lang: FloatMean() for lang in languages}) for stage in stages})


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


def compute_means(metrics: nn.ModuleDict) -> dict[str, float]:
    """compute() + reset() of per-language MeanMetrics, dropping languages that saw no example.

    Every rank computes every language (compute() syncs across ranks, so skipping one would hang).
    """
    out = {}
    for lang, metric in metrics.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "compute before update" for a language without batches
            value = float(metric.compute())
        metric.reset()
        if not math.isnan(value):
            out[lang] = value
    return out


def log_per_language(module, stage: str, scores: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Log `{stage}/{lang}/{metric}` and the unweighted mean over languages `{stage}/avg/{metric}`."""
    logs: dict[str, float] = {}
    per_metric: dict[str, list[float]] = {}
    for lang, metrics in scores.items():
        for name, value in metrics.items():
            value = float(value)
            logs[f"{stage}/{lang}/{name}"] = value
            per_metric.setdefault(name, []).append(value)
    for name, values in per_metric.items():
        logs[f"{stage}/avg/{name}"] = sum(values) / len(values)
    # values are already synced across ranks by torchmetrics (SYNCED_METRIC_WARNING); no dataloader suffix
    module.log_dict(logs, add_dataloader_idx=False, sync_dist=False)
    return logs
