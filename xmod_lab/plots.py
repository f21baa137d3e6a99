"""The plots of a sweep (``xmod-report``, the notebook) and of ``make paper``, drawn one way everywhere.

What a reader can rely on in every plot here:

- one colour, marker and line style per adapter mode across all plots (``MODE_STYLE``): shared is solid blue squares,
  modular dashed orange circles, whatever order the runs come in; other configurations get colours no mode uses;
- no hidden points: lines that share x values are drawn with a small horizontal offset and distinct markers;
- titles say what is plotted (the metric, per evaluation set or against K; "zero-shot" only when some
  evaluation set is one);
- runs that differ only in seed are one configuration (``xmod_lab.seeds``): its mean, with the sample sd as
  error bar (none where n = 1);
- degenerate runs (``xmod_lab.diagnostics`` flags) and the best configuration on validation are marked:
  hatched bars / red crosses / red-framed cells tagged ``gid="degenerate"``; black-edged bars / a star /
  the tick label tagged ``gid="best"``; legends and tick labels say so in words.

matplotlib is imported when a plot is drawn, so reading sweeps never pays for it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from xmod_lab import report, seeds
from xmod_lab.results import AVG, NUMBER, ZERO_SHOT_AVG

MODE_KEY = "adapter.adapter_mode"
# matplotlib's tab:blue and tab:orange, as hex: the form an artist reports its colour in; the dashes let a
# solid line show through where the two modes' lines coincide
MODE_STYLE = {"shared": {"color": "#1f77b4", "marker": "s", "linestyle": "-"},
              "modular": {"color": "#ff7f0e", "marker": "o", "linestyle": "--"}}
# colours of configurations that are not an adapter mode: never a mode's colour, never the chance line's red
OTHER_COLORS = ("tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray")
OTHER_MARKERS = ("D", "^", "v", "P", "X", "<", ">")
DEGENERATE_COLOR = "red"
DEGENERATE, BEST = "degenerate", "best"  # gids of the marks


def mode_of(overrides: Mapping[str, Any]) -> str | None:
    mode = overrides.get(MODE_KEY)
    return str(mode) if mode is not None and str(mode) in MODE_STYLE else None


def styles(configs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """``{config: {"color", "marker", "linestyle"}}``: an adapter mode's own style (shades of its colour when
    several configurations share a mode), else a colour from ``OTHER_COLORS``."""
    import matplotlib.colors as mcolors

    by_mode: dict[str, list[str]] = {}
    for c in configs:
        mode = mode_of(c["overrides"])
        if mode:
            by_mode.setdefault(mode, []).append(c["config"])
    out, other = {}, 0
    for c in configs:
        mode = mode_of(c["overrides"])
        if mode:
            same = by_mode[mode]
            base = mcolors.to_rgb(MODE_STYLE[mode]["color"])
            lighten = 0.55 * same.index(c["config"]) / max(1, len(same) - 1) if len(same) > 1 else 0.0
            color = mcolors.to_hex([x + (1 - x) * lighten for x in base])
            out[c["config"]] = {**MODE_STYLE[mode], "color": color}
        else:
            out[c["config"]] = {"color": OTHER_COLORS[other % len(OTHER_COLORS)],
                                "marker": OTHER_MARKERS[other % len(OTHER_MARKERS)], "linestyle": "-"}
            other += 1
    return out


def offsets(n: int, width: float = 0.1) -> list[float]:
    """Symmetric offsets for ``n`` series (0 for one), so points at one x never cover each other."""
    return [width * (i - (n - 1) / 2) for i in range(n)]


def _configs(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    configs = summary.get("configs") or seeds.aggregate(summary)
    return [c for c in configs if c["finished"]]


def _legend_label(config: Mapping[str, Any], best: Mapping[str, Any] | None) -> str:
    label = config["label"]
    if len(config["runs"]) > 1:
        label += f" (n={config['finished']})"
    if best is not None and best["config"] == config["config"]:
        label += " - best on validation"
    if config["degenerate"]:
        label += f" - DEGENERATE {len(config['degenerate'])} of {config['finished']}"
    return label


def _cell(config: Mapping[str, Any], name: str, metric: str) -> dict[str, Any] | None:
    return config["metrics"].get(name, {}).get(metric)


def _save(fig: Any, path: str | os.PathLike | None) -> None:
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120, bbox_inches="tight")  # the legend outside the axes included


def _what(summary: Mapping[str, Any]) -> str:
    return ", mean ± sd over seeds" if seeds.has_repeats(summary.get("configs") or seeds.aggregate(summary)) else ""


def plot_heatmap(summary: Mapping[str, Any], metric: str, path: str | os.PathLike | None = None) -> Any:
    """Heatmap of ``metric``: evaluation sets (rows; ``zs_avg`` and ``avg`` last, set apart) x configurations
    (the mean over seeds, ``±sd`` under it); cells some run was flagged degenerate on framed in red and
    marked ``!``; the best configuration's tick label says so."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    configs = _configs(summary)
    languages = report.ordered_languages(summary)
    best = seeds.best_config(summary.get("configs") or seeds.aggregate(summary))["best"]
    values = [[(_cell(c, lang, metric) or {}).get("mean", float("nan")) for c in configs] for lang in languages]
    fig, ax = plt.subplots(figsize=(2.4 + 1.4 * len(configs), 1.2 + 0.5 * len(languages)))
    image = ax.imshow(values, aspect="auto", cmap="viridis")
    ticks = [c["label"] + ("\n(best on validation)" if best and best["config"] == c["config"] else "") for c in configs]
    ax.set_xticks(range(len(configs)), ticks, rotation=30, ha="right")
    for j, c in enumerate(configs):
        if best and best["config"] == c["config"]:
            ax.get_xticklabels()[j].set_fontweight("bold")
            ax.get_xticklabels()[j].set_gid(BEST)
    ax.set_yticks(range(len(languages)), languages)
    for i, lang in enumerate(languages):
        for j, c in enumerate(configs):
            cell = _cell(c, lang, metric)
            if cell is None:
                continue
            text = NUMBER.format(cell["mean"]) + ("" if cell["sd"] is None else f"\n±{NUMBER.format(cell['sd'])}")
            if cell["flagged"]:
                text += " !"
                ax.add_patch(Rectangle((j - 0.48, i - 0.48), 0.96, 0.96, fill=False, edgecolor=DEGENERATE_COLOR,
                                       linewidth=2, gid=DEGENERATE))
            color = "black" if image.norm(cell["mean"]) > 0.6 else "white"  # readable on light cells too
            ax.text(j, i, text, ha="center", va="center", color=color, fontsize=7)
    averages = sum(lang in (ZERO_SHOT_AVG, AVG) for lang in languages)
    ax.axhline(len(languages) - averages - 0.5, color="white", linewidth=2)  # sets the averages apart
    chance = report.chance_level(summary, metric)
    fig.colorbar(image, ax=ax, label=metric + (f" (chance {NUMBER.format(chance)})" if chance is not None else ""))
    flagged = " (red frame, !: a run flagged degenerate)" if any(c["degenerate"] for c in configs) else ""
    ax.set_title(f"{metric} per evaluation set and configuration{_what(summary)}{flagged}", fontsize=9)
    _save(fig, path)
    return fig


