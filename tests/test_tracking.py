"""W&B tracking: offline runs read back from the files wandb wrote, resume, fallbacks."""

import json
import logging
import struct
import sys
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from xmod_lab import tracking

wandb = pytest.importorskip("wandb")


def read_wandb_records(run_dir: Path, timeout_s: float = 30.0) -> dict[str, list]:
    """Records of an offline run's ``run-<id>.wandb`` file, by kind (run, history, summary, ...).

    The file is a LevelDB-style log of protobuf records in 32 KiB blocks; wandb-core (a separate process)
    may still be flushing when the run is finished, so wait for the final ``exit`` record.
    """
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = run_dir.glob("run-*.wandb")
    deadline = time.monotonic() + timeout_s
    while True:
        data, block, pos, pending, records = path.read_bytes(), 32768, 7, b"", {}
        while pos + 7 <= len(data):
            if block - pos % block < 7:  # block trailer
                pos += block - pos % block
                continue
            _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
            if pos + 7 + length > len(data):  # a record wandb-core is still writing: read again
                break
            chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
            if kind in (1, 4):  # full record, last fragment
                record = pb.Record()
                try:
                    record.ParseFromString(pending + chunk)
                except DecodeError:  # its bytes are not flushed yet (the file grows in place): read again
                    if time.monotonic() > deadline:
                        raise
                    break
                records.setdefault(record.WhichOneof("record_type"), []).append(record)
                pending = b""
            elif kind in (2, 3):
                pending += chunk
        if "exit" in records or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def offline_runs(save_dir: Path) -> list[Path]:
    return sorted((save_dir / "wandb").glob("offline-run-*"))


@pytest.fixture
def no_wandb_env(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    yield
    wandb.finish()


def test_offline_run_logs_config_metrics_table_and_parameter_counts(tmp_path, no_wandb_env, caplog):
    save_dir = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="xmod_lab.tracking"):
        logger = tracking.wandb_logger(
            save_dir=str(save_dir),
            project="xmod-test",
            group="sweep-a",
            name="rf=4",
            tags=["ablation"],
            config={"adapter": {"adapter_reduction_factor": 4}, "seed": 1},
        )
    assert isinstance(logger, tracking.ResultsTableWandbLogger)
    (run_dir,) = offline_runs(save_dir)
    assert f"wandb sync {run_dir.resolve()}" in caplog.text  # WANDB_MODE unset: offline, with the hint
    assert (save_dir / tracking.RUN_ID_FILE).read_text() == logger.experiment.id

    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    model[0].requires_grad_(False)
    logger.log_graph(model)
    logger.log_hyperparams({"eval_adapters": {"en": "en_XX", "de": "de_DE"}})  # as xmod-train does
    logger.log_metrics({"train/loss": 0.5}, step=1)
    logger.log_metrics({"test/en/acc": 80.0, "test/de/acc": 60.0, "test/avg/acc": 70.0}, step=2)
    logger.finalize("success")
    wandb.finish()

    records = read_wandb_records(run_dir)
    (record,) = records["run"]
    run = record.run
    assert (run.project, run.run_group, run.display_name) == ("xmod-test", "sweep-a", "rf=4")
    assert list(run.tags) == ["ablation"]
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["adapter"] == {"adapter_reduction_factor": 4} and config["seed"] == 1

    summary = {}
    for record in records["summary"]:
        for item in record.summary.update:
            summary["/".join(item.nested_key) or item.key] = json.loads(item.value_json)
    assert summary["params/trainable"] == 3 * 2 + 2 and summary["params/frozen"] == 4 * 3 + 3
    history = [
        {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in r.history.item}
        for r in records["history"]
    ]
    assert any(h.get("test/de/acc") == 60.0 for h in history)
    assert any(h.get("train/loss") == 0.5 for h in history)

    (table_file,) = (run_dir / "files" / "media" / "table").rglob("*.table.json")
    assert "test/results" in str(table_file.relative_to(run_dir))
    table = json.loads(table_file.read_text())
    assert table["columns"] == ["eval_set", "adapter", "acc"]
    assert table["data"] == [["en", "en_XX", 80.0], ["de", "de_DE", 60.0], ["avg", None, 70.0]]


