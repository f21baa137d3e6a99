import os

# No network on CI machines: every Hugging Face and W&B call must stay local.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pathlib  # noqa: E402

import pytest  # noqa: E402

SHARED_SAMPLES = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data" / "xtreme-samples"


@pytest.fixture(scope="session")
def xtreme_samples() -> pathlib.Path:
    """The real XTREME excerpts beside the checkout (../shared/data/xtreme-samples)."""
    if not SHARED_SAMPLES.is_dir():
        pytest.skip("../shared/data/xtreme-samples is not present")
    return SHARED_SAMPLES


@pytest.fixture(autouse=True)
def _no_hydra_state_between_tests():
    """Hydra keeps its job config and config search path in process-wide singletons: clear them after
    every test so one test's composed config never leaks into the next (order-dependent failures)."""
    yield
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().cfg = None
    GlobalHydra.instance().clear()
