"""Compose the real configs in-process (Hydra's compose API) and shrink them to tiny CPU runs."""

from __future__ import annotations

import contextlib
from pathlib import Path

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

import xmod_lab.conf.schema  # noqa: F401  (registers the schemas)

# A 2-layer, 32-wide model, a few dozen examples, one short epoch: seconds on a CPU.
SHRINK = [
    "model=tiny",
    "model.config.hidden_size=32",
    "model.config.intermediate_size=64",
    "model.config.num_attention_heads=2",
    "trainer=cpu",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "callbacks.model_summary.max_depth=0",
]
# The synthetic data of the default experiment, generated once per test session (small).
SYNTHETIC = ["data.n_train=96", "data.n_eval=24", "data.batch_size=16", "data.eval_batch_size=24"]


def compose_run(name: str, run_dir: Path, cache_dir: Path, overrides: list[str]) -> DictConfig:
    """The config `xmod-<train|eval> <overrides>` would get, writing into run_dir.

    Train runs skip the default experiment's pre-training stage unless the overrides name `pretrain`
    (tests/test_paper.py covers it): they fine-tune the shrunk model as built."""
    if name == "train" and not any(o.lstrip("+~").startswith("pretrain") for o in overrides):
        overrides = ["pretrain=none", *overrides]
    GlobalHydra.instance().clear()
    with initialize_config_module("xmod_lab.conf", version_base="1.3"):
        cfg = compose(name, return_hydra_config=True, overrides=[
            f"paths.root_dir={run_dir.parent}", f"paths.output_dir={run_dir}", f"paths.cache_dir={cache_dir}",
            *overrides,
        ])
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # a real run's config has no hydra node
    return cfg


@contextlib.contextmanager
def no_hydra():
    try:
        yield
    finally:
        GlobalHydra.instance().clear()