def test_resume_continues_the_same_wandb_run(tmp_path, no_wandb_env):
    first = tracking.wandb_logger(save_dir=str(tmp_path / "run1"), project="xmod-test")
    run_id = first.experiment.id
    wandb.finish()
    ckpt = tmp_path / "run1" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir()
    ckpt.touch()

    resumed = tracking.wandb_logger(
        save_dir=str(tmp_path / "run2"), project="xmod-test", resume_from=str(ckpt)
    )
    assert resumed.experiment.id == run_id
    assert (tmp_path / "run2" / tracking.RUN_ID_FILE).read_text() == run_id
    wandb.finish()
    fresh = tracking.wandb_logger(save_dir=str(tmp_path / "run3"), project="xmod-test")
    assert fresh.experiment.id != run_id


def test_online_without_credentials_goes_offline(no_wandb_env, monkeypatch):
    mode, why = tracking.resolve_mode("online")
    assert mode == "offline" and "WANDB_API_KEY" in why
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert tracking.resolve_mode("online") == ("online", None)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert tracking.resolve_mode(None) == ("disabled", None)


def test_misconfigured_wandb_falls_back_to_csv_with_a_warning(tmp_path, no_wandb_env, caplog):
    with caplog.at_level(logging.WARNING, logger="xmod_lab.tracking"):
        logger = tracking.wandb_logger(save_dir=str(tmp_path), mode="onlinee")
    assert isinstance(logger, CSVLogger)
    assert "W&B could not start a run" in caplog.text and "onlinee" in caplog.text
    logger.log_metrics({"test/en_XX/acc": 1.0}, step=0)
    logger.save()
    assert "test/en_XX/acc" in (tmp_path / "wandb_fallback" / "metrics.csv").read_text()


def test_missing_wandb_falls_back_to_csv(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "wandb", None)  # makes `import wandb` raise ImportError
    with caplog.at_level(logging.WARNING, logger="xmod_lab.tracking"):
        logger = tracking.wandb_logger(save_dir=str(tmp_path))
    assert isinstance(logger, CSVLogger)
    assert "wandb is not installed" in caplog.text


