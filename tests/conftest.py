import os

# No network on CI machines: every Hugging Face and W&B call must stay local.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pathlib  # noqa: E402
import subprocess  # noqa: E402

import pytest  # noqa: E402

try:
    from xdist.scheduler import LoadScopeScheduling
except ImportError:  # without pytest-xdist the suite runs in one process, in collection order
    LoadScopeScheduling = None

ROOT = pathlib.Path(__file__).resolve().parents[1]
SAMPLES = pathlib.Path("data") / "xtreme-samples"


def shared_samples() -> pathlib.Path | None:
    """The real XTREME excerpts: ``$XMOD_SHARED/data/xtreme-samples`` when set, else ``../shared`` beside the
    checkout, else beside the repository this one was cloned from (a clone made elsewhere, e.g. in a temporary
    directory, still tests on the real data instead of skipping)."""
    if os.environ.get("XMOD_SHARED"):
        return pathlib.Path(os.environ["XMOD_SHARED"]) / SAMPLES
    candidates = [ROOT.parent / "shared" / SAMPLES]
    origin = subprocess.run(["git", "-C", str(ROOT), "config", "--get", "remote.origin.url"],
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    local = origin.removeprefix("file://")
    if local and "://" not in local and ":" not in local.split("/")[0]:  # a path, not a URL or host:path
        candidates.append(pathlib.Path(local).resolve().parent / "shared" / SAMPLES)
    return next((c for c in candidates if c.is_dir()), None)


SHARED_SAMPLES = shared_samples()


# `make test` runs the suite on two processes (pytest-xdist, `--dist loadfile`): one test file at a time goes to a
# process, so a module's expensive fixtures (a trained run, a seed run, a tokenizer) are built once. The files
# that took longest (--durations, summed per file) are handed out first: a long file started last would leave one
# process working alone at the end. Only the order depends on this list: a file missing from it still runs.
SLOWEST_FILES = (  # measured: pytest -n 2 --dist loadfile --durations=0 (2 shared cores, loaded)
    "tests/test_readme.py",  # a third of the suite's time on its own
    "tests/test_cli.py",
    "tests/test_paper.py",
    "tests/test_dataset_presets.py",
    "tests/test_train.py",
    "tests/test_sweep.py",
    "tests/test_checkpoints.py",
    "tests/test_ddp.py",
    "tests/data/test_bench_data.py",
    "tests/models/test_performance_semantics.py",
    "tests/test_languages_eval_sets.py",
    "tests/data/test_corpus.py",
)
# Files that use another file's session fixture (real sweeps run as subprocesses): run on the same process as
# that file, the fixture is built once instead of once per process.
SAME_PROCESS_AS = {"tests/test_notebooks.py": "tests/test_sweep.py"}

if LoadScopeScheduling is not None:

    class SlowestFilesFirst(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            file = nodeid.split("::", 1)[0]
            return SAME_PROCESS_AS.get(file, file)

        def _assign_work_unit(self, node) -> None:
            rank = {file: i for i, file in enumerate(SLOWEST_FILES)}
            for scope in sorted(self.workqueue, key=lambda scope: rank.get(scope, len(rank))):
                self.workqueue.move_to_end(scope)  # stable: the rest keep their collection order
            super()._assign_work_unit(node)

    def pytest_xdist_make_scheduler(config: pytest.Config, log) -> LoadScopeScheduling | None:
        return SlowestFilesFirst(config, log) if config.getvalue("dist") == "loadfile" else None


@pytest.fixture(scope="session")
def xtreme_samples() -> pathlib.Path:
    """The real XTREME excerpts (:func:`shared_samples`)."""
    if SHARED_SAMPLES is None or not SHARED_SAMPLES.is_dir():
        pytest.skip("shared/data/xtreme-samples is not present beside the checkout or its origin (set XMOD_SHARED)")
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
