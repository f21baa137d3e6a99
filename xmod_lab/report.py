"""Sweep results: read a sweep directory and print its tables (``xmod-report SWEEP_DIR``: ``report_cli``).

On-disk format (written by ``xmod-train -m ...``): a sweep directory holds one subdirectory per run with
``.hydra/overrides.yaml`` (the run's overrides), ``results.json`` (per-language metrics, see
``per_language_metrics``) once it finished, and ``job_status.json`` (written by ``xmod_lab.sweep.SweepSummary``).
Each run's ``config.yaml`` gives the chance level (classification accuracy: 100 / number of classes).
This module reads only those files, so it works on sweeps copied off a cluster and never imports torch.

Conventions of every table and plot here: numbers with two decimals (``NUMBER``); the languages, then
``zs_avg`` (the zero-shot average: evaluation languages the run did not train on) and ``avg`` (all of
them); "best" is the run with the best validation score of the metric its checkpoints were chosen on
(``results.json``: ``monitor`` / ``best_score``), never a test score. Runs that differ only in their seed
are one configuration (``xmod_lab.seeds``): ``summary["configs"]`` holds their mean ± sd, written to
``sweep_summary.json`` and ``sweep_configs.csv``; the best configuration is chosen on the mean validation
score. Plots: ``xmod_lab.plots``.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from omegaconf import OmegaConf

from xmod_lab import seeds
from xmod_lab.results import AVG, NUMBER, ZERO_SHOT_AVG, parse_metric_key

SUMMARY_CSV = "sweep_summary.csv"
SUMMARY_JSON = "sweep_summary.json"
CONFIGS_CSV = "sweep_configs.csv"  # one row per configuration: mean, sd, n over seeds
JOB_STATUS = "job_status.json"
RESULTS = "results.json"
CONFIG = "config.yaml"


def per_language_metrics(results: Any) -> dict[str, dict[str, float]]:
    """``{language: {metric: value}}`` (``avg`` included) from a run's ``results.json``.

    xmod-train writes ``{"split": "test", "test": {"de": {"acc": 71.2}, ..., "avg": {..}}, ...}`` (one row
    per evaluation set); a flat dict of logged metrics (``{"test/de/acc": 71.2}``) is read too.
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
        parsed = parse_metric_key(key)
        if parsed and _is_number(value):
            by_split.setdefault(parsed[0], {}).setdefault(parsed[1], {})[parsed[2]] = float(value)
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


def _is_trained(language: str, trained: list[str]) -> bool:
    """Rows are evaluation sets, named by dataset codes as ``train_languages`` are; results.json files of
    xmod-lab before evaluation sets keyed rows by adapter code (``en_XX``), which the prefix still matches."""
    return language in trained or language.split("_")[0] in trained


def _with_zero_shot_average(metrics: dict[str, dict[str, float]], trained: list[str]) -> dict[str, dict[str, float]]:
    """``zs_avg`` (before ``avg``): the mean over the evaluation languages the run was not trained on."""
    zero_shot = [row for lang, row in metrics.items() if lang not in (AVG, ZERO_SHOT_AVG) and not _is_trained(lang, trained)]
    if not trained or not zero_shot or ZERO_SHOT_AVG in metrics:
        return metrics
    names = sorted({m for row in zero_shot for m in row})
    average = {m: sum(r[m] for r in zero_shot if m in r) / sum(m in r for r in zero_shot) for m in names}
    out = {lang: row for lang, row in metrics.items() if lang != AVG}
    out[ZERO_SHOT_AVG] = average
    if AVG in metrics:
        out[AVG] = metrics[AVG]
    return out


def chance_levels(config_file: Path) -> dict[str, float]:
    """``{"acc": 33.33}`` for a classification run (``task.label_names`` classes, or the choices of a
    multiple-choice task); empty when the run's config does not say (F1, EM, losses have no such line)."""
    if not config_file.is_file():
        return {}
    cfg = OmegaConf.load(config_file)
    target = str(OmegaConf.select(cfg, "task._target_", default="") or "")
    if target.endswith("SequenceClassificationTask"):
        names = OmegaConf.select(cfg, "task.label_names", default=None)
        n = len(names) if names is not None else OmegaConf.select(cfg, "task.num_labels", default=None)
    elif target.endswith("MultipleChoiceTask"):
        n = len(OmegaConf.select(cfg, "data.choices_columns", default=None) or [])
    else:
        return {}
    return {"acc": 100.0 / n} if isinstance(n, int) and n > 1 else {}


def _validation_score(results: dict[str, Any]) -> dict[str, Any] | None:
    """The score the run's checkpoint was chosen on: ``{"metric": "val/en/acc", "value": .., "mode": "max"}``."""
    value, monitor = results.get("best_score"), results.get("monitor")
    if not _is_number(value) or not monitor:
        return None
    return {"metric": str(monitor), "value": float(value), "mode": str(results.get("monitor_mode") or "max")}


