"""Sweep results: read a sweep directory, print its table, plot it. ``xmod-report SWEEP_DIR``.

On-disk format (written by ``xmod-train -m ...``): a sweep directory holds one subdirectory per run with
``.hydra/overrides.yaml`` (the run's overrides), ``results.json`` (per-language metrics, see
``per_language_metrics``) once it finished, and ``job_status.json`` (written by ``xmod_lab.sweep.SweepSummary``).
This module reads only those files, so it works on sweeps copied off a cluster and never imports torch.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

SUMMARY_CSV = "sweep_summary.csv"
SUMMARY_JSON = "sweep_summary.json"
JOB_STATUS = "job_status.json"
RESULTS = "results.json"


def per_language_metrics(results: Any) -> dict[str, dict[str, float]]:
    """``{language: {metric: value}}`` (``avg`` included) from a run's ``results.json``.

    xmod-train writes ``{"split": "test", "test": {"de_DE": {"acc": 71.2}, ..., "avg": {..}}, ...}``;
    a flat dict of logged metrics (``{"test/de_DE/acc": 71.2}``) is read too.
    """
    if not isinstance(results, dict):
        raise ValueError(f"results.json must hold a JSON object, got {type(results).__name__}")
    split = results.get("split")
    if isinstance(split, str) and isinstance(results.get(split), dict):
        return {
            str(lang): {k: float(v) for k, v in row.items() if _is_number(v)}
            for lang, row in results[split].items()
            if isinstance(row, dict)
        }
    by_split: dict[str, dict[str, dict[str, float]]] = {}
    for key, value in results.items():
        parts = str(key).split("/")
        if len(parts) == 3 and _is_number(value):
            by_split.setdefault(parts[0], {}).setdefault(parts[1], {})[parts[2]] = float(value)
    for name in ("test", "val"):
        if name in by_split:
            return by_split[name]
    raise ValueError(
        "results.json has neither a 'split' entry with its table nor '<split>/<lang>/<metric>' keys"
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _with_average(metrics: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    if not metrics or "avg" in metrics:
        return metrics
    names = sorted({m for row in metrics.values() for m in row})
    avg = {
        m: sum(row[m] for row in metrics.values() if m in row) / sum(m in row for row in metrics.values())
        for m in names
    }
    return {**metrics, "avg": avg}


def _parse_override(text: str) -> tuple[str, str]:
    key, _, value = text.partition("=")
    return key.lstrip("+~"), value


def read_run(run_dir: str | os.PathLike) -> dict[str, Any]:
    """One sweep row from a run directory: overrides, status, per-language metrics (with ``avg``), error."""
    run_dir = Path(run_dir)
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    overrides = [str(o) for o in OmegaConf.load(overrides_file)] if overrides_file.is_file() else []
    status_file = run_dir / JOB_STATUS
    job = json.loads(status_file.read_text()) if status_file.is_file() else {}
    metrics: dict[str, dict[str, float]] = {}
    trained: list[str] = []
    flags: dict[str, list[str]] = {}
    error = job.get("error")
    results_file = run_dir / RESULTS
    if results_file.is_file():
        try:
            results = json.loads(results_file.read_text())
            metrics = _with_average(per_language_metrics(results))
            trained = [str(code) for code in results.get("train_languages") or []]
            # degenerate classifiers, found by xmod_lab.diagnostics at the end of the run
            flags = dict((results.get("diagnostics") or {}).get("flags") or {})
        except (ValueError, json.JSONDecodeError) as e:
            error = error or f"unreadable {RESULTS}: {e}"
    # no job_status.json: a sweep run without the SweepSummary callback, or a job killed from outside
    status = job.get("status") or ("completed" if metrics else "failed" if error else "unfinished")
    if status == "completed" and not metrics:
        status, error = "failed", error or f"finished without writing {RESULTS}"
    return {
        "run": run_dir.name,
        "status": status,
        "overrides": dict(_parse_override(o) for o in overrides),
        "metrics": metrics,
        "train_languages": trained,
        "flags": flags,
        "error": error,
    }


def flag_cell(run: dict[str, Any]) -> str:
    """``DEGENERATE: de_DE, fr_XX`` for a run with flagged languages (why: results.json ``diagnostics``)."""
    return "DEGENERATE: " + ", ".join(run["flags"]) if run.get("flags") else ""


def _run_dirs(sweep_dir: Path) -> list[Path]:
    dirs = [p for p in sweep_dir.iterdir() if p.is_dir() and (p / ".hydra").is_dir()]
    # numbered job dirs sort numerically (2 before 10); named ones (override_dirname subdirs) by name
    return sorted(dirs, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))


def collect_sweep(sweep_dir: str | os.PathLike) -> dict[str, Any]:
    """The summary of a sweep directory: ``{"sweep_dir", "runs": [row, ..], "failed": [run names]}``."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep directory {sweep_dir} does not exist")
    runs = [read_run(d) for d in _run_dirs(sweep_dir)]
    if not runs:
        raise FileNotFoundError(
            f"{sweep_dir} holds no run directories (subfolders with .hydra/); pass the folder that "
            "`xmod-train -m ...` printed, e.g. multirun/<date>/<time>"
        )
    return {
        "sweep_dir": str(sweep_dir.resolve()),
        "runs": runs,
        "failed": [r["run"] for r in runs if r["status"] != "completed"],
    }


