"""``make paper``: the X-MOD paper in miniature, on the synthetic languages, on a CPU.

    python -m xmod_lab.paper                                 # the whole study -> outputs/paper/, docs/paper.md
    python -m xmod_lab.paper --ks 1,2 --posthoc-k 2 --doc /tmp/toy.md trainer.max_steps=5   # a toy run

Three Hydra multiruns of xmod-train with the ``paper_*`` presets per mode and training seed (each one a command
a user can rerun by hand), then a summary. Nothing here trains: it launches, waits and reads the runs'
results.json. The presets share one synthetic world (``xmod_lab/conf/world/paper.yaml``: fact tables each
language must store, beside shared ones; ``xmod_lab/data/synthetic_world.py``).

1. The curse of multilinguality (``experiment=paper_mlm``): MLM pre-training on K = 1, 2, 4, 8, 16 synthetic
   languages, ``adapter.adapter_mode=shared`` and ``modular`` (the same per-language capacity), the same number of
   updates per language; held-out MLM loss on the probe language (English, present at every K).
2. Zero-shot transfer (``experiment=paper_nli``): each export fine-tuned on English NLI with embeddings and
   adapters frozen, tested on every pre-trained language; ``zero_shot_acc`` is German's accuracy (the probe
   present at every K >= 2; null at K = 1, where there is no other language).
3. Post-hoc languages (``experiment=paper_posthoc_{modular,shared}``): a new language added to the K = 8
   models, adapters-only MLM for as many updates as each language had in pre-training; its loss, how close it
   comes to the pre-trained languages, and the largest change of an old language's loss against the same
   model before (the same command, ``train=false``).

Every point runs ``--seeds`` training seeds (default 3: ``seed=0,1,2``); each figure is the mean with its
sample standard deviation (``<key>_sd``), and ``verdict`` applies the spread (:func:`curse_verdict`).
Writes ``<out>/summary.json`` (``curse``, ``posthoc``, ``wall_seconds``, ``seeds``, ``verdict``, the settings),
the document ``--doc`` (default docs/paper.md, generated from summary.json alone; a copy as ``<out>/README.md``)
with its plots in ``img/`` beside it, ``<out>/*.png``, and keeps every run under ``<out>/{mlm,nli,posthoc}/``
(``xmod-report`` reads each). Degenerate runs are flagged (``xmod_lab.diagnostics``).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from xmod_lab import plots, report
from xmod_lab.data.synthetic import SYNTHETIC_LANGUAGES
from xmod_lab.data.synthetic_world import WORLD_DEFAULTS
from xmod_lab.results import AVERAGES, parse_metric_key

MODES = ("shared", "modular")
KS = (1, 2, 4, 8, 16)
POSTHOC_K = 8
PROBE, ZERO_SHOT_PROBE, NEW_LANGUAGE = "en", "de", "rm"  # evaluation sets (dataset codes)
SEEDS = 3  # training seeds per point (model initialisation and data order; the generated world is data.seed's)
SUBDIR = "${adapter.adapter_mode}_${hydra.runtime.choices.languages}_seed${seed}"


def _launch(args: Sequence[str], log_file: Path) -> subprocess.Popen:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    out = log_file.open("w")
    return subprocess.Popen([sys.executable, "-m", "xmod_lab.train", *args], stdout=out, stderr=subprocess.STDOUT)


def run_parallel(commands: Sequence[tuple[list[str], Path]], jobs: int) -> None:
    """Run xmod-train commands, ``jobs`` at a time; a failure stops the study, naming its log. The
    commands still running are stopped whenever this returns early (a failure, Ctrl-C, a kill)."""
    pending, running = list(commands), []
    try:
        while pending or running:
            while pending and len(running) < jobs:
                args, log_file = pending.pop(0)
                print(f"xmod-train {' '.join(args)}   (log: {log_file})", flush=True)
                running.append((_launch(args, log_file), log_file))
            time.sleep(1.0)
            for proc, log_file in list(running):
                if proc.poll() is not None:
                    running.remove((proc, log_file))
                    if proc.returncode != 0:
                        tail = log_file.read_text(errors="replace")[-3000:]
                        raise RuntimeError(f"xmod-train failed (exit {proc.returncode}); log {log_file}:\n{tail}")
    finally:
        for proc, _ in running:
            proc.kill()
            proc.wait()


def run_name(mode: str, k: int, seed: int) -> str:
    return f"{mode}_synthetic{k}_seed{seed}"


def missing(step_dir: Path, mode: str, ks: Sequence[int], seed: int) -> list[int]:
    """The K whose run of ``mode`` and ``seed`` has not finished yet: a stopped study resumes where it was."""
    return [k for k in ks if not (step_dir / run_name(mode, k, seed) / "run_complete").is_file()]


def _results(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "results.json"
    if not (run_dir / "run_complete").is_file() or not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no finished run (run_complete / results.json missing)")
    return json.loads(path.read_text())


def test_metrics(run_dir: Path) -> dict[str, float]:
    """The run's test metrics at full precision (``test/<lang>/<metric>``) from its CSV log; results.json
    rounds to 4 decimals, too coarse to call a change exactly zero."""
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    last: dict[str, float] = {}
    for row in rows:
        last.update({k: float(v) for k, v in row.items() if k.startswith("test/") and v not in ("", None)})
    if not last:
        raise FileNotFoundError(f"{run_dir}/csv/metrics.csv has no test metrics")
    return last


def mean_sd(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof 1) of the values that exist; sd None below 2 values."""
    present = [float(v) for v in values if v is not None]
    if not present:
        return None, None
    return statistics.fmean(present), (statistics.stdev(present) if len(present) >= 2 else None)