def test_logger_wandb_config_continues_the_run_of_ckpt_path(tmp_path, no_wandb_env):
    """conf/logger/wandb.yaml as composed by xmod-train: ckpt_path of an old run -> that run's W&B id."""
    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate
    from omegaconf import open_dict

    import xmod_lab.conf.schema  # noqa: F401  (registers train_schema, as train.py does)

    old_run = tmp_path / "old"
    (old_run / "checkpoints").mkdir(parents=True)
    (old_run / "checkpoints" / "last.ckpt").touch()
    (old_run / tracking.RUN_ID_FILE).write_text("abc123xy")
    ckpt = old_run / "checkpoints" / "last.ckpt"
    with initialize_config_module("xmod_lab.conf", version_base="1.3"):
        cfg = compose("train", overrides=["logger=wandb", f"ckpt_path={ckpt}", "tags=[resumed]"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "new")  # ${hydra:runtime.output_dir} outside a Hydra job
    logger = instantiate(cfg.logger.wandb)
    assert isinstance(logger, tracking.ResultsTableWandbLogger)
    assert logger.experiment.id == "abc123xy" and list(logger.experiment.tags) == ["resumed"]
    assert (tmp_path / "new" / tracking.RUN_ID_FILE).read_text() == "abc123xy"


@pytest.mark.slow
def test_training_run_config_stays_nested_with_numbers_and_prints_validation_scores(tmp_path, no_wandb_env,
                                                                                    caplog):
    """xmod-train with logger=wandb: Lightning's hyper-parameter logging (the task's saved hparams) must not
    turn the config groups into repr strings; each validation epoch prints its per-language scores."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import read_write

    from tests.tasks.run_helpers import SHRINK, SYNTHETIC, compose_run, no_hydra
    from xmod_lab.train import train

    run = tmp_path / "run"
    with no_hydra():
        cfg = compose_run("train", run, tmp_path / "cache", [
            *SHRINK, *SYNTHETIC, "logger=wandb", "adapter.adapter_reduction_factor=4", "trainer.max_epochs=2",
            "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "tags=[rf4]"])
        with read_write(HydraConfig.instance().cfg.hydra):  # what Hydra sets in a real run
            HydraConfig.instance().cfg.hydra.runtime.output_dir = str(run)
        with caplog.at_level(logging.INFO):
            train(cfg)
    wandb.finish()

    (offline,) = offline_runs(run)
    records = read_wandb_records(offline)
    config = {item.key: json.loads(item.value_json) for item in records["run"][0].run.config.update}
    for record in records.get("config", []):  # later updates, in order: what the W&B UI shows at the end
        config.update({item.key: json.loads(item.value_json) for item in record.config.update})
    assert config["adapter"]["adapter_reduction_factor"] == 4 and isinstance(config["adapter"]["adapter_reduction_factor"], int)
    for group in ("model", "languages", "adapter", "freeze", "optimizer", "scheduler"):
        assert isinstance(config[group], dict), (group, config[group])
    assert config["optimizer"]["lr"] == pytest.approx(5e-4) and config["languages"]["train"] == ["en"]
    assert list(records["run"][0].run.tags) == ["rf4"]

    lines = [r.getMessage() for r in caplog.records if "validation acc:" in r.getMessage()]
    assert [line.split(" (")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]
    assert all(f"{name} " in lines[-1] for name in ("en", "de", "fr", "ru", "zh", "zs_avg", "avg"))


def history_steps(run_dir: Path) -> list[int]:
    """W&B's step of every history row with a training loss, in the order written."""
    return [int(r.history.step.num) for r in read_wandb_records(run_dir).get("history", [])
            if any(("/".join(i.nested_key) or i.key) == "train/loss" for i in r.history.item)]


def test_a_resumed_run_continues_the_wandb_run_at_the_checkpoint_step(tmp_path, no_wandb_env):
    """Killed before its sixth step (last.ckpt at step 4), resumed from last.ckpt into a new run directory: the
    same W&B run, its history continuing at step 4 instead of starting again at 0."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import read_write

    from tests.tasks.run_helpers import SHRINK, SYNTHETIC, no_hydra
    from tests.tasks.run_helpers import compose_run as compose
    from xmod_lab.train import train

    def compose_run(command, run_dir, cache, overrides):
        cfg = compose(command, run_dir, cache, overrides)
        with read_write(HydraConfig.get()):  # a real job's output directory (where W&B finds its config)
            HydraConfig.get().runtime.output_dir = str(run_dir)
        return cfg

    common = [*SHRINK, *SYNTHETIC, "logger=[csv,wandb]", "trainer.log_every_n_steps=1",
              "callbacks.model_checkpoint.last_every_n_train_steps=4"]
    with no_hydra():
        cfg = compose_run("train", tmp_path / "killed", tmp_path / "cache",
                          [*common, "+callbacks.crash._target_=tests.test_checkpoints.Crash"])
    with pytest.raises(RuntimeError, match="killed"):
        train(cfg)
    ckpt = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    with no_hydra():
        cfg = compose_run("train", tmp_path / "resumed", tmp_path / "cache",
                          [*common, f"ckpt_path={ckpt}", "trainer.max_epochs=2"])
    train(cfg)
    wandb.finish()
    run_id = (tmp_path / "killed" / tracking.RUN_ID_FILE).read_text()
    assert (tmp_path / "resumed" / tracking.RUN_ID_FILE).read_text() == run_id
    (killed,) = offline_runs(tmp_path / "killed")
    (resumed,) = offline_runs(tmp_path / "resumed")
    assert killed.name.endswith(run_id) and resumed.name.endswith(run_id)
    assert history_steps(killed) == [0, 1, 2, 3, 4]  # Lightning logs step k's loss after optimizer step k+1
    assert history_steps(resumed) == list(range(4, 12))  # from the checkpoint's step on, as the CSV log