def summary_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Flat rows (one per run) for CSV and tables: run, status, each override, ``<lang>/<metric>``, error."""
    rows = []
    for run in summary["runs"]:
        row: dict[str, Any] = {"run": run["run"], "status": run["status"]}
        row.update(run["overrides"])
        for lang, metrics in run["metrics"].items():
            row.update({f"{lang}/{name}": value for name, value in metrics.items()})
        row["flags"] = flag_cell(run)
        row["error"] = run["error"] or ""
        rows.append(row)
    return rows


def write_summary(sweep_dir: str | os.PathLike) -> dict[str, Any]:
    """Collect ``sweep_dir`` and write ``sweep_summary.csv`` and ``.json`` into it."""
    summary = collect_sweep(sweep_dir)
    write_summary_files(summary, Path(sweep_dir))
    return summary


def write_summary_files(summary: dict[str, Any], folder: Path) -> None:
    rows = summary_rows(summary)
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns and c != "error"]
    columns.append("error")
    # several jobs may finish at once (submitit): write beside the target, then rename over it
    tmp_json = folder / f".{SUMMARY_JSON}.{os.getpid()}"
    tmp_json.write_text(json.dumps(summary, indent=2))
    tmp_json.replace(folder / SUMMARY_JSON)
    tmp_csv = folder / f".{SUMMARY_CSV}.{os.getpid()}"
    with tmp_csv.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    tmp_csv.replace(folder / SUMMARY_CSV)


def format_table(summary: dict[str, Any], metric: str | None = None) -> str:
    """A plain-text table: one row per run, the overrides that vary, ``metric`` per language and average."""
    runs = summary["runs"]
    metric = metric or primary_metric(summary)
    languages = [lang for lang in _languages(summary) if lang != "avg"] + ["avg"]
    keys = [k for k in dict.fromkeys(k for r in runs for k in r["overrides"])]
    varying = [k for k in keys if len({r["overrides"].get(k) for r in runs}) > 1] or keys
    header = ["run", *varying, *languages, "status"]
    table = [header]
    for r in runs:
        cells = [r["run"], *(str(r["overrides"].get(k, "")) for k in varying)]
        cells += [
            f"{r['metrics'][lang][metric]:.4g}" if metric in r["metrics"].get(lang, {}) else "-"
            for lang in languages
        ]
        status = " ".join(filter(None, [r["status"], flag_cell(r)]))
        cells.append(status if not r["error"] else f"{status}: {r['error']}"[:80])
        table.append(cells)
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in table]
    return f"metric: {metric}\n" + "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def _languages(summary: dict[str, Any]) -> list[str]:
    return list(dict.fromkeys(lang for r in summary["runs"] for lang in r["metrics"]))


# the first of these that every finished run reports is the one shown by default
_PREFERRED_METRICS = ("acc", "accuracy", "f1", "exact_match", "em", "loss", "perplexity")


def primary_metric(summary: dict[str, Any]) -> str:
    """The metric shown by default: a task's headline metric if reported, else the first one found."""
    names = list(dict.fromkeys(m for r in summary["runs"] for row in r["metrics"].values() for m in row))
    if not names:
        raise ValueError(f"no run in {summary['sweep_dir']} has metrics; failed runs: {summary['failed']}")
    for name in _PREFERRED_METRICS:
        if name in names:
            return name
    return names[0]