def _aggregate(per_seed: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in keys:
        out[key], out[f"{key}_sd"] = mean_sd([r[key] for r in per_seed])
    return out


CURSE_METRICS = ("probe_mlm_loss", "mlm_loss_avg", "zero_shot_acc", "zero_shot_avg_acc", "en_acc", "updates")


def curse_rows(out: Path, ks: Sequence[int], seeds: Sequence[int]) -> list[dict[str, Any]]:
    """One row per (mode, K): the mean over seeds of each metric, its ``_sd``, and the seeds' own rows."""
    rows = []
    for mode in MODES:
        for k in ks:
            per_seed = []
            for seed in seeds:
                name = run_name(mode, k, seed)
                mlm = _results(out / "mlm" / name)
                nli = _results(out / "nli" / name)
                table = nli["test"]
                others = [lang for lang in table if lang not in (PROBE, *AVERAGES)]
                zero_shot = table[ZERO_SHOT_PROBE]["acc"] if ZERO_SHOT_PROBE in table else None
                per_seed.append({
                    "seed": seed,
                    "probe_mlm_loss": mlm["test"][PROBE]["loss"],
                    "mlm_loss_avg": mlm["test"]["avg"]["loss"],
                    "zero_shot_acc": zero_shot,
                    "zero_shot_avg_acc": (sum(table[lang]["acc"] for lang in others) / len(others)) if others else None,
                    "en_acc": table[PROBE]["acc"],
                    "updates": mlm.get("global_step"),
                    "flags": (nli.get("diagnostics") or {}).get("flags", {}),
                })  # fmt: skip
            flags: dict[str, list[str]] = {}
            for r in per_seed:
                for lang, found in r["flags"].items():
                    flags.setdefault(lang, []).extend(f"seed {r['seed']}: {f}" for f in found)
            rows.append({
                "mode": mode,
                "languages": k,
                **_aggregate(per_seed, CURSE_METRICS),
                "zero_shot_language": ZERO_SHOT_PROBE if per_seed[0]["zero_shot_acc"] is not None else None,
                "flags": flags,
                "flagged_seeds": sum(1 for r in per_seed if r["flags"]),
                "seeds": list(seeds),
                "per_seed": per_seed,
            })  # fmt: skip
    return rows


POSTHOC_METRICS = ("new_language_mlm_loss", "new_language_mlm_loss_before", "old_languages_mlm_loss",
                   "new_minus_old_mlm_loss", "old_languages_max_loss_change")  # fmt: skip


def posthoc_rows(out: Path, k: int, seeds: Sequence[int]) -> list[dict[str, Any]]:
    """Per mode: the new language's loss before and after, how close it comes to the pre-trained languages
    (its loss minus their mean loss, after), and how far any old language's loss moved (the largest over
    seeds: modular must be exactly 0 in every seed)."""
    rows = []
    for mode in MODES:
        per_seed = []
        for seed in seeds:
            after = test_metrics(out / "posthoc" / f"{mode}_k{k}_seed{seed}_trainTrue")
            before = test_metrics(out / "posthoc" / f"{mode}_k{k}_seed{seed}_trainFalse")
            old = sorted(
                parsed[1] for parsed in map(parse_metric_key, after)
                if parsed and parsed[2] == "loss" and parsed[1] not in (NEW_LANGUAGE, *AVERAGES)
            )
            changes = {lang: after[f"test/{lang}/loss"] - before[f"test/{lang}/loss"] for lang in old}
            new = after[f"test/{NEW_LANGUAGE}/loss"]
            old_loss = statistics.fmean(before[f"test/{lang}/loss"] for lang in old)  # as pre-trained
            per_seed.append({
                "seed": seed,
                "new_language_mlm_loss": new,
                "new_language_mlm_loss_before": before[f"test/{NEW_LANGUAGE}/loss"],
                "old_languages_mlm_loss": old_loss,
                "new_minus_old_mlm_loss": new - old_loss,
                "old_languages_max_loss_change": max(abs(v) for v in changes.values()),
                "old_languages_loss_change": changes,
            })  # fmt: skip
        row = {"mode": mode, **_aggregate(per_seed, POSTHOC_METRICS)}
        row["old_languages_max_loss_change"] = max(r["old_languages_max_loss_change"] for r in per_seed)
        row["old_languages_loss_change"] = {
            lang: mean_sd([r["old_languages_loss_change"][lang] for r in per_seed])[0]
            for lang in per_seed[0]["old_languages_loss_change"]
        }
        rows.append({**row, "seeds": list(seeds), "per_seed": per_seed})
    return rows


def _combined(*sds: float | None) -> float | None:
    """The standard deviation of a sum or difference of independent means' estimates: sqrt of the summed
    variances (None when a term has none: fewer than 2 seeds)."""
    return None if any(sd is None for sd in sds) else math.sqrt(sum(sd * sd for sd in sds))  # type: ignore[operator]


def curse_verdict(curse: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What the figures say about the claim, with their spread. The curse shows when (1) the shared model's
    probe loss at the largest K exceeds its value at the smallest K (K = 1) by more than twice the combined
    sd of the two means, (2) the modular model's does not, and (3) shared minus modular at the largest K
    exceeds twice its combined sd. Fewer than 2 seeds (no spread) or one K: it does not show."""
    by = {(r["mode"], r["languages"]): r for r in curse}
    ks = sorted({r["languages"] for r in curse})
    small, large = ks[0], ks[-1]
    change, spread, rises = {}, {}, {}
    for mode in MODES:
        lo, hi = by[mode, small], by[mode, large]
        change[mode] = hi["probe_mlm_loss"] - lo["probe_mlm_loss"]
        spread[mode] = _combined(hi["probe_mlm_loss_sd"], lo["probe_mlm_loss_sd"])
        rises[mode] = spread[mode] is not None and large > small and change[mode] > 2 * spread[mode]
    gap = by["shared", large]["probe_mlm_loss"] - by["modular", large]["probe_mlm_loss"]
    gap_spread = _combined(by["shared", large]["probe_mlm_loss_sd"], by["modular", large]["probe_mlm_loss_sd"])
    gap_shows = gap_spread is not None and gap > 2 * gap_spread
    why = None
    if large == small:
        why = "one K only: nothing to compare"
    elif gap_spread is None:
        why = "fewer than 2 seeds: no spread, so no verdict (--seeds 2 or more)"
    return {
        "smallest_k": small,
        "largest_k": large,
        "probe_loss_change_smallest_to_largest_k": change,
        "probe_loss_change_sd": spread,
        "probe_loss_rises": rises,
        "gap_at_largest_k": gap,
        "gap_at_largest_k_sd": gap_spread,
        "gap_shows": gap_shows,
        "curse_shows": bool(rises["shared"] and not rises["modular"] and gap_shows and why is None),
        "no_verdict_because": why,
        "rule": "shared rises from the smallest to the largest K by > 2 combined sd, modular does not, and "
                "shared - modular at the largest K > 2 combined sd (sample sd over seeds, ddof 1; combined: "
                "sqrt of the summed variances)",
    }  # fmt: skip


def posthoc_verdict(posthoc: Sequence[dict[str, Any]]) -> dict[str, Any]:
    by = {r["mode"]: r for r in posthoc}
    return {
        "modular_old_languages_unchanged": by["modular"]["old_languages_max_loss_change"] == 0.0,
        "shared_old_languages_changed": by["shared"]["old_languages_max_loss_change"] > 0.0,
    }


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _pm(row: dict[str, Any], key: str, digits: int = 3) -> str:
    """``mean ± sd`` of a summary field (``mean`` alone with one seed, ``-`` when absent)."""
    mean, sd = row.get(key), row.get(f"{key}_sd")
    if mean is None:
        return "-"
    return _fmt(float(mean), digits) + (f" ± {sd:.{digits}f}" if sd is not None else "")


# the settings the document states, read from the runs' saved (resolved) configs: (label, config key)
SETTING_KEYS = {
    "mlm": (("model", "model.config"), ("adapter reduction factor", "adapter.adapter_reduction_factor"),
            ("data", "data"), ("epochs", "trainer.max_epochs"), ("max steps", "trainer.max_steps"),
            ("learning rate", "optimizer.lr"), ("batch size", "data.batch_size")),
    "nli": (("epochs", "trainer.max_epochs"), ("max steps", "trainer.max_steps"), ("learning rate", "optimizer.lr"),
            ("freeze", "freeze.policy"), ("training pairs per language", "data.n_train")),
    "posthoc": (("epochs", "trainer.max_epochs"), ("max steps", "trainer.max_steps"),
                ("learning rate", "optimizer.lr")),
}  # fmt: skip
_MODEL_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")
_DATA_FIELDS = ("n_corpus", "n_train", "n_eval", "seed", "vocab_size", *WORLD_DEFAULTS)


def check_one_world(out: Path, ks: Sequence[int], seeds: Sequence[int], posthoc_k: int) -> None:
    """Every run of the study generated its data with the same settings. A resumed study reuses finished
    runs; after a change of the world (conf/world/paper.yaml, data.* overrides) they would silently mix two
    worlds in one table."""
    dirs = [out / step / run_name(mode, k, seed) for step in ("mlm", "nli") for mode in MODES for k in ks for seed in seeds]
    dirs += [out / "posthoc" / f"{mode}_k{posthoc_k}_seed{seed}_train{t}" for mode in MODES for seed in seeds
             for t in (True, False)]  # fmt: skip
    first: tuple[Path, dict[str, Any]] | None = None
    for run_dir in dirs:
        data = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml").data)
        assert isinstance(data, dict)
        # a run saved before the world settings existed had the default (off) world
        generation = {f: data.get(f, WORLD_DEFAULTS.get(f)) for f in _DATA_FIELDS}
        if first is None:
            first = (run_dir, generation)
        elif generation != first[1]:
            diff = {f: (first[1][f], generation[f]) for f in _DATA_FIELDS if first[1][f] != generation[f]}
            raise ValueError(
                f"{run_dir} generated its data with other settings than {first[0]} ({diff}: "
                f"{first[0].name}'s, then its): the study mixes two worlds, probably resumed after a change. Use a new "
                f"--out, or delete the runs of the old setting under {out}."
            )


def study_settings(out: Path, ks: Sequence[int], seeds: Sequence[int], posthoc_k: int) -> dict[str, Any]:
    """What each step ran with, from one run's config.yaml per step (every run of a step shares them but
    languages, mode and seed)."""
    runs = {"mlm": out / "mlm" / run_name("modular", ks[-1], seeds[0]),
            "nli": out / "nli" / run_name("modular", ks[-1], seeds[0]),
            "posthoc": out / "posthoc" / f"modular_k{posthoc_k}_seed{seeds[0]}_trainTrue"}  # fmt: skip
    check_one_world(out, ks, seeds, posthoc_k)
    settings: dict[str, Any] = {}
    for step, run_dir in runs.items():
        cfg = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))
        assert isinstance(cfg, dict)
        found: dict[str, Any] = {}
        for label, key in SETTING_KEYS[step]:
            value: Any = cfg
            for part in key.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            if label == "model" and isinstance(value, dict):
                value = {f: value[f] for f in _MODEL_FIELDS if f in value}
            elif label == "data" and isinstance(value, dict):
                value = {f: value[f] for f in _DATA_FIELDS if f in value}
            found[label] = None if (label == "max steps" and value == -1) else value  # -1: epochs decide
        settings[step] = found
    return settings


def _describe(settings: dict[str, Any]) -> str:
    """``label value`` pairs, nested dicts flattened (``data: n_corpus 4000, ...``); unset values left out."""
    parts = []
    for label, value in settings.items():
        if isinstance(value, dict):
            parts.append(f"{label}: " + ", ".join(f"{k} {v}" for k, v in value.items()))
        elif value is not None:
            parts.append(f"{label} {value}")
    return "; ".join(parts)


def document(summary: dict[str, Any]) -> str:
    """docs/paper.md: every figure from ``summary`` (the tables, the verdicts, the settings)."""
    st, verdict = summary["settings"], summary["verdict"]
    runs, seeds = st["runs"], summary["seeds"]
    pm = _pm
    lines = [
        "# The X-MOD paper in miniature (make paper)", "",
        "Generated by the command below from its `summary.json` (`xmod_lab/paper.py`); no figure here is typed by "
        "hand. Rerun it to regenerate this page.", "",
        f"    {summary['command']}", "",
        f"Written {summary['date']}, wall time {summary['wall_seconds']:.0f} s"
        + (f" (resumed: {summary['runs_reused']} runs of an earlier invocation reused, not timed)"
           if summary["runs_reused"] else "")
        + f"; K = {', '.join(map(str, st['ks']))}; {len(seeds)} training seed(s) per point ({', '.join(map(str, seeds))}: "
        "model initialisation and data order; the synthetic world is fixed by `data.seed`). Figures: mean ± sample "
        "sd over seeds.", "",
        "## Verdicts", "",
        "| the paper's claim | here |", "|---|---|",
    ]  # fmt: skip
    change, sd = verdict["probe_loss_change_smallest_to_largest_k"], verdict["probe_loss_change_sd"]
    k0, k1 = verdict["smallest_k"], verdict["largest_k"]
    evidence = "; ".join(
        f"{m} probe loss K = {k0} -> {k1}: {change[m]:+.3f}" + (f" (2 sd = {2 * sd[m]:.3f})" if sd[m] is not None else "")
        for m in MODES
    ) + f"; shared - modular at K = {k1}: {verdict['gap_at_largest_k']:+.3f}" + (
        f" (2 sd = {2 * verdict['gap_at_largest_k_sd']:.3f})" if verdict["gap_at_largest_k_sd"] is not None else "")
    shows = "**shows**" if verdict["curse_shows"] else "**does not show**"
    reason = f" ({verdict['no_verdict_because']})" if verdict["no_verdict_because"] else ""
    lines.append(f"| A shared model gets worse per language as languages are added at fixed capacity; a modular one "
                 f"does not. | {shows}{reason}: {evidence}. Rule: {verdict['rule']}. |")
    zs = [r for r in summary["curse"] if r["zero_shot_acc"] is not None]
    flagged = sum(r["flagged_seeds"] for r in zs)
    lines.append(f"| Fine-tuning with embeddings and adapters frozen transfers zero-shot by switching the adapter. | "
                 f"zero-shot ({ZERO_SHOT_PROBE}) accuracy by mode and K below; {flagged} of {len(zs) * len(seeds)} "
                 f"fine-tuning runs with a zero-shot language are flagged degenerate (chance {summary['chance']:.1f}). |")
    ph = summary["posthoc_verdict"]
    lines.append("| A language added after pre-training leaves the others bit-identical; a shared model's degrade. | "
                 + ("**shown**" if ph["modular_old_languages_unchanged"] and ph["shared_old_languages_changed"]
                    else "**not shown**")
                 + f": modular largest change of an old language's loss over {len(seeds)} seed(s) "
                 + f"{next(r for r in summary['posthoc'] if r['mode'] == 'modular')['old_languages_max_loss_change']:.3g}, "
                 + f"shared {next(r for r in summary['posthoc'] if r['mode'] == 'shared')['old_languages_max_loss_change']:.3g}. |")
    lines += [
        "", "## Settings (from the runs' saved configs)", "",
        f"- Pre-training (`experiment=paper_mlm`): {_describe(runs['mlm'])}",
        f"- Fine-tuning (`experiment=paper_nli`): {_describe(runs['nli'])}",
        f"- Post-hoc (`experiment=paper_posthoc_*`, K = {st['posthoc_k']}): {_describe(runs['posthoc'])}",
        "- Overrides given to every run: " + (" ".join(f"`{o}`" for o in st["overrides"]) or "none"),
        "- World settings (`shared_facts`, `private_facts`, `vocab_overlap`, `orders`): "
        "`xmod_lab/data/synthetic_world.py`; the study's: `xmod_lab/conf/world/paper.yaml`.", "",
        "## Curse of multilinguality", "",
        f"Held-out MLM loss (lower is better) of the probe language ({PROBE}) and the mean over the pre-trained "
        "languages, after pre-training on K languages with the same updates per language.", "",
        "| mode | K | updates | probe MLM loss | mean MLM loss |", "|---|---|---|---|---|",
    ]  # fmt: skip
    for r in summary["curse"]:
        lines.append(f"| {r['mode']} | {r['languages']} | {_fmt(r['updates'], 0)} | {pm(r, 'probe_mlm_loss')} | "
                     f"{pm(r, 'mlm_loss_avg')} |")
    lines += ["", "## Zero-shot NLI", "",
              f"Accuracy (%) after fine-tuning on English with `freeze=paper`; {ZERO_SHOT_PROBE} is the zero-shot probe "
              f"(K >= 2). Chance {summary['chance']:.1f}, hypothesis-only ceiling {summary['shortcut_ceiling']:.1f}. "
              "Flagged: a seed whose classifier predicts too few classes or sits within 3 points of chance or of "
              "the ceiling (`xmod_lab/diagnostics.py`).", "",
              f"| mode | K | {PROBE} acc | {ZERO_SHOT_PROBE} acc (zero-shot) | zero-shot avg | flagged seeds |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for r in summary["curse"]:
        lines.append(f"| {r['mode']} | {r['languages']} | {pm(r, 'en_acc', 1)} | {pm(r, 'zero_shot_acc', 1)} | "
                     f"{pm(r, 'zero_shot_avg_acc', 1)} | {r['flagged_seeds']} of {len(r['seeds'])} |")
    lines += ["", "## Post-hoc language", "",
              f"{NEW_LANGUAGE} added to the K = {st['posthoc_k']} models, adapters-only MLM; \"before\" is the same "
              "command with `train=false`. Gap: its loss after training minus the mean loss of the pre-trained "
              "languages (as pre-trained).", "",
              f"| mode | {NEW_LANGUAGE} loss before | {NEW_LANGUAGE} loss after | pre-trained languages' loss | gap | "
              "largest change of an old language's loss (any seed) |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for r in summary["posthoc"]:
        lines.append(f"| {r['mode']} | {pm(r, 'new_language_mlm_loss_before')} | {pm(r, 'new_language_mlm_loss')} | "
                     f"{pm(r, 'old_languages_mlm_loss')} | {pm(r, 'new_minus_old_mlm_loss')} | "
                     f"{r['old_languages_max_loss_change']:.3g} |")
    lines += ["", "Plots: " + " ".join(f"![{name}](img/paper_{name})" for name in summary["plots"]), ""]
    return "\n".join(lines)


def curse_figures(summary: dict[str, Any]) -> dict[str, Any]:
    """``{file name: figure}`` of the curse study: the probe's MLM loss and German's zero-shot accuracy against
    K (mean over seeds, the sd as error bar), one line per mode in its colour and marker of every plot (``plots.MODE_STYLE``), the modes offset
    sideways so equal values never hide each other; runs flagged degenerate crossed out in red."""
    import matplotlib.pyplot as plt

    figures = {}
    for key, label, name, title in (
        ("probe_mlm_loss", f"held-out MLM loss ({PROBE})", "probe_loss_vs_k.png",
         f"Held-out MLM loss of {PROBE} (lower is better) against K"),
        ("zero_shot_acc", f"zero-shot NLI accuracy ({ZERO_SHOT_PROBE})", "zero_shot_vs_k.png",
         f"Zero-shot NLI accuracy on {ZERO_SHOT_PROBE} after English fine-tuning, against K"),
    ):  # fmt: skip
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        ks = sorted({r["languages"] for r in summary["curse"]})
        for mode, shift in zip(MODES, plots.offsets(len(MODES)), strict=True):
            rows = [r for r in summary["curse"] if r["mode"] == mode and r[key] is not None]
            if not rows:  # no legend entry for a line that is not there
                continue
            xs = [r["languages"] * 2**shift for r in rows]  # log axis: a multiplicative offset
            ax.plot(xs, [r[key] for r in rows], label=mode, markerfacecolor="none" if mode == "modular" else None,
                    **plots.MODE_STYLE[mode])
            spread = [(x, r[key], r[f"{key}_sd"]) for x, r in zip(xs, rows, strict=True) if r.get(f"{key}_sd")]
            if spread:  # the sd over seeds; none where it is undefined (one seed)
                ax.errorbar([x for x, _, _ in spread], [y for _, y, _ in spread], yerr=[e for _, _, e in spread],
                            fmt="none", capsize=3, color=plots.MODE_STYLE[mode]["color"], gid="sd")
            flagged = [(x, r[key]) for x, r in zip(xs, rows, strict=True) if key == "zero_shot_acc" and r["flags"]]
            if flagged:
                ax.plot([x for x, _ in flagged], [y for _, y in flagged], "x", color=plots.DEGENERATE_COLOR,
                        markersize=10, mew=2, gid=plots.DEGENERATE, label="degenerate (flagged)")
        if key == "zero_shot_acc":
            ax.axhline(summary["chance"], color="grey", linestyle=":", label="chance")
        if not any(r[key] is not None for r in summary["curse"]):  # K = 1 only: no other language to transfer to
            ax.text(0.5, 0.75, f"nothing to plot: no {label} at K = {', '.join(map(str, ks))}",
                    transform=ax.transAxes, ha="center", va="center", gid="empty")  # above the chance line
        ax.set_xscale("log", base=2)
        ax.set_xlim(ks[0] / 1.5, ks[-1] * 1.5)  # fixed: a panel without points (K = 1 only) still has an axis
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_xlabel("pre-training languages K")
        ax.set_ylabel(label)
        ax.set_title(title, fontsize=9)
        handles, names = ax.get_legend_handles_labels()
        unique = dict(zip(names, handles, strict=True))
        ax.legend(unique.values(), unique.keys())
        fig.tight_layout()
        figures[name] = fig
    return figures


def plot(summary: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for name, fig in curse_figures(summary).items():
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        paths.append(out / name)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xmod_lab.paper", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="outputs/paper", help="output folder (default: outputs/paper)")
    parser.add_argument("--ks", default=",".join(map(str, KS)), help="numbers of pre-training languages")
    parser.add_argument("--posthoc-k", type=int, default=POSTHOC_K, help="the K whose models get a new language")
    parser.add_argument("--jobs", type=int, default=2, help="xmod-train processes at a time (1 thread each)")
    parser.add_argument("--seeds", type=int, default=SEEDS,
                        help=f"training seeds per point, 0..N-1 (default {SEEDS}; the verdict needs 2 or more)")
    parser.add_argument("--doc", default="docs/paper.md",
                        help="the generated document (default docs/paper.md; its plots go to img/ beside it)")
    parser.add_argument("overrides", nargs="*", help="xmod-train overrides for every run (e.g. trainer.max_steps=5)")
    args = parser.parse_args(argv)
    ks = sorted({int(k) for k in args.ks.split(",")})
    if ks[-1] > len(SYNTHETIC_LANGUAGES) or ks[0] < 1:
        parser.error(f"--ks {args.ks}: each K must lie in 1..{len(SYNTHETIC_LANGUAGES)}")
    if args.posthoc_k not in ks:
        parser.error(f"--posthoc-k {args.posthoc_k} is not among --ks {args.ks}: the post-hoc step adds a language "
                     f"to models of one of those K; pass it, e.g. --ks {args.ks} --posthoc-k {ks[-1]}")
    if args.seeds < 1:
        parser.error(f"--seeds {args.seeds}: at least 1 (3 by default; the verdict needs 2 or more)")
    seeds = list(range(args.seeds))
    out, doc = Path(args.out).resolve(), Path(args.doc).resolve()
    start = time.time()
    reused = sum(1 for p in out.glob("*/*/run_complete"))  # a resumed study: wall_seconds excludes those runs
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a kill stops the runs it started too

    def sweeps(step: str, *extra: str) -> list[tuple[list[str], Path]]:
        """One multirun per mode and seed over the K it still lacks (finished runs are kept: rerunning resumes)."""
        todo = []
        for seed in seeds:
            for mode in MODES:
                ks_left = missing(out / step, mode, ks, seed)
                if ks_left:
                    languages = "languages=" + ",".join(f"synthetic{k}" for k in ks_left)
                    todo.append((["-m", *extra, languages, f"adapter.adapter_mode={mode}", f"seed={seed}",
                                  f"hydra.sweep.dir={out / step}", f"hydra.sweep.subdir={SUBDIR}", *args.overrides],
                                 out / "logs" / f"{step}_{mode}_seed{seed}.log"))  # fmt: skip
        return todo

    run_parallel(sweeps("mlm", "experiment=paper_mlm"), args.jobs)
    # the job's own config sees Hydra's node through the hydra: resolver
    pretrained = (f"model.pretrained={out / 'mlm'}/${{adapter.adapter_mode}}_${{hydra:runtime.choices.languages}}"
                  "_seed${seed}/export")  # fmt: skip
    run_parallel(sweeps("nli", "experiment=paper_nli", pretrained), args.jobs)
    pk = args.posthoc_k
    old = list(SYNTHETIC_LANGUAGES[:pk])
    posthoc = [f"languages=synthetic{pk}", f"languages.eval=[{','.join([*old, NEW_LANGUAGE])}]"]
    run_parallel([(["-m", f"experiment=paper_posthoc_{mode}", "train=true,false", *posthoc, f"seed={seed}",
                    f"model.pretrained={out / 'mlm' / run_name(mode, pk, seed)}/export",
                    f"hydra.sweep.dir={out / 'posthoc'}",
                    f"hydra.sweep.subdir=${{adapter.adapter_mode}}_k{pk}_seed${{seed}}_train${{train}}",
                    *args.overrides], out / "logs" / f"posthoc_{mode}_seed{seed}.log")
                  for seed in seeds for mode in MODES
                  if not all((out / "posthoc" / f"{mode}_k{pk}_seed{seed}_train{t}" / "run_complete").is_file()
                             for t in (True, False))], args.jobs)  # fmt: skip

    curse = curse_rows(out, ks, seeds)
    posthoc_table = posthoc_rows(out, pk, seeds)
    info = _results(out / "nli" / run_name("modular", ks[-1], seeds[0])).get("diagnostics") or {}
    summary = {
        "curse": curse,
        "posthoc": posthoc_table,
        "wall_seconds": round(time.time() - start, 1),
        "runs_reused": reused,
        "seeds": seeds,
        "verdict": curse_verdict(curse),
        "posthoc_verdict": posthoc_verdict(posthoc_table),
        "chance": info.get("chance", 100 / 3),
        "shortcut_ceiling": info.get("shortcut_ceiling_max", float("nan")),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join(["python -m xmod_lab.paper", *(argv if argv is not None else sys.argv[1:])]),
        "settings": {"ks": ks, "posthoc_k": pk, "seeds": seeds, "modes": list(MODES), "overrides": args.overrides,
                     "probe": PROBE, "zero_shot_probe": ZERO_SHOT_PROBE, "new_language": NEW_LANGUAGE,
                     "runs": study_settings(out, ks, seeds, pk)},
    }  # fmt: skip
    plots = plot(summary, out)
    summary["plots"] = [p.name for p in plots]
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    # the document is a function of summary.json alone: regenerate it from the file just written
    text = document(json.loads((out / "summary.json").read_text()))
    (out / "README.md").write_text(text)
    (doc.parent / "img").mkdir(parents=True, exist_ok=True)
    for path in plots:
        shutil.copyfile(path, doc.parent / "img" / f"paper_{path.name}")
    doc.write_text(text)
    mlm_summary = report.collect_sweep(out / "mlm")
    report.write_summary_files(mlm_summary, out / "mlm")
    print(text)
    print(f"wrote {out / 'summary.json'}, {out / 'README.md'}, {doc} (plots: {doc.parent / 'img'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
