"""Hydra multirun with xmod-train: sweep summary (also when runs fail), W&B grouping, Optuna, SLURM preset."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from xmod_lab import paper_doc, plots, report, report_cli, seeds

ROOT = Path(__file__).resolve().parents[1]

# the tiniest run that still trains, validates and tests on all 5 synthetic languages
TINY = [
    "data.n_train=256",
    "data.n_eval=64",
    "model.config.hidden_size=32",
    "model.config.intermediate_size=64",
    "trainer.max_steps=2",
    "trainer.enable_progress_bar=false",
    "pretrain=none",
]


def run_train(*args: str, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m xmod_lab.train ARGS` from the repository root, as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "xmod_lab.train", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def outputs_in(root: Path) -> dict:
    """Environment that sends runs to ROOT/outputs (as from a checkout there) but shares the data cache."""
    return {"XMOD_ROOT": str(root), "XMOD_CACHE": os.environ.get("XMOD_CACHE", str(ROOT / "outputs" / ".cache"))}


def the_sweep_dir(root: Path) -> Path:
    (sweep,) = (root / "outputs" / "default" / "multiruns").iterdir()
    return sweep


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """`xmod-train -m adapter.adapter_reduction_factor=2,4,8,0` with W&B offline: three runs finish, the 4th fails
    (a reduction factor must be positive). The sweep goes where a user's would (no hydra.sweep.dir)."""
    if not _SWEEP:  # test_notebooks imports this fixture: one sweep per session for both modules
        root = tmp_path_factory.mktemp("checkout")
        done = run_train(
            "-m", "adapter.adapter_reduction_factor=2,4,8,0", "logger=[csv,wandb]", *TINY,
            "trainer.limit_train_batches=2",  # the 2 steps are an epoch: validated, checkpoint chosen on it
            env={**outputs_in(root), "WANDB_MODE": "offline"},
        )  # fmt: skip
        _SWEEP.append((the_sweep_dir(root), done))
    return _SWEEP[0]


_SWEEP: list[tuple[Path, subprocess.CompletedProcess]] = []

# the study's MLM preset at its tiniest: one epoch of 2 batches, validated (the checkpoint is chosen on it)
MLM_TINY = [
    "experiment=paper_mlm", "export_dir=null", "model.config.hidden_size=32", "model.config.intermediate_size=64",
    "data.n_train=48", "data.n_eval=24", "data.n_corpus=60", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
    "trainer.check_val_every_n_epoch=1",
]  # fmt: skip


