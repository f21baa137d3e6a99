"""DDP on 2 CPU processes (gloo): same result as one process, logs and checkpoints once, and correct
inside a Hydra multirun (each sweep point's config used on both ranks)."""

import re
import sys
from pathlib import Path

import pytest
import torch

from tests.test_sweep import TINY, outputs_in, run_train, the_sweep_dir

# no dropout: ranks draw different random masks, which would make 1- and 2-process runs differ
DETERMINISTIC = [
    *TINY,
    "model.config.hidden_dropout_prob=0",
    "model.config.attention_probs_dropout_prob=0",
    "optimizer.lr=1e-2",  # large enough that 3 steps move the weights well past float noise
    "scheduler.name=constant",
    "scheduler.warmup_ratio=0",
    "trainer.max_steps=3",
]


def read_results(run: Path) -> dict:
    import json

    return json.loads((run / "results.json").read_text())


def parameter_count(log_file: Path) -> int:
    """The parameter count (trainable + frozen) a rank logged for the model it actually built."""
    match = re.search(r"parameters: ([\d,]+) trainable, ([\d,]+) frozen", log_file.read_text())
    assert match, f"no parameter count in {log_file}"
    return int(match[1].replace(",", "")) + int(match[2].replace(",", ""))


@pytest.mark.slow
def test_two_processes_match_one_process_and_write_once(tmp_path):
    # one process with batch 16 and two with batch 8 each see the same global batches
    one = run_train(*DETERMINISTIC, "data.batch_size=16", f"hydra.run.dir={tmp_path / 'one'}")
    assert one.returncode == 0, one.stderr[-3000:]
    two = run_train(
        *DETERMINISTIC, "trainer=ddp_cpu", "data.batch_size=8", f"hydra.run.dir={tmp_path / 'two'}"
    )
    assert two.returncode == 0, two.stderr[-3000:]
    # per-language metrics are synced by torchmetrics: Lightning's sync_dist advice would be false there
    assert "sync_dist=True" not in two.stdout + two.stderr, two.stderr[-3000:]

    single, ddp = read_results(tmp_path / "one"), read_results(tmp_path / "two")
    assert single["global_step"] == ddp["global_step"] == 3
    for lang, metrics in single["test"].items():
        assert ddp["test"][lang]["acc"] == pytest.approx(metrics["acc"], abs=1e-6), lang
    # the degenerate-run diagnostics count every rank's predictions, not rank 0's shard only
    # (exact up to a near-tie prediction: the two runs' weights agree to 1e-5, not bit for bit, and a flip
    # between two wrong classes leaves the accuracy above unchanged)
    counts, ddp_counts = single["diagnostics"]["predicted_classes"], ddp["diagnostics"]["predicted_classes"]
    assert set(ddp_counts) == set(counts)
    for name, per_class in counts.items():
        assert sum(ddp_counts[name].values()) == sum(per_class.values()) == 64, name
        classes = set(per_class) | set(ddp_counts[name])
        moved = sum(abs(ddp_counts[name].get(c, 0) - per_class.get(c, 0)) for c in classes)
        assert moved <= 2, (name, per_class, ddp_counts[name])
    weights = [
        torch.load(tmp_path / run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
        for run in ("one", "two")
    ]
    for name, value in weights[0].items():
        torch.testing.assert_close(weights[1][name], value, atol=1e-5, rtol=1e-4, msg=name)

    # rank 1 ran in the same run directory, wrote its own log, and nothing else twice
    run = tmp_path / "two"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]
    assert sorted(p.name for p in (run / "csv").iterdir()) == ["hparams.yaml", "metrics.csv"]
    header, *rows = (run / "csv" / "metrics.csv").read_text().splitlines()
    test_rows = [r for r in rows if r.split(",")[header.split(",").index("test/avg/acc")]]
    assert len(test_rows) == 1, "test metrics logged once, by rank 0"
    assert parameter_count(run / "train.log") == parameter_count(run / "train_rank1.log")
    assert "rank 1 of 2 runs the job with overrides" in (run / "train_rank1.log").read_text()
    assert [p.relative_to(run) for p in run.glob("**/hydra.yaml")] == [Path(".hydra/hydra.yaml")]


