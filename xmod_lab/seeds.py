"""Seeds as a sweep axis: runs that differ only in their seed are one configuration, reported as mean ± sd.

One run per configuration compares noise: the default experiment's zero-shot average moves by about ten
points between seeds. ``xmod-train -m seed=0,1,2 adapter.adapter_reduction_factor=4,8`` gives two
configurations of three runs each; ``aggregate`` groups a sweep's runs by ``config_id`` (their overrides
minus ``seed``) and gives, per evaluation set, ``zs_avg`` and ``avg`` and per metric, the mean, the sample
standard deviation (ddof=1) and n over the runs that finished. With n = 1 the sd is undefined: ``None`` in
JSON, empty in CSV, ``n/a`` in tables, never 0.

The best configuration is the one with the best *mean* validation score (the score each run's tested
checkpoint was chosen on, never a test score). Its lead over the runner-up is compared with the spread, the
larger of the two configurations' validation sds: a lead that is not larger than the spread (or a spread
that is unknown, n = 1) is reported as "not separated" from the runner-up.

This module reads the rows of ``xmod_lab.report.collect_sweep`` (plain dicts) and imports nothing else of
the package but the results vocabulary, so W&B tracking (``config_id``), reports and plots share it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from xmod_lab.results import AVERAGES, NUMBER

SEED = "seed"
NO_SD = "n/a"  # how an undefined sd (n = 1) is shown
BASE = "base"  # config_id of runs whose only override is the seed


def config_id(overrides: Mapping[str, Any] | Iterable[str]) -> str:
    """The configuration a run belongs to: its overrides without the seed, ``a=1,b=2`` (``base`` if none).

    ``overrides`` is ``{key: value}`` (a sweep row) or Hydra's ``["a=1", "seed=3"]`` (a job's own)."""
    pairs = overrides.items() if isinstance(overrides, Mapping) else (
        (str(o).partition("=")[0].lstrip("+~"), str(o).partition("=")[2]) for o in overrides)
    kept = [f"{key}={value}" for key, value in pairs if key != SEED]
    return ",".join(kept) or BASE


def stats(values: Iterable[float]) -> dict[str, Any] | None:
    """``{"mean", "sd", "n"}`` of the non-NaN values: sample sd (ddof=1), None when n = 1; None when n = 0."""
    kept = [float(v) for v in values if not math.isnan(float(v))]
    if not kept:
        return None
    return {"mean": statistics.fmean(kept), "sd": statistics.stdev(kept) if len(kept) > 1 else None, "n": len(kept)}


def _flagged_sets(run: Mapping[str, Any]) -> set[str]:
    """The evaluation sets a run's diagnostics flagged; flags of older runs are keyed by adapter (``de_DE``)."""
    out = set()
    for key in run.get("flags") or {}:
        out |= {str(key), str(key).split("_")[0]}
    return out


