"""``xmod-report [SWEEP_DIR]``: print a sweep's tables and write its plots (``xmod_lab.report``, ``xmod_lab.plots``).

Its own module because it uses both: the plots read sweeps through ``report``, so ``report`` cannot import them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xmod_lab import plots, seeds
from xmod_lab.report import (
    collect_sweep,
    find_sweep,
    format_configs,
    format_table,
    primary_metric,
    write_summary_files,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="xmod-report",
        description="Print a sweep's per-language results table (zero-shot and overall averages, chance, "
        "the best run on validation) and, when runs differ only in their seed, the mean ± sd table per "
        "configuration (the best configuration chosen on the mean validation score); write its plots as PNG. "
        "The same in a notebook: notebooks/sweep_analysis.ipynb. Sweeps come from `xmod-train -m ...` "
        "(`xmod-train -m seed=0,1,2 ...` for a seed axis).",
    )
    parser.add_argument(
        "sweep_dir", nargs="?",
        help="a sweep directory (outputs/<name>/multiruns/<time>), or a folder holding outputs/ "
        "(default: the newest sweep under $XMOD_ROOT, else under the working directory or its parents)",
    )
    parser.add_argument("--metric", help="metric to show (default: the task's headline metric, e.g. acc)")
    parser.add_argument("--out", help="folder for the PNGs and the summary (default: the sweep directory)")
    args = parser.parse_args(argv)
    try:
        sweep_dir = find_sweep(args.sweep_dir)
        summary = collect_sweep(sweep_dir)
        metric = args.metric or primary_metric(summary)
        known = {m for r in summary["runs"] for row in r["metrics"].values() for m in row}
        if metric not in known:
            raise ValueError(f"no run reports metric {metric!r}; known metrics: {', '.join(sorted(known))}")
    except (FileNotFoundError, ValueError) as e:
        print(f"xmod-report: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out or sweep_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_summary_files(summary, out)
    print(f"sweep: {sweep_dir}")
    print(format_table(summary, metric))
    if seeds.has_repeats(summary["configs"]):
        print()
        print(format_configs(summary, metric))
    import matplotlib

    matplotlib.use("Agg")  # a CLI never needs a window
    import matplotlib.pyplot as plt

    drawn = [("heatmap", plots.plot_heatmap), ("zero_shot", plots.plot_zero_shot)]
    if len({len(r["train_languages"]) for r in summary["runs"] if r["metrics"]}) > 1:  # e.g. K = 1, 2, 4, ...
        drawn.append(("by_languages", plots.plot_against_languages))
    for name, plot in drawn:
        path = out / f"{name}_{metric}.png"
        plt.close(plot(summary, metric, path))
        print(f"wrote {path}")
    if summary["failed"]:
        print(f"runs that did not finish: {', '.join(summary['failed'])}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
