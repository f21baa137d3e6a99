"""The ``pretrain`` stage of xmod-train: X-MOD's workflow (pre-train, then fine-tune) in one command.

With ``pretrain=synthetic_mlm`` (the default experiment) a run first needs a pre-trained backbone. That
backbone is made by an ordinary xmod-train run: the config composed from ``pretrain.overrides`` (e.g.
``task=masked_lm data=synthetic_mlm``) over the same base config, given this run's model, adapter options,
adapter languages (trained and evaluated on all of them) and synthetic data generation settings, so the
architecture and tokenizer match by construction. It runs once; its export and run directory are cached
under ``<paths.cache_dir>/pretrained/<hash of its canonical config>`` and become ``model.pretrained``. The hash
(:func:`canonical`) covers what determines the weights, so equivalent settings (defaults written out, a language
map entry, fine-tuning-only overrides) share one folder; change the backbone and it gets its own; delete the
folder to rerun. ``pretrain=auto`` (xmod-train's default) runs the stage only for a run of the default
experiment's kind (:func:`applicable`); ``pretrain=synthetic_mlm`` always.

The stage never runs when ``model.pretrained`` is given: pre-training replaces it, so both at once is an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf, open_dict

from xmod_lab.data.synthetic import synthetic_codes
from xmod_lab.data.synthetic_world import WORLD_DEFAULTS
from xmod_lab.models import XmodConfig

log = logging.getLogger(__name__)

RUN_SUBDIR = "pretraining_run"  # the pre-training run's directory inside the cached folder
# data keys copied from the run's data config: the synthetic generation settings (same folder, same tokenizer)
GENERATION_KEYS = ("root", "vocab_size", "n_train", "n_eval", "n_corpus", "seed", *WORLD_DEFAULTS)
# parts of the pre-training config that do not change the weights it produces
_NOT_IN_KEY = ("paths", "logger", "callbacks", "name", "tags", "export_dir", "torch_threads", "pretrain")
_TRAINER_NOT_IN_KEY = ("default_root_dir", "enable_progress_bar", "log_every_n_steps", "enable_model_summary")
_DATA_NOT_IN_KEY = ("root", "cache_dir", "num_workers", "train_langs", "eval_langs", "language_map")
# the task node's interpolated copies of top-level groups (keyed once, canonically, from those)
_TASK_COPIES = ("model", "languages", "adapter", "freeze", "optimizer", "scheduler")
_CONFIG_NOT_IN_KEY = ("transformers_version", "_name_or_path", "architectures")


def wanted(cfg: DictConfig) -> bool:
    """Whether ``cfg`` runs the stage: ``pretrain.overrides`` given, and with pretrain=auto (xmod-train's
    default) only for a run of the default experiment's kind (:func:`applicable`)."""
    pretrain = cfg.get("pretrain")
    if not (pretrain and pretrain.get("overrides")):
        return False
    if pretrain.get("only_when_applicable"):
        reason = applicable(cfg)
        if reason:
            log.info("no pre-training stage (pretrain=auto): %s", reason)
            return False
    return True


def applicable(cfg: DictConfig) -> str | None:
    """Why the synthetic pre-training stage does not apply to ``cfg`` (None: it does): it pre-trains a model
    from scratch on the synthetic text of every adapter language, with the tokenizer of the run's synthetic data."""
    if cfg.model.get("pretrained"):
        return f"model.pretrained={cfg.model.pretrained!r} is loaded"
    if "root" not in cfg.data or "vocab_size" not in cfg.data:
        return f"the data ({cfg.data.get('_target_')}) is not synthetic"
    language_map = OmegaConf.to_container(cfg.languages.map, resolve=True) if cfg.languages.get("map") else {}
    try:
        synthetic_codes(list(cfg.languages.adapters or []), language_map)  # type: ignore[arg-type]
    except ValueError:
        return f"languages.adapters {list(cfg.languages.adapters or [])} are not all synthetic languages"
    return None if cfg.languages.adapters else "languages.adapters is null (a checkpoint's own list)"


@contextlib.contextmanager
def _hydra() -> Iterator[None]:
    """Compose with the running app's search path when there is one (xmod-train), else the package's."""
    if GlobalHydra.instance().is_initialized():
        yield
    else:
        with initialize_config_module("xmod_lab.conf", version_base="1.3"):
            yield


