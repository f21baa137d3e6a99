"""xmod-report and the sweep summary, on sweep directories in xmod-train's on-disk format."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from xmod_lab import report

LANGS = ["en", "de", "fr"]  # evaluation sets
ADAPTERS = {"en": "en_XX", "de": "de_DE", "fr": "fr_XX"}


def make_run(
    sweep: Path, num: int, overrides: list[str], accs: list[float] | None, error: str | None = None,
    val: float | None = None,
) -> Path:
    """A run directory as xmod-train + SweepSummary leave it (accs None: a run that failed); ``val``: the
    validation score its checkpoint was chosen on."""
    run = sweep / str(num)
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (run / "config.yaml").write_text(
        "task:\n  _target_: xmod_lab.tasks.SequenceClassificationTask\n  label_names: [a, b, c]\n")
    if accs is not None:
        table = {lang: {"acc": acc, "loss": 1.0 - acc / 100} for lang, acc in zip(LANGS, accs, strict=True)}
        table["avg"] = {"acc": sum(accs) / len(accs), "loss": sum(1.0 - a / 100 for a in accs) / len(accs)}
        results = {"task": "x", "train_languages": ["en"], "split": "test", "test": table, "parameters": {},
                   "adapters": ADAPTERS, "monitor": "val/en/acc", "monitor_mode": "max", "best_score": val}
        (run / "results.json").write_text(json.dumps(results))
        (run / "job_status.json").write_text(json.dumps({"status": "completed", "error": None}))
    else:
        (run / "job_status.json").write_text(json.dumps({"status": "failed", "error": error}))
    return run


@pytest.fixture
def sweep(tmp_path) -> Path:
    sweep = tmp_path / "multiruns" / "2026-11-22_08-00-00"
    # the best test average (run 1) is not the best on validation (run 0): "best" must be run 0
    for num, (rf, accs, val) in enumerate(
        [(2, [80.0, 60.0, 55.0], 82.0), (4, [78.0, 64.0, 58.0], 79.0), (8, [75.0, 50.0, 49.0], 70.0)]
    ):
        make_run(sweep, num, [f"adapter.adapter_reduction_factor={rf}", "trainer.max_steps=4"], accs, val=val)
    make_run(sweep, 3, ["adapter.adapter_reduction_factor=16", "trainer.max_steps=4"], None, "ValueError: boom")
    return sweep


def test_collect_sweep_rows_metrics_and_failed_runs(sweep):
    summary = report.collect_sweep(sweep)
    assert [r["run"] for r in summary["runs"]] == ["0", "1", "2", "3"]
    assert summary["failed"] == ["3"]
    first = summary["runs"][0]
    assert first["overrides"] == {"adapter.adapter_reduction_factor": "2", "trainer.max_steps": "4"}
    assert first["metrics"]["de"]["acc"] == 60.0
    assert first["metrics"]["avg"]["acc"] == pytest.approx(65.0)
    assert summary["runs"][3]["status"] == "failed" and summary["runs"][3]["error"] == "ValueError: boom"
    assert report.primary_metric(summary) == "acc"
    assert report.train_languages(summary) == ["en"]


def test_write_summary_csv_and_json(sweep):
    report.write_summary(sweep)
    lines = (sweep / "sweep_summary.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert header[:4] == ["run", "status", "adapter.adapter_reduction_factor", "trainer.max_steps"]
    assert {"en/acc", "de/acc", "avg/acc", "avg/loss"} <= set(header) and header[-1] == "error"
    assert lines[2].startswith("1,completed,4,4,78.0,")
    assert lines[4].startswith("3,failed,16,4,") and lines[4].endswith("ValueError: boom")
    assert json.loads((sweep / "sweep_summary.json").read_text())["failed"] == ["3"]


def test_format_table_shows_varying_overrides_only(sweep):
    text = report.format_table(report.collect_sweep(sweep))
    assert "adapter_reduction_factor" in text and "max_steps" not in text
    row = next(line for line in text.splitlines() if line.startswith("1 "))
    # languages, zero-shot average (de, fr), overall average, validation score: all with two decimals
    assert row.split()[:8] == ["1", "4", "78.00", "64.00", "58.00", "61.00", "66.67", "79.00"]
    assert "zs_avg" in text.splitlines()[4] and "failed: ValueError: boom" in text
    assert text.startswith("metric: acc (chance 33.33)\nbest: run 0 (best on validation val/en/acc (max) = 82.00)\n"
                           "adapters: en en_XX, de de_DE, fr fr_XX\n")


def test_best_is_not_chosen_without_validation_scores(sweep):
    results = sweep / "2" / "results.json"
    results.write_text(results.read_text().replace('"best_score": 70.0', '"best_score": null'))
    best, why = report.best_run(report.collect_sweep(sweep))
    assert best is None and "no validation score" in why
    assert "best: not chosen" in report.format_table(report.collect_sweep(sweep))


def test_find_sweep_from_anywhere(sweep, tmp_path, monkeypatch):
    """The newest outputs/*/multiruns/* under XMOD_ROOT, a given folder, or the working directory's
    parents (a notebook started in notebooks/ or anywhere else in the checkout)."""
    root = tmp_path / "checkout"
    older = root / "outputs" / "default" / "multiruns" / "2026-11-01_00-00-00"
    older.mkdir(parents=True)
    newest = root / "outputs" / "other" / "multiruns" / "2026-11-02_00-00-00"
    newest.mkdir(parents=True)
    os.utime(older, (1, 1))
    (root / "notebooks").mkdir()
    monkeypatch.delenv("XMOD_SWEEP_DIR", raising=False)
    monkeypatch.delenv("XMOD_ROOT", raising=False)
    monkeypatch.chdir(root / "notebooks")
    assert report.find_sweep() == newest
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XMOD_ROOT", str(root))
    assert report.find_sweep() == newest
    assert report.find_sweep(sweep) == sweep and report.find_sweep(root) == newest
    monkeypatch.setenv("XMOD_ROOT", str(tmp_path / "nothing"))
    with pytest.raises(FileNotFoundError, match="no sweep found"):
        report.find_sweep()


def test_cli_without_argument_reports_the_newest_sweep(sweep, tmp_path, monkeypatch, capsys):
    root = tmp_path / "root"
    shutil.copytree(sweep, root / "outputs" / "default" / "multiruns" / sweep.name)
    monkeypatch.delenv("XMOD_SWEEP_DIR", raising=False)
    monkeypatch.setenv("XMOD_ROOT", str(root))
    assert report.main([]) == 0
    assert f"sweep: {root / 'outputs' / 'default' / 'multiruns' / sweep.name}" in capsys.readouterr().out


def test_cli_prints_table_and_writes_pngs(sweep, tmp_path, capsys):
    assert report.main([str(sweep), "--out", str(tmp_path / "plots")]) == 0
    out = capsys.readouterr()
    assert "metric: acc" in out.out and "66.67" in out.out
    assert "runs that did not finish: 3" in out.err
    for name in ("heatmap_acc.png", "zero_shot_acc.png"):
        png = (tmp_path / "plots" / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert (tmp_path / "plots" / "sweep_summary.csv").is_file()


def test_cli_other_metric_and_plot_contents(sweep):
    summary = report.collect_sweep(sweep)
    fig = report.plot_heatmap(summary, "loss")
    (ax, _colorbar) = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == [*LANGS, "zs_avg", "avg"]
    assert [t.get_text() for t in ax.get_xticklabels()] == [f"adapter_reduction_factor={rf}" for rf in (2, 4, 8)]
    fig = report.plot_zero_shot(summary, "acc")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["en\n(train)", "de", "fr", "zero-shot\navg", "avg\n(all)"]
    heights = sorted(round(p.get_height(), 2) for p in ax.patches)
    zero_shot_avgs = [57.5, 61.0, 49.5]
    avgs = [65.0, 66.67, 58.0]
    assert heights == sorted([80.0, 60.0, 55.0, 78.0, 64.0, 58.0, 75.0, 50.0, 49.0, *zero_shot_avgs, *avgs])
    chance = [line for line in ax.get_lines() if line.get_label().startswith("chance")]
    assert len(chance) == 1 and list(chance[0].get_ydata()) == pytest.approx([100 / 3, 100 / 3])


@pytest.mark.parametrize("runs", [1, 3, 8])
def test_zero_shot_legend_never_covers_a_bar(tmp_path, runs):
    """Bars as high as the axes go (100%) in every group: a legend inside the axes would cover some."""
    sweep = tmp_path / "sweep"
    for num in range(runs):
        make_run(sweep, num, [f"adapter.adapter_reduction_factor={num + 1}"], [100.0, 99.0, 98.0 - num], val=50.0)
    fig = report.plot_zero_shot(report.collect_sweep(sweep), "acc")
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent()
    assert len(ax.patches) == 5 * runs
    assert not [p for p in ax.patches if legend.overlaps(p.get_window_extent())]
    assert not legend.overlaps(ax.get_window_extent())  # beside the axes, not on them


def test_cli_errors_are_clear(tmp_path, sweep, capsys):
    assert report.main([str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert report.main([str(tmp_path / "empty")]) == 2
    assert "no run directories" in capsys.readouterr().err
    assert report.main([str(sweep), "--metric", "f1"]) == 2
    assert "known metrics: acc, loss" in capsys.readouterr().err


def test_flat_logged_metrics_are_read():
    flat = {"val/en/acc": 1.0, "test/en/acc": 2.0, "test/avg/acc": 2.0, "epoch": 3}
    assert report.per_language_metrics(flat) == {"en": {"acc": 2.0}, "avg": {"acc": 2.0}}
    with pytest.raises(ValueError, match="neither"):
        report.per_language_metrics({"epoch": 3})


def test_console_script_is_installed(sweep):
    script = Path(sys.executable).with_name("xmod-report")
    done = subprocess.run([str(script), str(sweep)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "adapter_reduction_factor" in done.stdout and (sweep / "heatmap_acc.png").is_file()


def test_results_of_older_runs_keyed_by_adapter_still_get_the_right_zero_shot_average(tmp_path):
    """results.json written before evaluation sets (rows `en_XX`, `train_languages: [en]`): the training
    language is still left out of zs_avg."""
    run = tmp_path / "0"
    run.mkdir()
    table = {"en_XX": {"acc": 90.0}, "de_DE": {"acc": 60.0}, "fr_XX": {"acc": 50.0}}
    (run / "results.json").write_text(json.dumps({"train_languages": ["en"], "split": "test", "test": table}))
    (run / "job_status.json").write_text(json.dumps({"status": "completed", "error": None}))
    metrics = report.read_run(run)["metrics"]
    assert metrics["zs_avg"]["acc"] == pytest.approx(55.0) and metrics["avg"]["acc"] == pytest.approx(200 / 3)