def best_run(summary: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """(the finished run with the best validation score, how it was chosen); (None, why) when the runs do
    not all report one on the same metric (a test score never picks the best)."""
    finished = [r for r in summary["runs"] if r["metrics"]]
    scores = [r["validation"] for r in finished]
    if not finished or any(s is None for s in scores):
        return None, "no validation score in results.json (monitor / best_score) for every finished run"
    if len({(s["metric"], s["mode"]) for s in scores}) > 1:
        return None, "the runs chose checkpoints on different validation metrics"
    metric, mode = scores[0]["metric"], scores[0]["mode"]
    pick = max if mode == "max" else min
    best = pick(finished, key=lambda r: r["validation"]["value"])
    return best, f"best on validation {metric} ({mode}) = {NUMBER.format(best['validation']['value'])}"


def chance_level(summary: dict[str, Any], metric: str) -> float | None:
    """The chance level of ``metric`` when every run that reports one agrees on it."""
    levels = {r["chance"][metric] for r in summary["runs"] if metric in r.get("chance", {})}
    return levels.pop() if len(levels) == 1 else None


def find_sweep(path: str | os.PathLike | None = None) -> Path:
    """A sweep directory: ``path`` itself, else the newest ``outputs/*/multiruns/*`` under ``path``,
    ``$XMOD_SWEEP_DIR``, ``$XMOD_ROOT``, or the working directory and its parents (a notebook started
    anywhere in the checkout finds the checkout's sweeps)."""
    if path is None and os.environ.get("XMOD_SWEEP_DIR"):
        path = os.environ["XMOD_SWEEP_DIR"]
    if path is not None:  # a sweep directory, or a folder with outputs/ in it
        if not Path(path).is_dir():
            raise FileNotFoundError(f"sweep directory {path} does not exist")
        sweeps = [p for p in Path(path).glob("outputs/*/multiruns/*") if p.is_dir()]
        return max(sweeps, key=lambda p: p.stat().st_mtime) if sweeps else Path(path)
    roots = [Path(os.environ["XMOD_ROOT"])] if os.environ.get("XMOD_ROOT") else [Path.cwd(), *Path.cwd().parents]
    for root in roots:
        sweeps = [p for p in root.glob("outputs/*/multiruns/*") if p.is_dir()]
        if sweeps:
            return max(sweeps, key=lambda p: p.stat().st_mtime)
    where = ", ".join(str(r) for r in roots[:2]) + (" and its parents" if len(roots) > 2 else "")
    raise FileNotFoundError(
        f"no sweep found in {where} (looked for outputs/*/multiruns/*): run `xmod-train -m ...`, "
        "or pass the sweep directory (or XMOD_SWEEP_DIR / XMOD_ROOT)"
    )


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
    adapters: dict[str, str] = {}
    flags: dict[str, list[str]] = {}
    error = job.get("error")
    results_file = run_dir / RESULTS
    if results_file.is_file():
        try:
            results = json.loads(results_file.read_text())
            metrics = _with_average(per_language_metrics(results))
            trained = [str(code) for code in results.get("train_languages") or []]
            adapters = {str(k): str(v) for k, v in (results.get("adapters") or {}).items()}
            # degenerate classifiers, found by xmod_lab.diagnostics at the end of the run
            flags = dict((results.get("diagnostics") or {}).get("flags") or {})
        except (ValueError, json.JSONDecodeError) as e:
            error = error or f"unreadable {RESULTS}: {e}"
    validation = None
    if results_file.is_file() and not error:
        validation = _validation_score(json.loads(results_file.read_text()))
    metrics = _with_zero_shot_average(metrics, trained)
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
        "adapters": adapters,
        "chance": chance_levels(run_dir / CONFIG),
        "validation": validation,
        "flags": flags,
        "error": error,
    }


def flag_cell(run: dict[str, Any]) -> str:
    """``DEGENERATE: de_DE, fr_XX`` for a run with flagged languages (why: results.json ``diagnostics``)."""
    return "DEGENERATE: " + ", ".join(run["flags"]) if run.get("flags") else ""


def _run_dirs(sweep_dir: Path) -> list[Path]:
    dirs = [p for p in sweep_dir.iterdir() if p.is_dir() and (p / ".hydra").is_dir()]
    # job dirs (<n> or <n>_<overrides>) sort by job number (2 before 10); other names by name
    def key(p: Path) -> tuple[bool, int, str]:
        number = re.match(r"(\d+)(?:_|$)", p.name)
        return (number is None, int(number[1]) if number else 0, p.name)

    return sorted(dirs, key=key)


def collect_sweep(sweep_dir: str | os.PathLike) -> dict[str, Any]:
    """The summary of a sweep directory: ``{"sweep_dir", "runs": [row, ..], "failed": [run names],
    "configs": [mean ± sd per configuration (``seeds.aggregate``)]}``."""
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
        "configs": seeds.aggregate({"runs": runs}),
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
    _write_atomically(folder / SUMMARY_JSON, lambda f: f.write(json.dumps(summary, indent=2)))
    _write_csv_atomically(folder / SUMMARY_CSV, rows, columns)
    configs = seeds.config_rows(summary["configs"])
    _write_csv_atomically(folder / CONFIGS_CSV, configs, list(dict.fromkeys(c for row in configs for c in row)))


