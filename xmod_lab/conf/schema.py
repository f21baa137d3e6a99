"""Structured schemas for the config groups that xmod-lab itself reads.

Registered in Hydra's ConfigStore as `train_schema` / `eval_schema` and listed first in the
defaults of train.yaml / eval.yaml, so a misspelt key (`freeze.polcy=...`) or a wrong type
(`adapter.adapter_reduction_factor=abc`, `freeze.policy=frozen`) fails at composition with the key and
the allowed values. Groups whose keys are the arguments of a `_target_` (task, data, trainer,
logger, callbacks) are typed `Any`: instantiation itself rejects an unknown argument.
"""

from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass
from enum import StrEnum
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from xmod_lab.options import ADAPTER_FIELDS, ADAPTER_MODES, AUTO_POLICY, FREEZE_ARGUMENTS, FREEZE_POLICIES

# OmegaConf reads the annotations at runtime: keep typing.Optional/Union (no `X | None` strings).
# ruff: noqa: UP007, UP045


# The allowed values and the keys of `adapter` and `freeze` come from xmod_lab.options, where the model layer
# reads them too: one list of each.
AdapterMode = StrEnum("AdapterMode", [(mode, mode) for mode in ADAPTER_MODES], module=__name__)
FreezePolicy = StrEnum("FreezePolicy", [(p, p) for p in (AUTO_POLICY, *FREEZE_POLICIES)], module=__name__)
_CHOICES = {"adapter_mode": AdapterMode, "policy": FreezePolicy}  # typed as one of their values


class Schedule(StrEnum):
    constant = "constant"
    linear = "linear"


@dataclass
class ModelConf:
    """Backbone source: a hub id / local dir (`pretrained`) or a fresh model from `config`."""

    pretrained: Optional[str] = None
    config: dict[str, Any] = field(default_factory=dict)  # XmodConfig fields (overrides when pretrained)


@dataclass
class LanguagesConf:
    """Adapter languages of the backbone and the languages to train / evaluate on (X-MOD codes)."""

    adapters: Optional[list[str]] = None  # None: the checkpoint's own list
    add: dict[str, Any] = field(default_factory=dict)  # new code -> init_from (code, list of codes, or null)
    train: list[str] = MISSING  # dataset language codes (en, de, ...)
    eval: list[str] = MISSING
    map: dict[str, str] = field(default_factory=dict)  # dataset code -> X-MOD code, beyond the defaults


def _field(default: Any) -> Any:
    if isinstance(default, tuple | list):  # a sequence default: a fresh list for each config
        return field(default_factory=lambda: list(default))
    return field(default=default)


AdapterConf = make_dataclass("AdapterConf", [
    (name, Optional[_CHOICES.get(name, kind)], field(default=None)) for name, kind in ADAPTER_FIELDS.items()
], namespace={"__module__": __name__, "__doc__": "XmodConfig's adapter fields, under their own names (models "
              "built from scratch); null keeps the XmodConfig/checkpoint value."})
FreezeConf = make_dataclass("FreezeConf", [
    (name, _CHOICES.get(name, kind), _field(default)) for name, (kind, default) in FREEZE_ARGUMENTS.items()
], namespace={"__module__": __name__, "__doc__": "Arguments of xmod_lab.models.freezing.apply_freeze_policy."})


@dataclass
class PathsConf:
    root_dir: str = MISSING
    log_dir: str = MISSING
    cache_dir: str = MISSING
    output_dir: str = MISSING


# Types only: the values (one default each) are in conf/train.yaml, and the experiment presets override them.
@dataclass
class OptimizerConf:
    lr: float = MISSING
    betas: list[float] = MISSING
    eps: float = MISSING
    weight_decay: float = MISSING


@dataclass
class SchedulerConf:
    name: Schedule = MISSING
    warmup_steps: int = MISSING
    warmup_ratio: float = MISSING


@dataclass
class _RunConf:
    model: ModelConf = field(default_factory=ModelConf)
    languages: LanguagesConf = field(default_factory=LanguagesConf)
    adapter: AdapterConf = field(default_factory=AdapterConf)
    task: Any = MISSING
    data: Any = MISSING
    trainer: Any = MISSING
    logger: Optional[Any] = None
    paths: PathsConf = field(default_factory=PathsConf)
    name: str = "run"
    seed: int = 42
    torch_threads: Optional[int] = None  # torch.set_num_threads; null = torch's default
    ckpt_path: Optional[str] = None
    tags: list[str] = field(default_factory=list)


@dataclass
class TrainConf(_RunConf):
    freeze: FreezeConf = field(default_factory=FreezeConf)
    optimizer: OptimizerConf = field(default_factory=OptimizerConf)
    scheduler: SchedulerConf = field(default_factory=SchedulerConf)
    callbacks: Optional[Any] = None
    train: bool = True
    test: bool = True  # evaluate the test split of every eval language at the end
    export_dir: Optional[str] = None  # save_pretrained of the final backbone + head (+ tokenizer)
    export_default_language: Optional[str] = None  # the export's default_language; None: the first training one's
    pretrain: Optional[Any] = None  # the `pretrain` group: a pre-training stage run first (xmod_lab.pretraining)
    monitor: Optional[str] = None  # None: the task's main metric (e.g. val/avg/acc)
    monitor_mode: Optional[str] = None
    optimized_metric: Optional[str] = None  # read by hparams_search (Optuna)


@dataclass
class EvalConf(_RunConf):
    split: str = "test"  # "test" or "validation"
    freeze: FreezeConf = field(default_factory=lambda: FreezeConf(policy=FreezePolicy.none))
    # An experiment preset (xmod-eval experiment=... ckpt_path=...) picks the task, data, model, languages, adapter
    # and trainer to evaluate with; it also sets these training settings, which xmod-eval reads nowhere
    pretrain: Optional[Any] = None
    optimizer: Optional[OptimizerConf] = None
    scheduler: Optional[SchedulerConf] = None
    test: Optional[bool] = None
    export_dir: Optional[str] = None
    callbacks: Optional[Any] = None  # training callbacks (paper_mlm's fact probe runs at validations of a fit)


def published_languages(checkpoint: str) -> list[str]:
    """``${xmod_languages:facebook/xmod-base}``: the adapter list of a published checkpoint family, read from
    its one home, ``xmod_lab.models.configuration.PUBLISHED_LANGUAGES``."""
    # imported when a config asks (not at module import): `xmod-train --help` must not load torch
    from xmod_lab.models.configuration import PUBLISHED_LANGUAGES

    if checkpoint not in PUBLISHED_LANGUAGES:
        raise ValueError(f"xmod_languages:{checkpoint}: no published language list; known: {sorted(PUBLISHED_LANGUAGES)}")
    return list(PUBLISHED_LANGUAGES[checkpoint])


def register() -> None:
    if not OmegaConf.has_resolver("xmod_languages"):
        OmegaConf.register_new_resolver("xmod_languages", published_languages)
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConf)
    cs.store(name="eval_schema", node=EvalConf)


register()