def run_labels(summary: dict[str, Any]) -> dict[str, str]:
    """A short label per run from the overrides that vary across the sweep (``reduction_factor=4``)."""
    runs = summary["runs"]
    keys = list(dict.fromkeys(k for r in runs for k in r["overrides"]))
    varying = [k for k in keys if len({r["overrides"].get(k) for r in runs}) > 1]
    labels = {}
    for r in runs:
        parts = [f"{k.rsplit('.', 1)[-1]}={r['overrides'][k]}" for k in varying if k in r["overrides"]]
        labels[r["run"]] = ", ".join(parts) or f"run {r['run']}"
    return labels


def metric_matrix(summary: dict[str, Any], metric: str) -> tuple[list[str], list[str], list[list[float]]]:
    """(languages with ``avg`` last, finished runs, values[language][run]; NaN where a run lacks one)."""
    runs = [r for r in summary["runs"] if r["metrics"]]
    languages = [lang for lang in _languages(summary) if lang != "avg"] + ["avg"]
    values = [[r["metrics"].get(lang, {}).get(metric, float("nan")) for r in runs] for lang in languages]
    return languages, [r["run"] for r in runs], values


def train_languages(summary: dict[str, Any]) -> list[str]:
    """The evaluated languages the runs were trained on, to tell the zero-shot ones apart.

    ``results.json`` lists dataset codes (``en``) while the tables use adapter codes (``en_XX``).
    """
    trained = {code for r in summary["runs"] for code in r.get("train_languages", [])}
    return [lang for lang in _languages(summary) if lang in trained or lang.split("_")[0] in trained]


