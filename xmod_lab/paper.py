"""``make paper``: the X-MOD paper in miniature, on the synthetic languages, on a CPU.

    python -m xmod_lab.paper                                 # the whole study -> outputs/paper/
    python -m xmod_lab.paper --ks 1,2 --posthoc-k 2 trainer.max_steps=5   # a toy run (extra args: overrides)

Three Hydra multiruns of xmod-train with the ``paper_*`` presets (each one a command a user can rerun by
hand), then a summary. Nothing here trains: it launches, waits and reads the runs' results.json.

1. The curse of multilinguality (``experiment=paper_mlm``): MLM pre-training on K = 1, 2, 4, 8, 16 synthetic
   languages, ``adapter.adapter_mode=shared`` and ``modular`` (the same per-language capacity), the same number of
   updates per language; held-out MLM loss on the probe language (English, present at every K).
2. Zero-shot transfer (``experiment=paper_nli``): each export fine-tuned on English NLI with embeddings and
   adapters frozen, tested on every pre-trained language; ``zero_shot_acc`` is German's accuracy (the probe
   present at every K >= 2; null at K = 1, where there is no other language).
3. Post-hoc languages (``experiment=paper_posthoc_{modular,shared}``): a new language added to the K = 8
   models, adapters-only MLM for as many updates as each language had in pre-training; its loss, and the
   largest change of an old language's loss against the same model before (the same command, ``train=false``).

Writes ``<out>/summary.json`` (``curse``, ``posthoc``, ``wall_seconds``, the settings), ``<out>/README.md``
(the tables), ``<out>/*.png``, and keeps every run under ``<out>/{mlm,nli,posthoc}/`` (``xmod-report`` reads
each). Degenerate runs are flagged (``xmod_lab.diagnostics``), and so is a curse that does not show.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xmod_lab import plots, report
from xmod_lab.data.synthetic import SYNTHETIC_LANGUAGES
from xmod_lab.results import AVERAGES, parse_metric_key

MODES = ("shared", "modular")
KS = (1, 2, 4, 8, 16)
POSTHOC_K = 8
PROBE, ZERO_SHOT_PROBE, NEW_LANGUAGE = "en", "de", "rm"  # evaluation sets (dataset codes)
SUBDIR = "${adapter.adapter_mode}_${hydra.runtime.choices.languages}"


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


def missing(step_dir: Path, mode: str, ks: Sequence[int]) -> list[int]:
    """The K whose run of ``mode`` has not finished yet: a study that was stopped resumes where it was."""
    return [k for k in ks if not (step_dir / f"{mode}_synthetic{k}" / "run_complete").is_file()]


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


def curse_rows(out: Path, ks: Sequence[int]) -> list[dict[str, Any]]:
    rows = []
    for mode in MODES:
        for k in ks:
            name = f"{mode}_synthetic{k}"
            mlm = _results(out / "mlm" / name)["test"]
            nli = _results(out / "nli" / name)
            table = nli["test"]
            others = [lang for lang in table if lang not in (PROBE, *AVERAGES)]
            zero_shot = table[ZERO_SHOT_PROBE]["acc"] if ZERO_SHOT_PROBE in table else None
            rows.append({
                "mode": mode,
                "languages": k,
                "probe_mlm_loss": mlm[PROBE]["loss"],
                "zero_shot_acc": zero_shot,
                "zero_shot_language": ZERO_SHOT_PROBE if zero_shot is not None else None,
                "zero_shot_avg_acc": (sum(table[lang]["acc"] for lang in others) / len(others)) if others else None,
                "en_acc": table[PROBE]["acc"],
                "mlm_loss_avg": mlm["avg"]["loss"],
                "flags": (nli.get("diagnostics") or {}).get("flags", {}),
            })  # fmt: skip
    return rows


def posthoc_rows(out: Path, k: int) -> list[dict[str, Any]]:
    rows = []
    for mode in MODES:
        after = test_metrics(out / "posthoc" / f"{mode}_k{k}_trainTrue")
        before = test_metrics(out / "posthoc" / f"{mode}_k{k}_trainFalse")
        old = sorted(
            parsed[1] for parsed in map(parse_metric_key, after)
            if parsed and parsed[2] == "loss" and parsed[1] not in (NEW_LANGUAGE, *AVERAGES)
        )
        changes = {lang: after[f"test/{lang}/loss"] - before[f"test/{lang}/loss"] for lang in old}
        rows.append({
            "mode": mode,
            "new_language_mlm_loss": after[f"test/{NEW_LANGUAGE}/loss"],
            "new_language_mlm_loss_before": before[f"test/{NEW_LANGUAGE}/loss"],
            "old_languages_max_loss_change": max(abs(v) for v in changes.values()),
            "old_languages_loss_change": changes,
        })  # fmt: skip
    return rows


def curse_verdict(curse: Sequence[dict[str, Any]], tolerance: float = 0.02) -> dict[str, Any]:
    """What the figures say about the claim, computed, never assumed: the probe loss from the smallest to
    the largest K per mode, and whether shared rose by more than ``tolerance`` while modular did not."""
    change = {}
    for mode in MODES:
        rows = sorted((r for r in curse if r["mode"] == mode), key=lambda r: r["languages"])
        if len(rows) >= 2:
            change[mode] = rows[-1]["probe_mlm_loss"] - rows[0]["probe_mlm_loss"]
    shows = bool(change) and change.get("shared", 0.0) > tolerance and change.get("modular", math.inf) <= tolerance
    return {"probe_loss_change_smallest_to_largest_k": change, "tolerance": tolerance, "curse_shows": shows}


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def readme(summary: dict[str, Any]) -> str:
    lines = [
        "# The X-MOD paper in miniature (make paper)", "",
        f"Written {summary['date']} by `{summary['command']}` in {summary['wall_seconds']:.0f} s"
        + (f" (resumed: {summary['runs_reused']} runs of an earlier invocation reused, not timed)."
           if summary["runs_reused"] else "."), "",
        "## Curse of multilinguality", "",
        f"Held-out MLM loss of the probe language ({PROBE}, lower is better) after pre-training on K languages with "
        "the same updates per language; zero-shot NLI accuracy on de after fine-tuning on English with "
        f"embeddings and adapters frozen (chance {summary['chance']:.1f}, hypothesis-only ceiling "
        f"{summary['shortcut_ceiling']:.1f}).", "",
        "| mode | K | probe MLM loss | zero-shot acc (de) | zero-shot avg | en acc | flags |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in summary["curse"]:
        flags = "; ".join(f"{lang}: {', '.join(f)}" for lang, f in r["flags"].items()) or ""
        lines.append(f"| {r['mode']} | {r['languages']} | {_fmt(r['probe_mlm_loss'])} | {_fmt(r['zero_shot_acc'], 1)} | "
                     f"{_fmt(r['zero_shot_avg_acc'], 1)} | {_fmt(r['en_acc'], 1)} | {flags} |")
    verdict = summary["verdict"]
    lines += ["", "Probe loss change from the smallest to the largest K: "
              + ", ".join(f"{m} {v:+.3f}" for m, v in verdict["probe_loss_change_smallest_to_largest_k"].items())
              + f". The curse (shared rises by more than {verdict['tolerance']}, modular does not) "
              + ("shows" if verdict["curse_shows"] else "does NOT show") + " in this run.", ""]
    lines += ["## Post-hoc language", "",
              f"{NEW_LANGUAGE} added to the K = {summary['settings']['posthoc_k']} models, adapters-only MLM.", "",
              "| mode | new-language loss (before -> after) | max change of an old language's loss |",
              "|---|---|---|"]  # fmt: skip
    for r in summary["posthoc"]:
        lines.append(f"| {r['mode']} | {_fmt(r['new_language_mlm_loss_before'])} -> {_fmt(r['new_language_mlm_loss'])} | "
                     f"{r['old_languages_max_loss_change']:.3g} |")
    lines += ["", "Runs: `mlm/`, `nli/`, `posthoc/` (one folder per run; `xmod-report <folder>` plots each). "
              "Plots: `probe_loss_vs_k.png`, `zero_shot_vs_k.png`.", ""]
    return "\n".join(lines)


def curse_figures(summary: dict[str, Any]) -> dict[str, Any]:
    """``{file name: figure}`` of the curse study: the probe's MLM loss and German's zero-shot accuracy against
    K, one line per mode in its colour and marker of every plot (``plots.MODE_STYLE``), the modes offset
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
        for mode, shift in zip(MODES, plots.offsets(len(MODES)), strict=True):
            rows = [r for r in summary["curse"] if r["mode"] == mode and r[key] is not None]
            xs = [r["languages"] * 2**shift for r in rows]  # log axis: a multiplicative offset
            ax.plot(xs, [r[key] for r in rows], label=mode, markerfacecolor="none" if mode == "modular" else None,
                    **plots.MODE_STYLE[mode])
            flagged = [(x, r[key]) for x, r in zip(xs, rows, strict=True) if key == "zero_shot_acc" and r["flags"]]
            if flagged:
                ax.plot([x for x, _ in flagged], [y for _, y in flagged], "x", color=plots.DEGENERATE_COLOR,
                        markersize=10, mew=2, gid=plots.DEGENERATE, label="degenerate (flagged)")
        if key == "zero_shot_acc":
            ax.axhline(summary["chance"], color="grey", linestyle=":", label="chance")
        ks = sorted({r["languages"] for r in summary["curse"]})
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
    parser.add_argument("overrides", nargs="*", help="xmod-train overrides for every run (e.g. trainer.max_steps=5)")
    args = parser.parse_args(argv)
    ks = sorted({int(k) for k in args.ks.split(",")})
    if ks[-1] > len(SYNTHETIC_LANGUAGES) or args.posthoc_k not in ks or ks[0] < 1:
        parser.error(f"--ks must lie in 1..{len(SYNTHETIC_LANGUAGES)} and include --posthoc-k ({args.posthoc_k})")
    out = Path(args.out).resolve()
    start = time.time()
    reused = sum(1 for p in out.glob("*/*/run_complete"))  # a resumed study: wall_seconds excludes those runs
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a kill stops the runs it started too

    def sweeps(step: str, *extra: str) -> list[tuple[list[str], Path]]:
        """One multirun per mode over the K it still lacks (finished runs are kept: rerunning resumes)."""
        todo = []
        for mode in MODES:
            ks_left = missing(out / step, mode, ks)
            if ks_left:
                languages = "languages=" + ",".join(f"synthetic{k}" for k in ks_left)
                todo.append((["-m", *extra, languages, f"adapter.adapter_mode={mode}", f"hydra.sweep.dir={out / step}",
                              f"hydra.sweep.subdir={SUBDIR}", *args.overrides], out / "logs" / f"{step}_{mode}.log"))
        return todo

    run_parallel(sweeps("mlm", "experiment=paper_mlm"), args.jobs)
    # the job's own config sees Hydra's node through the hydra: resolver
    pretrained = f"model.pretrained={out / 'mlm'}/${{adapter.adapter_mode}}_${{hydra:runtime.choices.languages}}/export"
    run_parallel(sweeps("nli", "experiment=paper_nli", pretrained), args.jobs)
    old = list(SYNTHETIC_LANGUAGES[: args.posthoc_k])
    posthoc = [f"languages=synthetic{args.posthoc_k}", f"languages.eval=[{','.join([*old, 'rm'])}]",
               f"model.pretrained={out / 'mlm'}/${{adapter.adapter_mode}}_synthetic{args.posthoc_k}/export"]  # fmt: skip
    run_parallel([(["-m", f"experiment=paper_posthoc_{mode}", "train=true,false", *posthoc,
                    f"hydra.sweep.dir={out / 'posthoc'}",
                    f"hydra.sweep.subdir=${{adapter.adapter_mode}}_k{args.posthoc_k}_train${{train}}",
                    *args.overrides], out / "logs" / f"posthoc_{mode}.log") for mode in MODES
                  if not all((out / "posthoc" / f"{mode}_k{args.posthoc_k}_train{t}" / "run_complete").is_file()
                             for t in (True, False))], args.jobs)  # fmt: skip

    curse = curse_rows(out, ks)
    nli_dir = out / "nli" / f"modular_synthetic{ks[-1]}"
    info = _results(nli_dir).get("diagnostics") or {}
    summary = {
        "curse": curse,
        "posthoc": posthoc_rows(out, args.posthoc_k),
        "wall_seconds": round(time.time() - start, 1),
        "runs_reused": reused,
        "verdict": curse_verdict(curse),
        "chance": info.get("chance", 100 / 3),
        "shortcut_ceiling": info.get("shortcut_ceiling_max", float("nan")),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join(["python -m xmod_lab.paper", *(argv if argv is not None else sys.argv[1:])]),
        "settings": {"ks": ks, "posthoc_k": args.posthoc_k, "modes": list(MODES), "overrides": args.overrides,
                     "probe": PROBE, "zero_shot_probe": ZERO_SHOT_PROBE, "new_language": NEW_LANGUAGE},
    }  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "README.md").write_text(readme(summary))
    for path in plot(summary, out):
        print(f"wrote {path}")
    mlm_summary = report.collect_sweep(out / "mlm")
    report.write_summary_files(mlm_summary, out / "mlm")
    print(readme(summary))
    print(f"wrote {out / 'summary.json'}, {out / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