def pretraining_config(cfg: DictConfig) -> DictConfig:
    """The resolved config of the pre-training run for ``cfg`` (its output paths not yet set)."""
    if cfg.model.get("pretrained"):
        raise ValueError(
            f"pretrain={cfg.pretrain.overrides} pre-trains a fresh backbone, but model.pretrained="
            f"{cfg.model.pretrained!r} is given too: use pretrain=none to fine-tune that checkpoint"
        )
    adapters = list(cfg.languages.adapters or [])
    if not adapters:
        raise ValueError("pretrain: a model pre-trained from scratch needs languages.adapters")
    with _hydra():
        pre = compose(config_name="train", overrides=[*cfg.pretrain.overrides, "pretrain=none"])
    language_map = OmegaConf.to_container(cfg.languages.map, resolve=True) if cfg.languages.get("map") else {}
    codes = synthetic_codes(adapters, language_map)
    with open_dict(pre):
        # key by key: these nodes are structured (xmod_lab/conf/schema.py)
        for key, value in OmegaConf.to_container(cfg.paths, resolve=True).items():
            pre.paths[key] = value
        for key, value in OmegaConf.to_container(cfg.model, resolve=False).items():
            pre.model[key] = value
        for key, value in OmegaConf.to_container(cfg.adapter, resolve=True, enum_to_str=True).items():
            pre.adapter[key] = value
        languages = {"adapters": adapters, "add": {}, "train": codes, "eval": codes, "map": language_map}
        for key, value in languages.items():
            pre.languages[key] = value
        if "root" in pre.data:
            if "root" not in cfg.data:
                raise ValueError(
                    "pretrain pre-trains on the synthetic languages, but this run's data "
                    f"({cfg.data.get('_target_')}) is not synthetic, so its tokenizer would differ: "
                    "use pretrain=none, or data=synthetic_nli"
                )
            for key in GENERATION_KEYS:
                if key in cfg.data:
                    pre.data[key] = cfg.data[key]
        # the console follows the run (a quiet run gets a quiet stage); not part of the cache key
        if cfg.trainer.get("enable_progress_bar") is not None:
            pre.trainer.enable_progress_bar = cfg.trainer.enable_progress_bar
        pre.torch_threads = cfg.get("torch_threads")
        pre.test = True
    return pre


def canonical(pre: DictConfig) -> dict[str, Any]:
    """What determines the weights the pre-training config produces, in one canonical form: the model as the
    XmodConfig it builds (adapter options written out at their defaults equal the defaults left null), the
    adapters and the synthetic languages they train on (not the map that named them), the data, training and
    task settings; not where files go, what is logged, or the copies the task node holds of other groups."""
    plain: dict[str, Any] = OmegaConf.to_container(pre, resolve=True, enum_to_str=True)  # type: ignore[assignment]
    keyed = {k: v for k, v in plain.items() if k not in _NOT_IN_KEY}
    languages = keyed.pop("languages")
    adapter = {k: v for k, v in (keyed.pop("adapter") or {}).items() if v is not None}
    model = keyed.pop("model")
    config = XmodConfig(languages=list(languages["adapters"]), **{**(model.get("config") or {}), **adapter}).to_dict()
    keyed["model"] = {k: v for k, v in sorted(config.items()) if k not in _CONFIG_NOT_IN_KEY}
    keyed["languages"] = {"adapters": languages["adapters"], "add": languages.get("add") or {},
                          "train": languages["train"], "eval": languages["eval"]}
    keyed["task"] = {k: v for k, v in keyed.get("task", {}).items() if k not in _TASK_COPIES}
    keyed["trainer"] = {k: v for k, v in keyed.get("trainer", {}).items() if k not in _TRAINER_NOT_IN_KEY}
    # a world setting that is off stays out of the key: a world that is off is today's world
    keyed["data"] = {k: v for k, v in keyed.get("data", {}).items()
                     if k not in _DATA_NOT_IN_KEY and not (k in WORLD_DEFAULTS and v == WORLD_DEFAULTS[k])}  # fmt: skip
    return keyed


def cache_key(pre: DictConfig) -> str:
    """A hash of :func:`canonical`: equivalent settings share one pre-trained backbone."""
    stamp = json.dumps(canonical(pre), sort_keys=True, default=str)
    return hashlib.sha256(stamp.encode()).hexdigest()[:12]


def is_complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / RUN_SUBDIR / "run_complete").is_file()


def use_pretrained(cfg: DictConfig, run: Callable[[DictConfig], Any]) -> DictConfig:
    """A copy of ``cfg`` whose ``model.pretrained`` is the cached pre-trained export for ``cfg``, running ``run``
    (xmod-train's ``train``) on the pre-training config first when it is not cached."""
    pre = pretraining_config(cfg)
    key = cache_key(pre)
    root = Path(cfg.paths.cache_dir).expanduser() / "pretrained"
    target = root / key
    if is_complete(target):
        log.info("pre-trained backbone: %s (cached; delete the folder to pre-train again)", target)
    else:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{key}-tmp-"))
        try:
            with open_dict(pre):
                pre.paths.output_dir = str(tmp / RUN_SUBDIR)
                pre.export_dir = str(tmp)
            log.info("pre-training the backbone first (%s; cached as %s)", " ".join(cfg.pretrain.overrides), target)
            run(pre)
            os.replace(tmp, target)
        except OSError:
            if not is_complete(target):
                raise
            # a concurrent run finished the same pre-training first
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    out = OmegaConf.merge(cfg, {"model": {"pretrained": str(target)}})
    assert isinstance(out, DictConfig)
    return out


def pretraining_results(folder: str | Path) -> dict[str, Any]:
    """The pre-training run's results.json (held-out MLM loss per language) of a cached folder."""
    return json.loads((Path(folder) / RUN_SUBDIR / "results.json").read_text())