def plot_zero_shot(summary: Mapping[str, Any], metric: str, path: str | os.PathLike | None = None) -> Any:
    """Grouped bars of ``metric`` per evaluation set, one bar per configuration (mean over seeds, sd as error
    bar): training languages first, then the others, then ``zs_avg`` and ``avg``; a dotted line at chance;
    degenerate configurations hatched, the best one on validation edged in black; the legend outside the axes,
    so it never covers a bar."""
    import matplotlib.pyplot as plt

    configs = _configs(summary)
    languages = report.ordered_languages(summary)
    trained = report.train_languages(summary)
    averages = [lang for lang in (ZERO_SHOT_AVG, AVG) if lang in languages]
    order = [lang for lang in languages if lang in trained] + [
        lang for lang in languages if lang not in trained and lang not in averages
    ] + averages
    best = seeds.best_config(summary.get("configs") or seeds.aggregate(summary))["best"]
    style = styles(configs)
    width = 0.8 / max(1, len(configs))
    fig, ax = plt.subplots(figsize=(2.0 + 0.9 * len(order) * max(1, len(configs)) ** 0.5, 4.0))
    for j, c in enumerate(configs):
        xs = [i - 0.4 + width * (j + 0.5) for i in range(len(order))]
        cells = [_cell(c, lang, metric) for lang in order]
        heights = [cell["mean"] if cell else float("nan") for cell in cells]
        errors = [cell["sd"] if cell and cell["sd"] is not None else float("nan") for cell in cells]
        is_best = best is not None and best["config"] == c["config"]
        bars = ax.bar(xs, heights, width, color=style[c["config"]]["color"], label=_legend_label(c, best),
                      yerr=errors if any(e == e for e in errors) else None, capsize=3,
                      hatch="//" if c["degenerate"] else None, edgecolor="black" if is_best else None,
                      linewidth=1.8 if is_best else 0.0)
        for bar in bars:
            bar.set_gid(" ".join(filter(None, [DEGENERATE if c["degenerate"] else "", BEST if is_best else ""])) or None)
    names = {ZERO_SHOT_AVG: "zero-shot\navg", AVG: "avg\n(all)"}
    ax.set_xticks(range(len(order)), [f"{lang}\n(train)" if lang in trained else names.get(lang, lang) for lang in order])
    if trained:
        ax.axvline(len([lang for lang in order if lang in trained]) - 0.5, color="grey", linestyle="--")
    if averages:
        ax.axvline(len(order) - len(averages) - 0.5, color="black", linewidth=1)
    chance = report.chance_level(summary, metric)
    if chance is not None:
        ax.axhline(chance, color="red", linestyle=":", linewidth=1.2, label=f"chance ({NUMBER.format(chance)})")
    ax.set_ylabel(metric)
    zero_shot = [lang for lang in order if lang not in trained and lang not in averages]
    title = f"{metric} per evaluation set"
    if trained and zero_shot:
        title += f": trained on {', '.join(trained)}, zero-shot on the others"
    elif trained:
        title += f" (all trained on: {', '.join(trained)})"
    ax.set_title(title + _what(summary), fontsize=9)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    _save(fig, path)
    return fig