@pytest.mark.slow
def test_ddp_inside_multirun_trains_each_sweep_point_on_both_ranks(tmp_path):
    done = run_train(
        "-m", "adapter.adapter_reduction_factor=2,8", "trainer=ddp_cpu", "data.batch_size=8", *TINY,
        env=outputs_in(tmp_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    sweep = the_sweep_dir(tmp_path)  # exactly one: rank 1 started no sweep of its own
    counts = {}
    for num, rf in (("0", "2"), ("1", "8")):
        job = sweep / f"{num}_adapter_reduction_factor-{rf}"
        rank0, rank1 = job / "train.log", job / "train_rank1.log"
        # what each rank wrote: the overrides it ran with and the size of the model it built
        for rank, log_file in ((0, rank0), (1, rank1)):
            text = log_file.read_text()
            assert f"rank {rank} of 2 runs the job with overrides ['adapter.adapter_reduction_factor={rf}'," in text
        assert parameter_count(rank0) == parameter_count(rank1)
        counts[rf] = parameter_count(rank0)
        assert read_results(job)["global_step"] == 2
    assert counts["2"] > counts["8"], "the sweep points built different models"
    # rank 1 wrote into the job directories only
    assert sorted(p.name for p in sweep.iterdir()) == [
        "0_adapter_reduction_factor-2", "1_adapter_reduction_factor-8", "multirun.yaml", "sweep_configs.csv",
        "sweep_summary.csv", "sweep_summary.json"]  # fmt: skip
    assert [p.name for p in (tmp_path / "outputs" / "default").iterdir()] == ["multiruns"]

def test_extra_ranks_re_enter_the_job_not_the_sweep(tmp_path, monkeypatch):
    """The command rank 1 gets: this job's overrides, in RUN mode, in this job's directory (never `-m`)."""
    from hydra import compose, initialize_config_module
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    import xmod_lab.conf.schema  # noqa: F401  (registers train_schema, as train.py does)
    from xmod_lab.sweep import hydra_job_command

    job = ["adapter.adapter_reduction_factor=4", "optimizer.lr=0.0123", "hparams_search=optuna", "trainer=ddp_cpu"]
    with initialize_config_module("xmod_lab.conf", version_base="1.3"):
        cfg = compose("train", overrides=job, return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(tmp_path / "sweep" / "3")
            cfg.hydra.runtime.cwd = str(tmp_path)
            cfg.hydra.job.name = "train"
        assert cfg.hydra.mode.name == "MULTIRUN"  # the preset makes the job's own config a sweep
        HydraConfig.instance().set_config(cfg)
        monkeypatch.setattr("sys.argv", ["train.py", "--config-dir", "/my/conf", "hparams_search=optuna"])
        # as a script file, whatever started pytest itself (`pytest` or `python -m pytest`)
        monkeypatch.setattr(sys.modules["__main__"], "__spec__", None)
        try:
            command, cwd = hydra_job_command(local_rank=1)
        finally:
            HydraConfig.instance().cfg = None  # other tests run outside any Hydra job
        assert cwd == str(tmp_path)
        assert command[2:4] == ["--config-dir", "/my/conf"] and "-m" not in command
        assert command[4:8] == job
        assert f'hydra.run.dir="{tmp_path / "sweep" / "3"}"' in command
        assert "hydra.job.name=train_rank1" in command and "hydra.output_subdir=null" in command
        # composed again as rank 1 will: the same job config, as a single run
        rank1 = compose("train", overrides=command[4:], return_hydra_config=True)
        assert rank1.hydra.mode.name == "RUN"
        assert rank1.optimizer.lr == 0.0123 and rank1.adapter.adapter_reduction_factor == 4