def _write_csv_atomically(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    def write(f: TextIO) -> None:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)

    _write_atomically(path, write)


def _write_atomically(path: Path, write: Callable[[TextIO], None]) -> None:
    # several jobs may finish at once (submitit): write beside the target, then rename over it, so a
    # reader sees the old file or the new one, never half of one; a failed write leaves no stray file
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        with tmp.open("w", newline="") as f:
            write(f)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def format_table(summary: dict[str, Any], metric: str | None = None) -> str:
    """A plain-text table: one row per run, the overrides that vary, ``metric`` per language, the zero-shot
    and overall averages, the validation score checkpoints were chosen on; the chance level and the best
    run (on validation) above it."""
    runs = summary["runs"]
    metric = metric or primary_metric(summary)
    languages = ordered_languages(summary)
    keys = [k for k in dict.fromkeys(k for r in runs for k in r["overrides"])]
    varying = [k for k in keys if len({r["overrides"].get(k) for r in runs}) > 1] or keys
    header = ["run", *varying, *languages, "val", "status"]
    table = [header]
    for r in runs:
        cells = [r["run"], *(str(r["overrides"].get(k, "")) for k in varying)]
        cells += [
            NUMBER.format(r["metrics"][lang][metric]) if metric in r["metrics"].get(lang, {}) else "-"
            for lang in languages
        ]
        cells.append(NUMBER.format(r["validation"]["value"]) if r.get("validation") else "-")
        status = " ".join(filter(None, [r["status"], flag_cell(r)]))
        cells.append(status if not r["error"] else f"{status}: {r['error']}"[:80])
        table.append(cells)
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in table]
    chance = chance_level(summary, metric)
    best, how = best_run(summary)
    # with repeated seeds one run's luck picks nothing: the configurations' table (format_configs) does
    which = "best single run (one seed; compare configurations by their means)" if seeds.has_repeats(
        summary.get("configs") or []) else "best"
    head = [f"metric: {metric}" + (f" (chance {NUMBER.format(chance)})" if chance is not None else ""),
            f"{which}: run {best['run']} ({how})" if best else f"{which}: not chosen ({how})"]
    adapters = adapter_line(summary)
    if adapters:
        head.append(adapters)
    validation = {r["validation"]["metric"] for r in runs if r.get("validation")}
    if validation:
        head.append(f"val: {', '.join(sorted(validation))} of the checkpoint tested; {ZERO_SHOT_AVG}: "
                    "average over the languages not trained on")
    return "\n".join([*head, lines[0], "-" * len(lines[0]), *lines[1:]])


def format_configs(summary: dict[str, Any], metric: str | None = None) -> str:
    """The mean ± sd table of the sweep's configurations (runs that differ only in seed; ``seeds.format_configs``)."""
    metric = metric or primary_metric(summary)
    return seeds.format_configs(summary["configs"], metric, chance_level(summary, metric))


def adapter_line(summary: dict[str, Any]) -> str:
    """``adapters: en-ar en_XX, en-zh en_XX``: the adapter that scored each evaluation set (``varies`` where the
    runs used different ones); empty for runs that did not record them."""
    by_set: dict[str, set[str]] = {}
    for r in summary["runs"]:
        for name, adapter in (r.get("adapters") or {}).items():
            by_set.setdefault(name, set()).add(adapter)
    cells = [f"{name} {adapters.pop() if len(adapters) == 1 else 'varies'}" for name, adapters in by_set.items()]
    return f"adapters: {', '.join(cells)}" if cells else ""


def ordered_languages(summary: dict[str, Any]) -> list[str]:
    """Languages in first-seen order, then zs_avg and avg."""
    found = _languages(summary)
    return [lang for lang in found if lang not in (ZERO_SHOT_AVG, AVG)] + [
        a for a in (ZERO_SHOT_AVG, AVG) if a in found or a == AVG]


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
    """(languages with ``zs_avg`` and ``avg`` last, finished runs, values[language][run]; NaN where a run
    lacks one)."""
    runs = [r for r in summary["runs"] if r["metrics"]]
    languages = ordered_languages(summary)
    values = [[r["metrics"].get(lang, {}).get(metric, float("nan")) for r in runs] for lang in languages]
    return languages, [r["run"] for r in runs], values


def train_languages(summary: dict[str, Any]) -> list[str]:
    """The evaluated languages the runs were trained on, to tell the zero-shot ones apart.

    """
    trained = [code for r in summary["runs"] for code in r.get("train_languages", [])]
    return [lang for lang in _languages(summary) if lang not in (ZERO_SHOT_AVG, AVG) and _is_trained(lang, trained)]