def plot_against_languages(summary: Mapping[str, Any], metric: str, path: str | os.PathLike | None = None) -> Any:
    """``metric`` on the evaluation sets every run has against the number of training languages, one line per
    setting of the other varying overrides (e.g. ``adapter.adapter_mode``; mean over seeds, sd as error bar):
    the curse-of-multilinguality figure. Degenerate points get a red cross, the best configuration a star."""
    import matplotlib.pyplot as plt

    configs = [c for c in _configs(summary) if c["train_languages"]]
    sets = [lang for lang in report.ordered_languages(summary)
            if lang not in (AVG, ZERO_SHOT_AVG) and all(lang in c["metrics"] for c in configs)]
    best = seeds.best_config(summary.get("configs") or seeds.aggregate(summary))["best"]
    # a line: the configurations that differ only in their languages
    lines: dict[str, list[dict[str, Any]]] = {}
    for c in configs:
        key = seeds.config_id({k: v for k, v in c["overrides"].items() if not k.startswith("languages")})
        lines.setdefault(key, []).append(c)
    labels = seeds.config_labels({key: {k: v for k, v in cs[0]["overrides"].items() if not k.startswith("languages")}
                                  for key, cs in lines.items()})
    line_style = styles([{"config": key, "overrides": cs[0]["overrides"]} for key, cs in lines.items()])
    panels = max(1, len(sets[:4]))
    fig, axes = plt.subplots(1, panels, figsize=(1.0 + 4.0 * panels, 3.6), squeeze=False)
    for ax, lang in zip(axes[0], sets[:4], strict=False):
        for (key, cs), shift in zip(lines.items(), offsets(len(lines)), strict=True):
            points = sorted((len(c["train_languages"]), _cell(c, lang, metric), c) for c in cs
                            if _cell(c, lang, metric) is not None)  # fmt: skip
            xs = [x * 2 ** shift for x, _, _ in points]  # log axis: a multiplicative offset
            ys = [cell["mean"] for _, cell, _ in points]
            errors = [cell["sd"] if cell["sd"] is not None else float("nan") for _, cell, _ in points]
            ax.errorbar(xs, ys, yerr=errors if any(e == e for e in errors) else None, capsize=3,
                        label=labels[key], **line_style[key])
            for x, (_, cell, c) in zip(xs, points, strict=True):
                if cell["flagged"]:
                    ax.plot([x], [cell["mean"]], "x", color=DEGENERATE_COLOR, markersize=10, mew=2, gid=DEGENERATE,
                            label="degenerate run(s)")
                if best is not None and best["config"] == c["config"]:
                    ax.plot([x], [cell["mean"]], "*", color="black", markersize=12, gid=BEST,
                            label="best on validation", zorder=5)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("training languages")
        ax.set_ylabel(f"{metric} ({lang})")
        ax.set_title(f"{metric} on {lang}", fontsize=9)
    unique: dict[str, Any] = {}  # one legend entry per line and mark, from every panel
    for ax in axes[0]:
        handles, names = ax.get_legend_handles_labels()
        unique.update({name: handle for name, handle in zip(names, handles, strict=True) if name not in unique})
    axes[0][-1].legend(unique.values(), unique.keys(), fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                       borderaxespad=0.0)
    fig.suptitle(f"{metric} against the number of training languages{_what(summary)}")
    _save(fig, path)
    return fig