def plot_heatmap(summary: dict[str, Any], metric: str, path: str | os.PathLike | None = None) -> Any:
    """Heatmap of ``metric``: languages (rows, ``avg`` last) x configurations (columns)."""
    import matplotlib.pyplot as plt

    languages, runs, values = metric_matrix(summary, metric)
    labels = run_labels(summary)
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(runs), 1.0 + 0.45 * len(languages)))
    image = ax.imshow(values, aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(runs)), [labels[r] for r in runs], rotation=30, ha="right")
    ax.set_yticks(range(len(languages)), languages)
    for i, row in enumerate(values):
        for j, value in enumerate(row):
            if value == value:  # not NaN
                ax.text(j, i, f"{value:.4g}", ha="center", va="center", color="white", fontsize=8)
    ax.axhline(len(languages) - 1.5, color="white", linewidth=2)  # sets avg apart
    fig.colorbar(image, ax=ax, label=metric)
    ax.set_title(f"{metric} per language and configuration")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def plot_zero_shot(summary: dict[str, Any], metric: str, path: str | os.PathLike | None = None) -> Any:
    """Grouped bars of ``metric`` per evaluation language, one bar per configuration; training language first."""
    import matplotlib.pyplot as plt

    languages, runs, values = metric_matrix(summary, metric)
    trained = train_languages(summary)
    order = [lang for lang in languages if lang in trained] + [
        lang for lang in languages if lang not in trained and lang != "avg"
    ]
    by_lang = dict(zip(languages, values, strict=True))
    labels = run_labels(summary)
    width = 0.8 / max(1, len(runs))
    fig, ax = plt.subplots(figsize=(2.0 + 0.9 * len(order) * max(1, len(runs)) ** 0.5, 4.0))
    for j, run in enumerate(runs):
        xs = [i - 0.4 + width * (j + 0.5) for i in range(len(order))]
        ax.bar(xs, [by_lang[lang][j] for lang in order], width, label=labels[run])
    ax.set_xticks(range(len(order)), [f"{lang}\n(train)" if lang in trained else lang for lang in order])
    if trained:
        ax.axvline(len([lang for lang in order if lang in trained]) - 0.5, color="grey", linestyle="--")
    ax.set_ylabel(metric)
    source = ", ".join(trained) if trained else "the training language"
    ax.set_title(f"Zero-shot transfer from {source}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def plot_against_languages(summary: dict[str, Any], metric: str, path: str | os.PathLike | None = None) -> Any:
    """``metric`` on the languages every run evaluates against the number of training languages, one line per
    setting of the other varying overrides (e.g. ``adapter.mode``): the curse-of-multilinguality figure."""
    import matplotlib.pyplot as plt

    runs = [r for r in summary["runs"] if r["metrics"] and r["train_languages"]]
    common = [lang for lang in _languages(summary) if lang != "avg" and all(lang in r["metrics"] for r in runs)]
    labels = run_labels({"runs": [{**r, "overrides": {k: v for k, v in r["overrides"].items()
                                                      if not k.startswith("languages")}} for r in runs]})
    fig, axes = plt.subplots(1, max(1, len(common[:4])), figsize=(1.0 + 4.0 * max(1, len(common[:4])), 3.6),
                             squeeze=False)
    for ax, lang in zip(axes[0], common[:4], strict=False):
        for label in dict.fromkeys(labels[r["run"]] for r in runs):
            points = sorted((len(r["train_languages"]), r["metrics"][lang].get(metric, float("nan")))
                            for r in runs if labels[r["run"]] == label)
            ax.plot([x for x, _ in points], [y for _, y in points], marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("training languages")
        ax.set_ylabel(f"{metric} ({lang})")
        ax.legend(fontsize=8)
    fig.suptitle(f"{metric} against the number of training languages")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="xmod-report",
        description="Print a sweep's per-language results table and write its plots as PNG.",
    )
    parser.add_argument("sweep_dir", help="the multirun directory, e.g. multirun/2026-11-22/08-10-17")
    parser.add_argument("--metric", help="metric to show (default: the task's headline metric, e.g. acc)")
    parser.add_argument("--out", help="folder for the PNGs and the summary (default: SWEEP_DIR)")
    args = parser.parse_args(argv)
    try:
        summary = collect_sweep(args.sweep_dir)
        metric = args.metric or primary_metric(summary)
        known = {m for r in summary["runs"] for row in r["metrics"].values() for m in row}
        if metric not in known:
            raise ValueError(f"no run reports metric {metric!r}; known metrics: {', '.join(sorted(known))}")
    except (FileNotFoundError, ValueError) as e:
        print(f"xmod-report: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out or args.sweep_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_summary_files(summary, out)
    print(format_table(summary, metric))
    import matplotlib

    matplotlib.use("Agg")  # a CLI never needs a window
    for name, plot in (("heatmap", plot_heatmap), ("zero_shot", plot_zero_shot)):
        path = out / f"{name}_{metric}.png"
        plot(summary, metric, path)
        print(f"wrote {path}")
    if len({len(r["train_languages"]) for r in summary["runs"] if r["metrics"]}) > 1:  # e.g. K = 1, 2, 4, ...
        path = out / f"by_languages_{metric}.png"
        plot_against_languages(summary, metric, path)
        print(f"wrote {path}")
    if summary["failed"]:
        print(f"runs that did not finish: {', '.join(summary['failed'])}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
