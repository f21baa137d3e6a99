"""xmod-report and the sweep summary, on sweep directories in xmod-train's on-disk format."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from xmod_lab import paper_doc, plots, report, report_cli, seeds

LANGS = ["en", "de", "fr"]  # evaluation sets
ADAPTERS = {"en": "en_XX", "de": "de_DE", "fr": "fr_XX"}


def make_run(
    sweep: Path, num: int, overrides: list[str], accs: list[float] | None, error: str | None = None,
    val: float | None = None, flags: dict[str, list[str]] | None = None,
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
                   "adapters": ADAPTERS, "monitor": "val/en/acc", "monitor_mode": "max", "best_score": val,
                   "diagnostics": {"flags": flags or {}}}
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


def test_a_failed_summary_write_keeps_the_previous_files_and_leaves_no_temporary_file(sweep, monkeypatch):
    report.write_summary(sweep)
    before = {name: (sweep / name).read_text() for name in (report.SUMMARY_CSV, report.CONFIGS_CSV)}
    entries = set(os.listdir(sweep))

    def fail(self, rows):
        raise OSError("disk full")

    monkeypatch.setattr(report.csv.DictWriter, "writerows", fail)
    with pytest.raises(OSError, match="disk full"):
        report.write_summary(sweep)
    assert {name: (sweep / name).read_text() for name in before} == before
    assert set(os.listdir(sweep)) == entries


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
    assert report_cli.main([]) == 0
    assert f"sweep: {root / 'outputs' / 'default' / 'multiruns' / sweep.name}" in capsys.readouterr().out


def test_cli_prints_table_and_writes_pngs(sweep, tmp_path, capsys):
    assert report_cli.main([str(sweep), "--out", str(tmp_path / "plots")]) == 0
    out = capsys.readouterr()
    assert "metric: acc" in out.out and "66.67" in out.out
    assert "runs that did not finish: 3" in out.err
    for name in ("heatmap_acc.png", "zero_shot_acc.png"):
        png = (tmp_path / "plots" / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert (tmp_path / "plots" / "sweep_summary.csv").is_file()


def test_cli_other_metric_and_plot_contents(sweep):
    summary = report.collect_sweep(sweep)
    fig = plots.plot_heatmap(summary, "loss")
    (ax, _colorbar) = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == [*LANGS, "zs_avg", "avg"]
    # run 0 (reduction factor 2) is the best on validation: its tick label says so
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        "adapter_reduction_factor=2\n(best on validation)", "adapter_reduction_factor=4", "adapter_reduction_factor=8"]
    assert [t.get_gid() for t in ax.get_xticklabels()] == ["best", None, None]
    fig = plots.plot_zero_shot(summary, "acc")
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
    fig = plots.plot_zero_shot(report.collect_sweep(sweep), "acc")
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent()
    assert len(ax.patches) == 5 * runs
    assert not [p for p in ax.patches if legend.overlaps(p.get_window_extent())]
    assert not legend.overlaps(ax.get_window_extent())  # beside the axes, not on them


def test_cli_errors_are_clear(tmp_path, sweep, capsys):
    assert report_cli.main([str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert report_cli.main([str(tmp_path / "empty")]) == 2
    assert "no run directories" in capsys.readouterr().err
    assert report_cli.main([str(sweep), "--metric", "f1"]) == 2
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


# --------------------------------------------------------------------------- seeds: mean ± sd per configuration


def seed_sweep(tmp_path: Path, spec: list[tuple[int, int, list[float] | None, float | None]], flagged=()) -> Path:
    """Runs ``(reduction factor, seed, accs en/de/fr or None for a failed run, val)`` numbered in order; the
    run numbers in ``flagged`` carry a degenerate flag on de."""
    sweep = tmp_path / "seeds"
    for num, (rf, seed, accs, val) in enumerate(spec):
        make_run(sweep, num, [f"seed={seed}", f"adapter.adapter_reduction_factor={rf}"], accs, "RuntimeError: x",
                 val=val, flags={"de": ["within 3 points of chance (33.3)"]} if num in flagged else None)
    return sweep


def test_runs_that_differ_only_in_seed_aggregate_to_the_sample_mean_and_sd(tmp_path):
    sweep = seed_sweep(tmp_path, [
        (2, 0, [80.0, 60.0, 50.0], 81.0), (2, 1, [70.0, 50.0, 40.0], 71.0), (2, 2, [66.0, 40.0, 30.0], 67.0),
        (4, 0, [75.0, 55.0, 45.0], 76.0), (4, 1, None, None),  # the second seed of rf=4 failed: n stays 1
    ])  # fmt: skip
    summary = report.collect_sweep(sweep)
    rf2, rf4 = summary["configs"]
    assert rf2["config"] == "adapter.adapter_reduction_factor=2" and rf2["seeds"] == ["0", "1", "2"]
    assert rf2["runs"] == ["0", "1", "2"] and rf2["finished"] == 3 and rf4["finished"] == 1 and len(rf4["runs"]) == 2
    # en 80, 70, 66: mean 72, sample sd sqrt(((8^2 + 2^2 + 6^2) / 2) = sqrt(52) (the population sd would be 5.89)
    assert rf2["metrics"]["en"]["acc"] == {"mean": pytest.approx(72.0), "sd": pytest.approx(52**0.5), "n": 3,
                                           "flagged": 0}
    # zs_avg per run (de, fr): 55, 45, 35 -> 45 ± 10; avg per run: 190/3, 160/3, 136/3 -> 54 ± sqrt(244/3)
    assert rf2["metrics"]["zs_avg"]["acc"]["mean"] == pytest.approx(45.0)
    assert rf2["metrics"]["zs_avg"]["acc"]["sd"] == pytest.approx(10.0)
    assert rf2["metrics"]["avg"]["acc"]["mean"] == pytest.approx(54.0)
    assert rf2["metrics"]["avg"]["acc"]["sd"] == pytest.approx((244 / 3) ** 0.5)
    assert rf2["validation"] == {"metric": "val/en/acc", "mode": "max", "mean": pytest.approx(73.0),
                                 "sd": pytest.approx(52**0.5), "n": 3}
    # one finished run: sd undefined (None), never 0
    assert rf4["metrics"]["en"]["acc"] == {"mean": 75.0, "sd": None, "n": 1, "flagged": 0}
    text = report.format_configs(summary)
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.split() and line.split()[0] in
            ("en", "de", "zs_avg", "avg")}  # fmt: skip
    assert rows["en"] == ["en", "72.00", "±", "7.21", "3", "0", "75.00", "±", "n/a", "1", "0"]
    assert rows["zs_avg"][1:5] == ["45.00", "±", "10.00", "3"]
    assert "A = adapter_reduction_factor=2: seeds 0,1,2; 3 of 3 finished" in text
    assert "B = adapter_reduction_factor=4: seeds 0,1; 1 of 2 finished" in text
    # the summary files: JSON null and an empty CSV cell for the undefined sd
    report.write_summary(sweep)
    saved = json.loads((sweep / "sweep_summary.json").read_text())["configs"]
    assert saved[1]["metrics"]["en"]["acc"]["sd"] is None and saved[0]["metrics"]["en"]["acc"]["n"] == 3
    import csv

    with (sweep / "sweep_configs.csv").open() as f:
        csv_rows = list(csv.DictReader(f))
    assert [r["en/acc/sd"] for r in csv_rows] == [str(52**0.5), ""]
    assert [r["en/acc/n"] for r in csv_rows] == ["3", "1"] and [r["val/mean"] for r in csv_rows] == ["73.0", "76.0"]


@pytest.mark.parametrize(("vals2", "vals4", "best", "separated"), [
    # rf=2 holds the best single run (90) but rf=4 the best mean; the lead (5) is within the spread (17.3)
    ([90.0, 60.0, 60.0], [75.0, 76.0, 74.0], "4", False),
    # rf=4 leads by 10 with sds of 1: separated
    ([70.0, 71.0, 69.0], [80.0, 81.0, 79.0], "4", True),
    # rf=2 leads by 1 with sds of 1: a lead that does not exceed the spread is not a separation
    ([81.0, 82.0, 80.0], [80.0, 81.0, 79.0], "2", False),
    # one seed each: the spread is unknown, so nothing is separated
    ([90.0], [60.0], "2", False),
])  # fmt: skip
def test_the_best_configuration_is_chosen_on_the_mean_and_marked_when_not_separated(tmp_path, vals2, vals4, best,
                                                                                    separated):
    spec = [(rf, seed, [70.0, 50.0, 40.0], v) for rf, vals in ((2, vals2), (4, vals4)) for seed, v in enumerate(vals)]
    summary = report.collect_sweep(seed_sweep(tmp_path, spec))
    chosen = seeds.best_config(summary["configs"])
    assert chosen["best"]["overrides"]["adapter.adapter_reduction_factor"] == best
    assert chosen["separated"] is separated
    assert ("NOT separated" in chosen["how"]) is not separated
    if len(vals2) > 1:
        assert chosen["lead"] == pytest.approx(abs(sum(vals2) - sum(vals4)) / 3)
    else:
        assert chosen["spread"] is None and "unknown" in chosen["how"]
    assert f"best configuration: adapter_reduction_factor={best} (" in report.format_configs(summary)


def test_degenerate_runs_are_counted_per_evaluation_set(tmp_path):
    spec = [(2, seed, [70.0, 50.0, 40.0], 70.0) for seed in range(3)]
    summary = report.collect_sweep(seed_sweep(tmp_path, spec, flagged=(1,)))
    (config,) = summary["configs"]
    assert config["degenerate"] == ["1"]
    counts = {name: cells["acc"]["flagged"] for name, cells in config["metrics"].items()}
    assert counts == {"en": 0, "de": 1, "fr": 0, "zs_avg": 1, "avg": 1}
    text = report.format_configs(summary)
    assert "seeds 0,1,2; 3 of 3 finished; DEGENERATE 1 of 3" in text
    assert next(line for line in text.splitlines() if line.startswith("de ")).split()[-2:] == ["3", "1"]
    # the per-run table names the best run as one seed's luck
    assert "best single run (one seed; compare configurations by their means): run 0" in report.format_table(summary)


def test_cli_prints_the_seed_table_only_for_repeated_configurations(tmp_path, sweep, capsys):
    assert report_cli.main([str(sweep), "--out", str(tmp_path / "a")]) == 0
    assert "mean ± sd" not in capsys.readouterr().out  # one run per configuration: nothing to average
    spec = [(rf, seed, [70.0, 50.0, 40.0], 70.0 + seed) for rf in (2, 4) for seed in range(2)]
    assert report_cli.main([str(seed_sweep(tmp_path, spec)), "--out", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "mean ± sd over runs that differ only in seed" in out and "best configuration: " in out


# --------------------------------------------------------------------------- plots a reader trusts


def test_bars_mark_degenerate_and_best_configurations_and_show_the_spread(tmp_path):
    spec = [(2, s, [70.0 + s, 50.0, 40.0], 80.0 + s) for s in range(3)] + [(4, 0, [60.0, 45.0, 41.0], 70.0)]
    summary = report.collect_sweep(seed_sweep(tmp_path, spec, flagged=(3,)))
    fig = plots.plot_zero_shot(summary, "acc")
    ax = fig.axes[0]
    from matplotlib.container import BarContainer

    rf2, rf4 = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert all(bar.get_gid() == "best" and bar.get_linewidth() > 1 for bar in rf2)
    assert all(bar.get_gid() == "degenerate" and bar.get_hatch() == "//" for bar in rf4)
    assert rf2.errorbar is not None and rf4.errorbar is None  # n = 3: error bars; n = 1: none, not a zero bar
    (_, _, (segments,)) = rf2.errorbar.lines
    en = segments.get_segments()[0]
    assert en[1][1] - en[0][1] == pytest.approx(2 * 1.0)  # en 70, 71, 72: mean 71, sd 1
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[1:] == ["adapter_reduction_factor=2 (n=3) - best on validation",
                          "adapter_reduction_factor=4 - DEGENERATE 1 of 1"]
    assert ax.get_title() == "acc per evaluation set: trained on en, zero-shot on the others, mean ± sd over seeds"
    fig = plots.plot_heatmap(summary, "acc")
    framed = [p for p in fig.axes[0].patches if p.get_gid() == "degenerate"]
    assert [(p.get_x() + 0.48, p.get_y() + 0.48) for p in framed] == [(1, 1), (1, 3), (1, 4)]  # de, zs_avg, avg
    assert "72.00\n±1.00" not in [t.get_text() for t in fig.axes[0].texts]
    assert "71.00\n±1.00" in [t.get_text() for t in fig.axes[0].texts]


def test_a_sweep_whose_sets_are_all_trained_is_not_titled_zero_shot(tmp_path):
    run = make_run(tmp_path / "s", 0, ["trainer.max_steps=4"], [5.0, 6.0, 7.0], val=5.0)
    results = json.loads((run / "results.json").read_text())
    results["train_languages"] = LANGS
    (run / "results.json").write_text(json.dumps(results))
    title = plots.plot_zero_shot(report.collect_sweep(tmp_path / "s"), "loss").axes[0].get_title()
    assert title == "loss per evaluation set (all trained on: en, de, fr)"


def _curse(values: dict[tuple[str, int], float], flagged=()) -> dict:
    return {"chance": 100 / 3, "curse": [
        {"mode": mode, "languages": k, "probe_mlm_loss": v, "probe_fact_loss": v, "zero_shot_avg_acc": v if k > 1 else None,
         "flags": {"de": ["predicts 1 of 3 classes"]} if (mode, k) in flagged else {}}
        for (mode, k), v in values.items()]}  # fmt: skip


def test_paper_plots_never_hide_a_mode_and_keep_its_colour():
    # both modes score the same at every K (as when both collapse to chance): both stay visible
    same = {(mode, k): 33.3 for mode in ("modular", "shared") for k in (1, 2, 4)}
    figures = paper_doc.curse_figures(_curse(same, flagged={("shared", 4)}))
    assert set(figures) == {"fact_probe_vs_k.png", "probe_loss_vs_k.png", "zero_shot_vs_k.png"}
    for name, fig in figures.items():
        ax = fig.axes[0]
        lines = {line.get_label(): line for line in ax.get_lines()}
        for mode in ("shared", "modular"):
            assert lines[mode].get_color() == plots.MODE_STYLE[mode]["color"]
            assert lines[mode].get_marker() == plots.MODE_STYLE[mode]["marker"]
            assert lines[mode].get_linestyle() == plots.MODE_STYLE[mode]["linestyle"]
        shared, modular = lines["shared"].get_xdata(), lines["modular"].get_xdata()
        assert all(s < m for s, m in zip(shared, modular, strict=True))  # offset, never on top of each other
        assert "K" in ax.get_title() and ("MLM loss" in ax.get_title()) == (name == "probe_loss_vs_k.png")
    marks = [line for line in figures["zero_shot_vs_k.png"].axes[0].get_lines() if line.get_gid() == "degenerate"]
    assert len(marks) == 1 and marks[0].get_ydata()[0] == 33.3
    assert not [line for line in figures["probe_loss_vs_k.png"].axes[0].get_lines() if line.get_gid()]


def test_mode_colours_do_not_depend_on_run_order(tmp_path):
    """The sweep lists modular before shared (as `make paper`'s folders sort): colours follow the mode."""
    for num, (mode, k) in enumerate([("modular", 1), ("modular", 2), ("shared", 1), ("shared", 2)]):
        run = make_run(tmp_path / "s", num, [f"adapter.adapter_mode={mode}", f"languages=synthetic{k}"],
                       [5.0 + k, 6.0, 7.0], val=5.0)
        results = json.loads((run / "results.json").read_text())
        results["train_languages"] = LANGS[:k]
        (run / "results.json").write_text(json.dumps(results))
    summary = report.collect_sweep(tmp_path / "s")
    fig = plots.plot_against_languages(summary, "loss")
    lines = {c.get_label(): c.lines[0] for c in fig.axes[0].containers}  # errorbar: (data line, caps, bars)
    for mode in ("shared", "modular"):
        assert lines[f"adapter_mode={mode}"].get_color() == plots.MODE_STYLE[mode]["color"]
        assert lines[f"adapter_mode={mode}"].get_marker() == plots.MODE_STYLE[mode]["marker"]
    shared, modular = lines["adapter_mode=shared"].get_xdata(), lines["adapter_mode=modular"].get_xdata()
    assert all(s != m for s, m in zip(shared, modular, strict=True))  # equal K, offset: neither hides the other
    assert fig.axes[0].get_title() == "loss on en" and "against the number of training languages" in fig.texts[0].get_text()
