"""Hydra multirun support: the sweep summary and DDP that stays correct inside a sweep.

Two pieces, each plugged in by config:

- ``SweepSummary`` (``hydra.callbacks``): after every job of a multirun it rewrites
  ``<sweep_dir>/sweep_summary.{csv,json}``: one row per run with its overrides, its per-language metrics and
  their average; ``sweep_configs.csv``: mean ± sd per configuration (runs that differ only in seed). It is
  rewritten after each job, not only at the end, because Hydra never calls ``on_multirun_end`` when a job failed; failed runs are named in the summary. At the start of a sweep
  it checks that a SLURM launcher (``hydra/launcher=slurm``) has SLURM to talk to, else says how to run
  without it.
- ``HydraJobDDPStrategy`` (``trainer.strategy``): Lightning's ``ddp`` starts the extra ranks by re-running
  ``sys.argv``. Under ``-m`` that argv is the whole sweep, so rank 1 runs its own sweep next to rank 0
  (Lightning issue 11300): with the default sweeper it happens to stay in step, with Optuna the ranks train
  different hyper-parameters in one job, and rank 1 writes a second, phantom sweep directory. Here the
  extra ranks re-enter the current job instead: the job's own overrides, in RUN mode, in the job's directory.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from omegaconf import DictConfig

from xmod_lab.report import JOB_STATUS, SUMMARY_CSV, format_configs, format_table, write_summary
from xmod_lab.run_dir import is_global_rank_zero
from xmod_lab.seeds import has_repeats

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- Hydra callback


class SweepSummary(Callback):
    """Hydra callback: keeps ``sweep_summary.{csv,json}`` of a multirun up to date after each job."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        end_ddp_job()
        wandb = sys.modules.get("wandb")
        if wandb is not None and getattr(wandb, "run", None) is not None:
            # close this job's W&B run now, marked failed if the job failed, so the next job starts its own
            wandb.finish(exit_code=0 if job_return.status == JobStatus.COMPLETED else 1)
        if config.hydra.mode != RunMode.MULTIRUN or not is_global_rank_zero():
            return
        job_dir = Path(config.hydra.runtime.output_dir)
        status = {
            "status": "completed" if job_return.status == JobStatus.COMPLETED else "failed",
            "error": None,
        }
        if job_return.status == JobStatus.FAILED:
            error = job_return._return_value  # .return_value would re-raise it
            # one line: it becomes a CSV cell and a table column
            status["error"] = " ".join(f"{type(error).__name__}: {error}".split())
        (job_dir / JOB_STATUS).write_text(json.dumps(status))
        self._write(Path(config.hydra.sweep.dir))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_launcher(config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        summary = self._write(Path(config.hydra.sweep.dir))
        if summary is not None and any(r["metrics"] for r in summary["runs"]):
            log.info("Sweep summary:\n%s", format_table(summary))
            if has_repeats(summary["configs"]):  # a seed axis: mean ± sd per configuration
                log.info("Configurations (runs that differ only in seed):\n%s", format_configs(summary))

    @staticmethod
    def _write(sweep_dir: Path) -> dict[str, Any] | None:
        try:
            summary = write_summary(sweep_dir)
        except FileNotFoundError as e:  # nothing ran yet (e.g. a launcher that failed to submit)
            log.warning("No sweep summary written: %s", e)
            return None
        failed = [r["run"] for r in summary["runs"] if r["status"] == "failed"]
        # no job_status.json yet: another process's job still running in this sweep dir (make paper runs
        # several multiruns into one), or a job stopped from outside; "did not finish" would misreport the first
        unfinished = [r["run"] for r in summary["runs"] if r["status"] not in ("completed", "failed")]
        if failed:
            log.warning("Runs that did not finish: %s (see job_status.json in each)", ", ".join(failed))
        if unfinished:
            log.warning(
                "Runs without a result yet: %s (still running in another process, or stopped from outside)",
                ", ".join(unfinished),
            )
        log.info("Sweep summary written to %s", sweep_dir / SUMMARY_CSV)
        return summary


# --------------------------------------------------------------------------- DDP inside a Hydra job

# The DDP processes this process started for its current Hydra job, and the environment it had before:
# Lightning leaves LOCAL_RANK/MASTER_PORT/... set, which tells the next job's Trainer that some launcher
# already created its processes, so it would wait forever for ranks nobody starts.
_CHILDREN: list[subprocess.Popen] = []
_ENV_BEFORE: dict[str, str | None] = {}
_DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
_CONFIG_SOURCE_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")


def _config_source_args(argv: Sequence[str]) -> list[str]:
    """The ``--config-path/--config-name/--config-dir`` arguments of ``argv``: the rest is the sweep."""
    kept, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if arg in _CONFIG_SOURCE_FLAGS and i + 1 < len(argv):
            kept += [arg, argv[i + 1]]
            i += 1
        elif arg.split("=", 1)[0] in _CONFIG_SOURCE_FLAGS:
            kept.append(arg)
        i += 1
    return kept


def hydra_job_command(local_rank: int) -> tuple[list[str], str]:
    """The command that makes another process re-enter the current Hydra job, and its working directory.

    The job's own overrides (``hydra.overrides.task``, which for a sweep point includes its swept values)
    in RUN mode, writing into the job's output directory, instead of Lightning's ``sys.argv``.
    """
    from hydra.utils import get_original_cwd

    import __main__

    hydra_cfg = HydraConfig.get()
    if __main__.__spec__ is None:  # a script or console-script file
        command = [sys.executable, os.path.abspath(sys.argv[0])]
    else:
        command = [sys.executable, "-m", __main__.__spec__.name]
    command += _config_source_args(sys.argv[1:])
    command += list(hydra_cfg.overrides.task)
    output_dir = hydra_cfg.runtime.output_dir.replace("\\", "\\\\").replace('"', '\\"')
    command += [
        f'hydra.run.dir="{output_dir}"',
        "hydra.output_subdir=null",  # rank 0 already saved .hydra/ for this job
        "hydra.mode=RUN",  # a preset may set MULTIRUN (hparams_search=optuna): one job, not a new sweep
        f"hydra.job.name={hydra_cfg.job.name}_rank{local_rank}",  # its own log file
        f"hydra.job.chdir={bool(hydra_cfg.job.chdir)}",
    ]
    return command, get_original_cwd()


def end_ddp_job(timeout_s: float = 300.0) -> None:
    """Wait for the ranks this process started for its job, close the process group, restore the env.

    Called at the end of each Hydra job (``SweepSummary.on_job_end``) and, as a fallback, when the next
    job builds its strategy; a no-op in processes that started no ranks.
    """
    if not _CHILDREN:
        return
    for proc in _CHILDREN:
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log.warning(
                "DDP rank process %d still running %.0fs after its job ended; killing it", proc.pid, timeout_s
            )
            proc.kill()
            proc.wait()
    _CHILDREN.clear()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    for key, value in _ENV_BEFORE.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    _ENV_BEFORE.clear()


class HydraJobLauncher(_SubprocessScriptLauncher):
    """Starts ranks 1..N-1 on this node as re-entries of the current Hydra job (see module doc)."""

    def _call_children_scripts(self) -> None:
        if not HydraConfig.initialized():
            super()._call_children_scripts()
            return
        self._check_can_spawn_children()
        _ENV_BEFORE.update({key: os.environ.get(key) for key in _DDP_ENV})
        os.environ["MASTER_ADDR"] = self.cluster_environment.main_address
        os.environ["MASTER_PORT"] = str(self.cluster_environment.main_port)
        os.environ["NODE_RANK"] = str(self.cluster_environment.node_rank())
        os.environ["LOCAL_RANK"] = str(self.cluster_environment.local_rank())
        os.environ["WORLD_SIZE"] = str(self.num_processes * self.num_nodes)
        for local_rank in range(1, self.num_processes):
            env = {**os.environ, "LOCAL_RANK": str(local_rank)}
            command, cwd = hydra_job_command(local_rank)
            self.procs.append(subprocess.Popen(command, env=env, cwd=cwd))
        _CHILDREN.extend(self.procs)


class HydraJobDDPStrategy(DDPStrategy):
    """Lightning's DDP whose extra local ranks re-enter the current Hydra job (see module doc).

    ``find_unused_parameters`` defaults to True: a batch routes through the adapters of its own languages
    only, so the other languages' trainable adapters get no gradient in that step.
    Once the process group is up, every rank checks that it runs the same job overrides as rank 0.
    """

    def __init__(self, *args: Any, find_unused_parameters: bool = True, **kwargs: Any) -> None:
        end_ddp_job()  # the previous sweep job's ranks, if no SweepSummary callback ended them
        super().__init__(*args, find_unused_parameters=find_unused_parameters, **kwargs)

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        if self._start_method == "popen":
            self._launcher = HydraJobLauncher(self.cluster_environment, self.num_processes, self.num_nodes)

    def setup_environment(self) -> None:
        super().setup_environment()
        if HydraConfig.initialized() and self.world_size > 1:
            mine = list(HydraConfig.get().overrides.task)
            log.info("rank %d of %d runs the job with overrides %s", self.global_rank, self.world_size, mine)
            every: list[Any] = [None] * self.world_size
            torch.distributed.all_gather_object(every, mine)
            if any(o != every[0] for o in every):
                raise RuntimeError(
                    "DDP ranks run different Hydra jobs: "
                    + "; ".join(f"rank {r}: {o}" for r, o in enumerate(every))
                    + ". Start them with this strategy's launcher (or srun/torchrun with one job's overrides)."
                )


def check_launcher(config: DictConfig) -> None:
    """Refuse a SLURM launcher where SLURM is not installed, before anything is submitted.

    submitit's own check comes later, at the bottom of a long traceback ("Could not detect srun").
    """
    if "submitit_launcher.SlurmLauncher" not in str(config.hydra.launcher.get("_target_", "")):
        return
    missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(
            f"hydra/launcher=slurm submits jobs to SLURM, but {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not on PATH: this machine is not a SLURM login node. "
            "Run the command on your cluster's login node, or drop hydra/launcher=slurm to run the sweep "
            "here (hydra/launcher=submitit_local runs it in local subprocesses)."
        )
