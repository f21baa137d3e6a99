"""The results vocabulary: how a metric is named, read back, averaged and printed.

A metric is keyed by stage, evaluation set and name: ``test/en-ar/f1``. An evaluation set is what a dataset
calls one of its test sets (``de`` of XNLI, ``en-ar`` of MLQA, ``zh`` of UD-POS); the adapter that scored
it is recorded beside it (``adapters``), never used as the key, so two sets scored with one adapter stay two
rows. Two averages are added over evaluation sets: ``avg`` (all of them) and ``zs_avg`` (the zero-shot ones:
sets that are not training languages). Tasks, run bookkeeping, trackers and reports all read and write
through this module.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

AVG, ZERO_SHOT_AVG = "avg", "zs_avg"
NUMBER = "{:.2f}"  # how reports print a score
AVERAGES = (ZERO_SHOT_AVG, AVG)
STAGES = ("val", "test")

_KEY = re.compile(r"^(?P<stage>val|test)/(?P<eval_set>[^/]+)/(?P<metric>[^/]+)$")

Table = dict[str, dict[str, float]]


def metric_key(stage: str, eval_set: str, metric: str) -> str:
    return f"{stage}/{eval_set}/{metric}"


def parse_metric_key(key: str) -> tuple[str, str, str] | None:
    """``"test/en-ar/f1"`` -> ``("test", "en-ar", "f1")``; None for anything else (``train/loss``)."""
    match = _KEY.match(str(key))
    return (match["stage"], match["eval_set"], match["metric"]) if match else None


def check_eval_set_names(names: Sequence[str], where: str = "languages.eval") -> None:
    """Evaluation set names must be unique, free of ``/`` (metric keys) and not an average's name."""
    seen: set[str] = set()
    for name in names:
        if "/" in name or not name:
            raise ValueError(f"{where}: evaluation set {name!r} cannot be a metric key part (empty or with '/'); "
                             "use the dataset's code for it (e.g. en-ar)")
        if name in AVERAGES:
            raise ValueError(f"{where}: {name!r} is the name of an average over evaluation sets; rename the set")
        if name in seen:
            raise ValueError(f"{where}: evaluation set {name!r} is listed twice; each set is scored once")
        seen.add(name)


def _mean(rows: Iterable[Mapping[str, float]]) -> dict[str, float]:
    rows = list(rows)
    names = list(dict.fromkeys(m for row in rows for m in row))
    out = {}
    for m in names:
        values = [float(row[m]) for row in rows if m in row and not math.isnan(float(row[m]))]
        if values:
            out[m] = sum(values) / len(values)
    return out


def with_averages(scores: Mapping[str, Mapping[str, float]], train_sets: Sequence[str] = ()) -> Table:
    """``scores`` (one row per evaluation set) followed by ``zs_avg`` (sets not in ``train_sets``; only when
    training languages are given and some set is zero-shot) and ``avg`` (every set), unweighted means."""
    rows = {name: dict(row) for name, row in scores.items() if name not in AVERAGES}
    out: Table = dict(rows)
    zero_shot = [row for name, row in rows.items() if name not in set(train_sets)]
    if train_sets and zero_shot:
        out[ZERO_SHOT_AVG] = _mean(zero_shot)
    if rows:
        out[AVG] = _mean(rows.values())
    return out


def table_from_metrics(metrics: Mapping[str, Any], stage: str) -> Table:
    """``{'test/de/acc': 71.2, ...}`` -> ``{'de': {'acc': 71.2}, ..., 'zs_avg': {..}, 'avg': {..}}``: the
    evaluation sets in logged order, averages last, values rounded to 4 decimals."""
    table: Table = {}
    for key, value in metrics.items():
        parsed = parse_metric_key(key)
        if parsed and parsed[0] == stage:
            table.setdefault(parsed[1], {})[parsed[2]] = round(float(value), 4)
    return {**{k: v for k, v in table.items() if k not in AVERAGES}, **{k: table[k] for k in AVERAGES if k in table}}


def format_table(table: Mapping[str, Mapping[str, float]], title: str,
                 adapters: Mapping[str, str] | None = None) -> str:
    """Plain-text table, one row per evaluation set (with the adapter that scored it), averages last."""
    names = list(dict.fromkeys(m for row in table.values() for m in row))
    adapters = adapters or {}
    header = ["eval set", "adapter", *names]
    rows = [[name, adapters.get(name, "" if name in AVERAGES else "?"),
             *(f"{row[m]:.2f}" if m in row else "-" for m in names)] for name, row in table.items()]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(f"{c:<{w}}" if i < 2 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(cells, widths,
                                                                                                 strict=True)))

    head = line(header)
    return "\n".join([title, head, "-" * len(head), *(line(r) for r in rows)])


def csv_rows(table: Mapping[str, Mapping[str, float]], adapters: Mapping[str, str] | None = None) -> list[list[Any]]:
    """The rows of results.csv: a header, then one row per evaluation set and average."""
    names = list(dict.fromkeys(m for row in table.values() for m in row))
    adapters = adapters or {}
    return [["eval_set", "adapter", *names],
            *([name, adapters.get(name, ""), *(row.get(m, "") for m in names)] for name, row in table.items())]


def scores_by_set(metrics: Mapping[str, float], stage: str, metric: str) -> dict[str, float]:
    """``{eval_set: value}`` of one metric in one stage (averages included), in logged order."""
    out = {}
    for key, value in metrics.items():
        parsed = parse_metric_key(key)
        if parsed and parsed[0] == stage and parsed[2] == metric:
            out[parsed[1]] = float(value)
    return out