@pytest.fixture(scope="session")
def seed_sweep(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """`xmod-train -m seed=1,2 adapter.adapter_mode=shared,modular languages=synthetic1,synthetic2` (MLM, W&B
    offline): four configurations (mode x K) of two seeds each, the runs listed shared first."""
    if not _SEED_SWEEP:  # test_notebooks imports this fixture too
        root = tmp_path_factory.mktemp("seeds")
        done = run_train("-m", "seed=1,2", "adapter.adapter_mode=shared,modular", "languages=synthetic1,synthetic2",
                         "logger=[csv,wandb]", *MLM_TINY, env={**outputs_in(root), "WANDB_MODE": "offline"})
        assert done.returncode == 0, done.stderr[-3000:]
        (sweep,) = (root / "outputs" / "paper" / "multiruns").iterdir()
        _SEED_SWEEP.append((sweep, done))
    return _SEED_SWEEP[0]


_SEED_SWEEP: list[tuple[Path, subprocess.CompletedProcess]] = []


@pytest.mark.slow
def test_sweep_summary_keeps_finished_runs_and_names_failed_ones(tiny_sweep):
    sweep, done = tiny_sweep
    assert done.returncode != 0, "Hydra reports the failed job with a non-zero exit"
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    runs = {r["run"]: r for r in summary["runs"]}
    # job directories: <job number>_<the swept override>, in job order
    names = [f"{n}_adapter_reduction_factor-{rf}" for n, rf in enumerate((2, 4, 8, 0))]
    assert [r["run"] for r in summary["runs"]] == names and summary["failed"] == [names[3]]
    failed = runs[names[3]]
    assert failed["status"] == "failed" and "adapter_reduction_factor" in failed["error"]
    assert "adapter_reduction_factor" in (sweep / names[3] / "run_failed").read_text()
    languages = ["en", "de", "fr", "ru", "zh"]  # evaluation sets
    sizes = []
    for num, rf in (("0", "2"), ("1", "4"), ("2", "8")):
        run = runs[f"{num}_adapter_reduction_factor-{rf}"]
        assert run["status"] == "completed" and run["overrides"]["adapter.adapter_reduction_factor"] == rf
        assert sorted(run["metrics"]) == sorted([*languages, "zs_avg", "avg"])
        accs = [run["metrics"][lang]["acc"] for lang in languages]
        assert run["metrics"]["avg"]["acc"] == pytest.approx(sum(accs) / 5, abs=1e-3)
        assert run["metrics"]["zs_avg"]["acc"] == pytest.approx(sum(accs[1:]) / 4, abs=1e-3)  # en trained
        # each sweep point built its own model: smaller adapters, fewer parameters
        counts = json.loads((sweep / run["run"] / "results.json").read_text())["parameters"]
        sizes.append(counts["trainable"] + counts["frozen"])
    assert sizes[0] > sizes[1] > sizes[2]
    with (sweep / "sweep_summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["run"], r["status"], r["adapter.adapter_reduction_factor"]) for r in rows] == [
        (names[0], "completed", "2"),
        (names[1], "completed", "4"),
        (names[2], "completed", "8"),
        (names[3], "failed", "0"),
    ]
    assert float(rows[1]["avg/acc"]) == pytest.approx(runs[names[1]]["metrics"]["avg"]["acc"])
    assert "\n" not in rows[3]["error"] and "must be a positive number" in rows[3]["error"]
    assert f"Runs that did not finish: {names[3]}" in done.stdout + done.stderr


@pytest.mark.slow
def test_sweep_runs_share_one_wandb_group(tiny_sweep):
    from tests.test_tracking import read_wandb_records

    sweep, _ = tiny_sweep
    groups, names, configs = set(), [], []
    for num, rf in (("0", 2), ("1", 4), ("2", 8)):
        job = sweep / f"{num}_adapter_reduction_factor-{rf}"
        (run_dir,) = (job / "wandb").glob("offline-run-*")
        records = read_wandb_records(run_dir)
        run = records["run"][0].run
        groups.add(run.run_group)
        names.append(run.display_name)
        assert list(run.tags) == [f"adapter.adapter_reduction_factor={rf}"]  # filter a sweep by its overrides
        config = {item.key: json.loads(item.value_json) for item in run.config.update}
        for record in records.get("config", []):  # later updates (Lightning's hyper-parameters) on top
            config.update({item.key: json.loads(item.value_json) for item in record.config.update})
        configs.append(config)
        assert (job / "wandb_run_id.txt").read_text() == run.run_id
    (group,) = groups
    assert group.endswith(sweep.name) and len(group) <= 128
    # named by what the sweep varies; the resolved job config logged at creation
    assert names == [f"adapter.adapter_reduction_factor={rf}" for rf in (2, 4, 8)]
    assert [c["adapter"]["adapter_reduction_factor"] for c in configs] == [2, 4, 8]
    assert all(c["trainer"]["max_steps"] == 2 and "${" not in json.dumps(c) for c in configs)


@pytest.mark.slow
def test_report_on_the_real_sweep(tiny_sweep, tmp_path, capsys):
    sweep, _ = tiny_sweep
    assert report_cli.main([str(sweep), "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "adapter.adapter_reduction_factor" in text and "failed" in text
    assert (tmp_path / "heatmap_acc.png").stat().st_size > 5000
    assert (tmp_path / "zero_shot_acc.png").stat().st_size > 5000


@pytest.mark.slow
def test_optuna_preset_optimises_the_chosen_metric(tmp_path):
    done = run_train(
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=2",
        "optimized_metric=val/avg/acc",
        *TINY,
        "trainer.limit_val_batches=2",
        env=outputs_in(tmp_path),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    sweep = the_sweep_dir(tmp_path)
    best = _read_yaml(sweep / "optimization_results.yaml")
    assert best["name"] == "optuna" and set(best["best_params"]) == {
        "adapter.adapter_reduction_factor",
        "optimizer.lr",
        "optimizer.weight_decay",
    }
    summary = report.collect_sweep(sweep)
    assert len(summary["runs"]) == 2 and not summary["failed"]
    # each trial returned its validation average to Optuna; the best one is what the study kept
    val_avgs = [r["metrics"]["avg"]["acc"] for r in summary["runs"]]
    assert best["best_value"] == pytest.approx(max(val_avgs), abs=1e-3)
    for run in summary["runs"]:
        assert json.loads((sweep / run["run"] / "results.json").read_text())["split"] == "val"


def _read_yaml(path: Path) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path))


@pytest.mark.slow
def test_slurm_preset_without_slurm_says_so(tmp_path):
    # keep any real sbatch off PATH, so this never submits a job even on a cluster
    path = os.pathsep.join(
        p
        for p in os.environ["PATH"].split(os.pathsep)
        if not (Path(p) / "sbatch").exists() and not (Path(p) / "srun").exists()
    )
    assert shutil.which("sbatch", path=path) is None
    done = run_train(
        "-m",
        "hydra/launcher=slurm",
        *TINY,
        f"hydra.sweep.dir={tmp_path / 'slurm'}",
        env={"PATH": path},
        timeout=120,
    )
    assert done.returncode != 0
    assert "hydra/launcher=slurm submits jobs to SLURM" in done.stderr
    assert "not a SLURM login node" in done.stderr and "hydra/launcher=submitit_local" in done.stderr
    assert not list((tmp_path / "slurm").glob("*/results.json"))


@pytest.mark.slow
def test_a_seed_sweep_reports_mean_sd_and_n_per_configuration(seed_sweep):
    sweep, done = seed_sweep
    configs = json.loads((sweep / "sweep_summary.json").read_text())["configs"]
    # a configuration: every override but the seed, in the command's order
    assert [c["config"] for c in configs] == [",".join([f"adapter.adapter_mode={mode}", f"languages=synthetic{k}",
                                                        "logger=[csv,wandb]", *MLM_TINY])
                                              for mode in ("shared", "modular") for k in (1, 2)]
    assert [c["label"] for c in configs] == [f"adapter_mode={mode}, languages=synthetic{k}"
                                             for mode in ("shared", "modular") for k in (1, 2)]
    for config in configs:
        assert config["seeds"] == ["1", "2"] and config["finished"] == 2
        # recomputed here from each run's own results.json: the sample sd of two values is |a - b| / sqrt(2)
        tables = [json.loads((sweep / run / "results.json").read_text())["test"] for run in config["runs"]]
        for name in ("en", "avg"):
            a, b = (t[name]["loss"] for t in tables)
            cell = config["metrics"][name]["loss"]
            assert cell["n"] == 2 and cell["mean"] == pytest.approx((a + b) / 2)
            assert cell["sd"] == pytest.approx(abs(a - b) / 2**0.5)
        assert ("de" in config["metrics"]) == (config["overrides"]["languages"] == "synthetic2")
        val = [json.loads((sweep / run / "results.json").read_text())["best_score"] for run in config["runs"]]
        assert config["validation"]["mean"] == pytest.approx(sum(val) / 2) and config["validation"]["mode"] == "min"
    with (sweep / "sweep_configs.csv").open() as f:
        assert [r["val/n"] for r in csv.DictReader(f)] == ["2"] * 4
    log = done.stdout + done.stderr
    assert "Configurations (runs that differ only in seed)" in log and "best configuration: " in log
    text = report.format_configs(report.collect_sweep(sweep))
    chosen = seeds.best_config(configs)
    assert f"best configuration: {chosen['best']['label']} (best mean validation val/en/loss (min)" in text


@pytest.mark.slow
def test_seed_runs_carry_their_configuration_to_wandb(seed_sweep):
    from tests.test_tracking import read_wandb_records

    sweep, _ = seed_sweep
    by_config, groups = {}, set()
    for run in report.collect_sweep(sweep)["runs"]:
        (run_dir,) = (sweep / run["run"] / "wandb").glob("offline-run-*")
        record = read_wandb_records(run_dir)["run"][0].run
        config = {item.key: json.loads(item.value_json) for item in record.config.update}
        groups.add(record.run_group)
        assert config["seed"] == int(run["overrides"]["seed"])
        by_config.setdefault(config["config_id"], []).append(run["overrides"]["seed"])
    (group,) = groups  # the sweep stays one group; config_id groups it further, as xmod-report does
    assert group.endswith(sweep.name)
    assert by_config == {seeds.config_id(c["overrides"]): ["1", "2"] for c in report.collect_sweep(sweep)["configs"]}


@pytest.mark.slow
def test_plots_of_real_sweeps_are_trustworthy(seed_sweep, tiny_sweep):
    from matplotlib.container import BarContainer

    sweep, _ = seed_sweep
    summary = report.collect_sweep(sweep)
    best = seeds.best_config(summary["configs"])["best"]
    # bars: an MLM sweep trains on every set it tests, so nothing is called zero-shot
    ax = plots.plot_zero_shot(summary, "loss").axes[0]
    assert "zero-shot" not in ax.get_title().lower() and ax.get_title().startswith("loss per evaluation set")
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert len(bars) == 4 and all(b.errorbar is not None for b in bars)  # two seeds each: an sd
    marked = [i for i, b in enumerate(bars) if all("best" in (bar.get_gid() or "") for bar in b)]
    assert marked == [summary["configs"].index(best)]
    colors = [b.patches[0].get_facecolor() for b in bars]
    assert colors[0][:3] == pytest.approx(plots_rgb("shared")) and colors[2][:3] == pytest.approx(plots_rgb("modular"))
    # against K: the same colour per mode as in make paper's figure drawn from the same runs
    fig = plots.plot_against_languages(summary, "loss")
    lines = {c.get_label(): c.lines[0] for c in fig.axes[0].containers}
    rows = [{"mode": c["overrides"]["adapter.adapter_mode"], "languages": len(c["train_languages"]),
             "probe_mlm_loss": c["metrics"]["en"]["loss"]["mean"], "zero_shot_avg_acc": None, "flags": {}}
            for c in summary["configs"]]  # fmt: skip
    figures = paper_doc.curse_figures({"curse": rows, "chance": 100 / 3})
    paper_ax = figures["probe_loss_vs_k.png"].axes[0]
    # a sweep's rows carry no fact probe (make paper computes it): that panel says so instead of failing
    assert [t.get_gid() for t in figures["fact_probe_vs_k.png"].axes[0].texts] == ["empty"]
    paper_lines = {line.get_label(): line for line in paper_ax.get_lines()}
    for mode in ("shared", "modular"):
        assert lines[f"adapter_mode={mode}"].get_color() == paper_lines[mode].get_color() == plots.MODE_STYLE[mode]["color"]
    assert len([line for line in fig.axes[0].get_lines() if line.get_gid() == "best"]) == 1
    heat = plots.plot_heatmap(summary, "loss").axes[0]
    assert [t.get_gid() for t in heat.get_xticklabels()].count("best") == 1
    # a classification sweep: zero-shot named as such, every degenerate run's configuration hatched
    nli = report.collect_sweep(tiny_sweep[0])
    ax = plots.plot_zero_shot(nli, "acc").axes[0]
    assert ax.get_title() == "acc per evaluation set: trained on en, zero-shot on the others"
    flagged = [c["label"] for c in nli["configs"] if c["finished"] and c["degenerate"]]
    assert flagged  # 2 updates: some runs collapse, and the diagnostics say so
    hatched = [c.get_label().split(" ")[0] for c in ax.containers
               if isinstance(c, BarContainer) and c.patches[0].get_hatch() == "//"]
    assert hatched == flagged
    assert all("DEGENERATE" in text.get_text() for text in ax.get_legend().get_texts()
               if text.get_text().split(" ")[0] in flagged)


def plots_rgb(mode: str) -> tuple[float, float, float]:
    from matplotlib.colors import to_rgb

    return to_rgb(plots.MODE_STYLE[mode]["color"])


def test_a_run_of_another_process_still_running_is_not_called_failed(tmp_path, caplog):
    """make paper runs several multiruns into one sweep dir: a job's summary sees the others' runs before they
    write job_status.json. Those are not failures; a failed job is still named as one."""
    from xmod_lab.sweep import SweepSummary

    for name, status in (("0_failed", "failed"), ("1_running", None)):
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / ".hydra" / "overrides.yaml").write_text("- seed=0\n")
        if status:
            (tmp_path / name / "job_status.json").write_text(json.dumps({"status": status, "error": "ValueError: x"}))
    with caplog.at_level("WARNING", logger="xmod_lab.sweep"):
        SweepSummary._write(tmp_path)
    assert "Runs that did not finish: 0_failed (see job_status.json in each)" in caplog.text
    assert "Runs without a result yet: 1_running (still running in another process" in caplog.text