def aggregate(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One entry per configuration, in first-run order::

        {"config": "adapter.adapter_reduction_factor=4", "overrides": {..without seed}, "label": "adapter_reduction_factor=4",
         "runs": [names], "seeds": ["0", "1"], "finished": 2, "train_languages": [..], "degenerate": [flagged runs],
         "metrics": {eval_set: {metric: {"mean", "sd", "n", "flagged"}}}, "validation": {"metric", "mode", "mean", "sd", "n"} | None}

    ``flagged`` counts the runs whose diagnostics flagged that evaluation set (for the averages: any set).
    """
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for run in summary["runs"]:
        groups.setdefault(config_id(run["overrides"]), []).append(run)
    labels = config_labels({cid: runs[0]["overrides"] for cid, runs in groups.items()})
    configs = []
    for cid, runs in groups.items():
        finished = [r for r in runs if r["metrics"]]
        sets = list(dict.fromkeys(s for r in finished for s in r["metrics"]))
        sets = [s for s in sets if s not in AVERAGES] + [a for a in AVERAGES if a in sets]
        metrics: dict[str, dict[str, Any]] = {}
        for name in sets:
            flagged = sum(1 for r in finished if (_flagged_sets(r) if name in AVERAGES else
                                                  {name} & _flagged_sets(r)))  # fmt: skip
            for metric in dict.fromkeys(m for r in finished for m in r["metrics"].get(name, {})):
                values = [r["metrics"][name][metric] for r in finished if metric in r["metrics"].get(name, {})]
                cell = stats(values)
                if cell is not None:
                    metrics.setdefault(name, {})[metric] = {**cell, "flagged": flagged}
        configs.append({
            "config": cid,
            "overrides": {k: v for k, v in runs[0]["overrides"].items() if k != SEED},
            "label": labels[cid],
            "runs": [r["run"] for r in runs],
            "seeds": [r["overrides"].get(SEED) for r in runs],
            "finished": len(finished),
            "train_languages": list(finished[0].get("train_languages") or []) if finished else [],
            "degenerate": [r["run"] for r in finished if r.get("flags")],
            "metrics": metrics,
            "validation": _validation(finished),
        })  # fmt: skip
    return configs


def _validation(finished: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    scores = [r.get("validation") for r in finished]
    if not scores or any(s is None for s in scores) or len({(s["metric"], s["mode"]) for s in scores}) > 1:
        return None
    cell = stats(s["value"] for s in scores)
    return None if cell is None else {"metric": scores[0]["metric"], "mode": scores[0]["mode"], **cell}


def config_labels(overrides: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """A short label per configuration from the overrides (seed aside) that vary between configurations:
    ``adapter_reduction_factor=4``; ``all runs`` when only the seed varies."""
    keys = list(dict.fromkeys(k for o in overrides.values() for k in o if k != SEED))
    varying = [k for k in keys if len({o.get(k) for o in overrides.values()}) > 1]
    return {cid: ", ".join(f"{k.rsplit('.', 1)[-1]}={o[k]}" for k in varying if k in o) or "all runs"
            for cid, o in overrides.items()}


def has_repeats(configs: Sequence[Mapping[str, Any]]) -> bool:
    """Whether some configuration has more than one run (a seed axis): only then is a mean ± sd table shown."""
    return any(len(c["runs"]) > 1 for c in configs)


def best_config(configs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The configuration with the best mean validation score and whether its lead is larger than the spread.

    ``{"best", "runner_up", "lead", "spread", "separated", "how"}``; ``best`` None (and ``how`` says why) when
    some finished configuration has no validation score or they were chosen on different metrics.
    ``spread``: the larger validation sd of best and runner-up (None when either has n = 1);
    ``separated``: ``lead > spread`` (False when the spread is unknown; None without a runner-up).
    """
    candidates = [c for c in configs if c["finished"]]
    none = {"best": None, "runner_up": None, "lead": None, "spread": None, "separated": None}
    if not candidates or any(c["validation"] is None for c in candidates):
        return {**none, "how": "no validation score (results.json monitor / best_score) for every finished run"}
    if len({(c["validation"]["metric"], c["validation"]["mode"]) for c in candidates}) > 1:
        return {**none, "how": "the runs chose checkpoints on different validation metrics"}
    metric, mode = candidates[0]["validation"]["metric"], candidates[0]["validation"]["mode"]
    ranked = sorted(candidates, key=lambda c: c["validation"]["mean"], reverse=(mode == "max"))
    best = ranked[0]
    how = f"best mean validation {metric} ({mode}) = {format_cell(best['validation'])}"
    if len(ranked) == 1:
        return {**none, "best": best, "how": how}
    runner = ranked[1]
    lead = abs(best["validation"]["mean"] - runner["validation"]["mean"])
    sds = (best["validation"]["sd"], runner["validation"]["sd"])
    spread = None if None in sds else max(sds)
    separated = spread is not None and lead > spread
    if spread is None:
        verdict = "NOT separated: the spread is unknown with one run (n=1); sweep seed=0,1,2,..."
    elif separated:
        verdict = f"separated: lead {NUMBER.format(lead)} > spread (sd) {NUMBER.format(spread)}"
    else:
        verdict = f"NOT separated: lead {NUMBER.format(lead)} <= spread (sd) {NUMBER.format(spread)}"
    how += f"; runner-up {runner['label']} = {format_cell(runner['validation'])}; {verdict}"
    return {"best": best, "runner_up": runner, "lead": lead, "spread": spread, "separated": separated, "how": how}


def format_cell(cell: Mapping[str, Any] | None, with_n: bool = True) -> str:
    """``54.30 ± 5.12 (n=6)``; ``54.30 ± n/a (n=1)``; ``-`` for no value."""
    if cell is None:
        return "-"
    sd = NO_SD if cell["sd"] is None else NUMBER.format(cell["sd"])
    return f"{NUMBER.format(cell['mean'])} ± {sd}" + (f" (n={cell['n']})" if with_n else "")


def format_configs(configs: Sequence[Mapping[str, Any]], metric: str, chance: float | None = None) -> str:
    """The mean ± sd table: one row per evaluation set, ``zs_avg``, ``avg`` and the validation score; per
    configuration its ``mean ± sd``, ``n`` and how many runs were flagged degenerate on that set."""
    shown = [c for c in configs if c["finished"]]
    if not shown:
        return f"metric: {metric}: no configuration has a finished run"
    sets = list(dict.fromkeys(s for c in shown for s in c["metrics"] if s not in AVERAGES))
    sets += [a for a in AVERAGES if any(a in c["metrics"] for c in shown)]
    head = [f"metric: {metric}" + (f" (chance {NUMBER.format(chance)})" if chance is not None else "")
            + f"; mean ± sd over runs that differ only in seed (sample sd; sd {NO_SD} where n=1)"]
    # columns are named A, B, ... when there are several configurations: their labels can be long
    names = {c["config"]: column_name(i) if len(configs) > 1 else "mean ± sd" for i, c in enumerate(configs)}
    for c in configs:
        seeds = ",".join(str(s) for s in c["seeds"] if s is not None) or "as configured"
        degenerate = f"DEGENERATE {len(c['degenerate'])} of {c['finished']}" if c["degenerate"] else "none degenerate"
        prefix = f"{names[c['config']]} = " if len(configs) > 1 else ""
        head.append(f"{prefix}{c['label']}: seeds {seeds}; {c['finished']} of {len(c['runs'])} finished; {degenerate}")
    best = best_config(configs)
    head.append(f"best configuration: {best['best']['label']} ({best['how']})" if best["best"]
                else f"best configuration: not chosen ({best['how']})")
    header = ["eval set"]
    for c in shown:
        header += [names[c["config"]], "n", "flagged"]
    rows = [header]
    for name in sets:
        row = [name]
        for c in shown:
            cell = c["metrics"].get(name, {}).get(metric)
            row += [format_cell(cell, with_n=False), str(cell["n"]) if cell else "0",
                    str(cell["flagged"]) if cell else "-"]
        rows.append(row)
    validation = {c["validation"]["metric"] for c in shown if c["validation"]}
    if validation:
        row = [f"val ({', '.join(sorted(validation))})"]
        for c in shown:
            row += [format_cell(c["validation"], with_n=False), str(c["validation"]["n"]) if c["validation"] else "0",
                    "-"]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in
                       enumerate(zip(r, widths, strict=True))) for r in rows]
    return "\n".join([*head, lines[0], "-" * len(lines[0]), *lines[1:]])


def column_name(i: int) -> str:
    """A, B, ..., Z, AA, AB, ...: the column of the i-th configuration."""
    return (column_name(i // 26 - 1) if i >= 26 else "") + chr(ord("A") + i % 26)


def config_rows(configs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Flat rows (one per configuration) for ``sweep_configs.csv`` and data frames: config, runs, seeds,
    finished, degenerate, ``val/{mean,sd,n}``, ``<set>/<metric>/{mean,sd,n}``; an undefined sd is empty."""
    rows = []
    for c in configs:
        row: dict[str, Any] = {"config": c["config"], "label": c["label"], "runs": len(c["runs"]),
                               "seeds": " ".join(str(s) for s in c["seeds"] if s is not None),
                               "finished": c["finished"], "degenerate": len(c["degenerate"])}
        for part in ("mean", "sd", "n"):
            value = (c["validation"] or {}).get(part)
            row[f"val/{part}"] = "" if value is None else value
        for name, metrics in c["metrics"].items():
            for metric, cell in metrics.items():
                for part in ("mean", "sd", "n"):
                    row[f"{name}/{metric}/{part}"] = "" if cell[part] is None else cell[part]
        rows.append(row)
    return rows
