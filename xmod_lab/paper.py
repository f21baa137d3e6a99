"""``make paper``: the X-MOD paper in miniature, on the synthetic languages, on a CPU.

    python -m xmod_lab.paper                                 # the whole study -> outputs/paper/, docs/paper.md
    python -m xmod_lab.paper --ks 1,2 --posthoc-k 2 --doc /tmp/toy.md trainer.max_steps=5   # a toy run

One Hydra multirun of xmod-train per step, mode and training seed with the ``paper_*`` presets (each one a
command a user can rerun by hand, printed with its log), ``--jobs`` at a time, each as soon as the runs whose
exports it reads have finished, the longest chain of work first (:func:`run_parallel`), then a summary. Nothing here trains: it launches, waits and reads the runs'
results.json. The presets share one synthetic world (``xmod_lab/conf/world/paper.yaml``: fact tables each
language must store, beside shared ones; ``xmod_lab/data/synthetic_world.py``).

1. The curse of multilinguality (``experiment=paper_mlm``): MLM pre-training on K = 1, 2, 8 (``--ks``) synthetic
   languages, ``adapter.adapter_mode=shared`` and ``modular`` (the same per-language capacity), the same number of
   updates per language; what English (the probe, present at every K) knows of its own facts (the fact probe,
   :mod:`xmod_lab.paper_probe`: the verdict's metric, and whether K = 1 has learnt them), its held-out MLM loss,
   and the learning curves of both (a validation every 3 epochs; the fact probe's from
   :class:`xmod_lab.tasks.fact_probe.FactProbe`): whether the smallest K has plateaued, and whether the shared
   model's fact probe at the largest K still falls (:func:`plateau_verdict`); and the budget's control: the
   smallest K pre-trained twice as long (``<out>/budget/``), whose fact probe says whether the study's budget is
   long enough there (:func:`budget_verdict`).
2. Zero-shot transfer (``experiment=paper_nli``): each export of K >= 2 fine-tuned on English NLI with embeddings
   and adapters frozen, tested on every pre-trained language; ``zero_shot_avg_acc`` is the mean over the languages
   other than English, ``zero_shot_acc`` German's. K = 1 has no other language, so no NLI run (its row is null).
3. Post-hoc languages (``experiment=paper_posthoc_{modular,shared}``): a new language added to the K = 8
   models (``--posthoc-k``), adapters-only MLM for as many updates as each language had in pre-training; its loss, how close it
   comes to the pre-trained languages, and the largest change of an old language's loss against the same
   model before (the same command, ``train=false``).

Every point runs ``--seeds`` training seeds (default 3: ``seed=0,1,2``); each figure is the mean with its
sample standard deviation (``<key>_sd``), and the verdicts apply the spread (:mod:`xmod_lab.paper_summary`).
Writes ``<out>/summary.json`` (``curse``, ``posthoc``, ``learning_curves``, ``fact_learning_curves``,
``wall_seconds``, ``seeds``, ``verdict`` (on the fact probe), ``mlm_loss_verdict`` (the same rule on the MLM
loss), ``knowledge_verdict``, ``budget_verdict``, ``plateau_verdict`` (MLM loss), ``fact_plateau_verdict`` (fact probe, smallest K),
``shared_fact_plateau_verdict`` (fact probe, shared, largest K), ``zero_shot_verdict``, ``posthoc_verdict``, the settings),
the document ``--doc`` (default docs/paper.md, generated from summary.json alone; a copy as ``<out>/README.md``)
with its plots in ``img/`` beside it, ``<out>/*.png``, and keeps every run under ``<out>/{mlm,nli,posthoc}/``
(``xmod-report`` reads each) and ``<out>/budget/``. Degenerate runs are flagged (``xmod_lab.diagnostics``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hydra import compose, initialize_config_module

import xmod_lab.conf.schema  # noqa: F401  (registers train_schema, which budget_overrides composes)
from xmod_lab import report
from xmod_lab.data.synthetic import SYNTHETIC_LANGUAGES
from xmod_lab.paper_doc import document, plot
from xmod_lab.paper_probe import NO_KNOWLEDGE, fact_probe
from xmod_lab.paper_summary import (
    BUDGET_DIR,
    BUDGET_FACTOR,
    BUDGET_MODE,
    FACT_CURVE,
    KS,
    MLM_CURVE,
    MODES,
    NEW_LANGUAGE,
    POSTHOC_K,
    PROBE,
    SEEDS,
    ZERO_SHOT_PROBE,
    ambiguity_rows,
    budget_run,
    budget_verdict,
    curse_rows,
    curse_verdict,
    knowledge_verdict,
    learning_curves,
    missing,
    nli_ks,
    plateau_verdict,
    posthoc_rows,
    posthoc_verdict,
    run_mode,
    run_name,
    run_results,
    study_settings,
    zero_shot_verdict,
)

SUBDIR = "${adapter.adapter_mode}_${hydra.runtime.choices.languages}_seed${seed}"
# Rough seconds on one core (the study of 2026-12-02, docs/paper_search.md): they only order the jobs.
START_SECONDS = 8.0  # imports and set-up, once per process
POSTHOC_SECONDS = 30.0


def run_seconds(step: str, k: int) -> float:
    """Pre-training's updates grow with K; fine-tuning adds a test set per language."""
    return 40.0 * k if step == "mlm" else 28.0 + k


def budget_overrides(overrides: Sequence[str]) -> list[str]:
    """The overrides that pre-train ``BUDGET_FACTOR`` times longer than ``experiment=paper_mlm`` with
    ``overrides`` (read from the composed config, so a toy ``trainer.max_steps`` doubles too)."""
    with initialize_config_module("xmod_lab.conf", version_base="1.3"):
        trainer = compose("train", overrides=["experiment=paper_mlm", *overrides]).trainer
    longer = [f"trainer.max_epochs={BUDGET_FACTOR * trainer.max_epochs}"]
    if trainer.get("max_steps") is not None and trainer.max_steps > 0:
        longer.append(f"trainer.max_steps={BUDGET_FACTOR * trainer.max_steps}")
    return longer


@dataclass(frozen=True)
class Job:
    """One xmod-train process of the study (a Hydra multirun): its arguments, the run directories it writes
    (``runs``), its log, a rough cost in seconds (it orders the jobs: the longest chain of work first) and the
    runs whose exports it reads (``after``: it starts once each holds ``run_complete``)."""

    runs: tuple[Path, ...]
    args: tuple[str, ...]
    log: Path
    cost: float
    after: tuple[Path, ...] = ()


def _launch(job: Job) -> subprocess.Popen:
    job.log.parent.mkdir(parents=True, exist_ok=True)
    out = job.log.open("w")
    print(f"xmod-train {' '.join(job.args)}   (log: {job.log})", flush=True)
    return subprocess.Popen([sys.executable, "-m", "xmod_lab.train", *job.args], stdout=out, stderr=subprocess.STDOUT)


def _complete(run_dir: Path) -> bool:
    return (run_dir / "run_complete").is_file()


def critical_paths(jobs: Sequence[Job]) -> dict[Path, float]:
    """Per job (by its log): its cost plus the costliest chain of jobs that wait for its runs. Started in this
    order, the long pre-training jobs do not end up alone on one core at the end of the study."""
    waiting = {job.log: [j for j in jobs if set(job.runs) & set(j.after)] for job in jobs}
    paths: dict[Path, float] = {}

    def path(job: Job) -> float:
        if job.log not in paths:
            paths[job.log] = job.cost + max((path(j) for j in waiting[job.log]), default=0.0)
        return paths[job.log]

    for job in jobs:
        path(job)
    return paths


def run_parallel(jobs: Sequence[Job], n_jobs: int) -> None:
    """Run the study's xmod-train commands, ``n_jobs`` at a time, each as soon as the runs it reads have
    finished (even while the job writing them goes on with its next run), the longest chain first. A failure
    stops the study, naming its log; the commands still running are stopped whenever this returns early (a
    failure, Ctrl-C, a kill)."""
    written = {run for job in jobs for run in job.runs}
    for job in jobs:
        for dep in job.after:
            if dep not in written and not _complete(dep):
                raise ValueError(f"{job.log.stem} needs {dep}, which is neither finished nor among the runs to do")
    order = critical_paths(jobs)
    pending = sorted(jobs, key=lambda j: -order[j.log])
    running: list[tuple[subprocess.Popen, Job]] = []
    try:
        while pending or running:
            for job in list(pending):
                if len(running) >= n_jobs:
                    break
                if all(_complete(dep) for dep in job.after):
                    pending.remove(job)
                    running.append((_launch(job), job))
            if not running:  # every pending job waits for a run that no job still running writes
                raise RuntimeError(f"no job can start: {[j.log.stem for j in pending]}")
            time.sleep(1.0)
            for proc, job in list(running):
                if proc.poll() is not None:
                    running.remove((proc, job))
                    unfinished = [str(run) for run in job.runs if not _complete(run)]
                    if proc.returncode != 0 or unfinished:
                        tail = job.log.read_text(errors="replace")[-3000:]
                        raise RuntimeError(f"xmod-train failed (exit {proc.returncode}; unfinished runs: "
                                           f"{unfinished or 'none'}); log {job.log}:\n{tail}")  # fmt: skip
    finally:
        for proc, _ in running:
            proc.kill()
            proc.wait()


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
    if args.posthoc_k == 1:
        parser.error("--posthoc-k 1: with one language the shared and modular models are one model (one run serves "
                     "both); the post-hoc step compares them, so pass a K of 2 or more")
    if args.posthoc_k not in ks:
        parser.error(f"--posthoc-k {args.posthoc_k} is not among --ks {args.ks}: the post-hoc step adds a language "
                     f"to models of one of those K; pass it, e.g. --ks {','.join(map(str, sorted({*ks, args.posthoc_k})))}")
    if args.seeds < 1:
        parser.error(f"--seeds {args.seeds}: at least 1 (3 by default; the verdict needs 2 or more)")
    seeds = list(range(args.seeds))
    out, doc = Path(args.out).resolve(), Path(args.doc).resolve()
    start = time.time()
    reused = sum(1 for p in out.glob("*/*/run_complete"))  # a resumed study: wall_seconds excludes those runs
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a kill stops the runs it started too

    pk = args.posthoc_k
    old = list(SYNTHETIC_LANGUAGES[:pk])
    # the job's own config sees Hydra's node through the hydra: resolver
    pretrained = (f"model.pretrained={out / 'mlm'}/${{adapter.adapter_mode}}_${{hydra:runtime.choices.languages}}"
                  "_seed${seed}/export")  # fmt: skip
    jobs = []
    for seed in seeds:
        for mode in MODES:
            for step in ("mlm", "nli"):
                step_ks = ks if step == "mlm" else nli_ks(ks)
                ks_left = sorted(missing(out / step, mode, step_ks, seed), reverse=True)  # the longest run first
                if not ks_left:
                    continue
                mlm = tuple(out / "mlm" / run_name(mode, k, seed) for k in ks_left)
                extra = ("experiment=paper_mlm",) if step == "mlm" else ("experiment=paper_nli", pretrained)
                jobs.append(Job(
                    tuple(out / step / run_name(mode, k, seed) for k in ks_left),
                    ("-m", *extra, "languages=" + ",".join(f"synthetic{k}" for k in ks_left),
                     f"adapter.adapter_mode={mode}", f"seed={seed}", f"hydra.sweep.dir={out / step}",
                     f"hydra.sweep.subdir={SUBDIR}", *args.overrides),
                    out / "logs" / f"{step}_{mode}_seed{seed}.log",
                    sum(run_seconds(step, k) for k in ks_left) + START_SECONDS,
                    () if step == "mlm" else mlm))  # fmt: skip
            export = out / "mlm" / run_name(mode, pk, seed)
            posthoc = tuple(out / "posthoc" / f"{mode}_k{pk}_seed{seed}_train{t}" for t in (True, False))
            if not all(_complete(run) for run in posthoc):
                jobs.append(Job(
                    posthoc,
                    ("-m", f"experiment=paper_posthoc_{mode}", "train=true,false", f"languages=synthetic{pk}",
                     f"languages.eval=[{','.join([*old, NEW_LANGUAGE])}]", f"seed={seed}",
                     f"model.pretrained={export}/export", f"hydra.sweep.dir={out / 'posthoc'}",
                     f"hydra.sweep.subdir=${{adapter.adapter_mode}}_k{pk}_seed${{seed}}_train${{train}}",
                     *args.overrides),
                    out / "logs" / f"posthoc_{mode}_seed{seed}.log", POSTHOC_SECONDS + START_SECONDS, (export,)))  # fmt: skip
    # the budget's control: the smallest K, pre-trained BUDGET_FACTOR times longer (budget_verdict)
    k0, mode0 = ks[0], BUDGET_MODE
    long_runs = {seed: budget_run(out, k0, seed) for seed in seeds}
    seeds_left = [seed for seed, run in long_runs.items() if not _complete(run)]
    if seeds_left:
        jobs.append(Job(
            tuple(long_runs[seed] for seed in seeds_left),
            ("-m", "experiment=paper_mlm", f"languages=synthetic{k0}", f"adapter.adapter_mode={run_mode(mode0, k0)}",
             "seed=" + ",".join(map(str, seeds_left)), f"hydra.sweep.dir={out / BUDGET_DIR}",
             f"hydra.sweep.subdir={SUBDIR}", *args.overrides, *budget_overrides(args.overrides)),
            out / "logs" / "budget.log", len(seeds_left) * BUDGET_FACTOR * run_seconds("mlm", k0) + START_SECONDS))  # fmt: skip
    run_parallel(jobs, args.jobs)
    # a few forward passes per run, so redone on every invocation (resumed ones too)
    for name in dict.fromkeys(run_name(mode, k, seed) for seed in seeds for mode in MODES for k in ks):
        fact_probe(out / "mlm" / name, PROBE)
    for run in long_runs.values():
        fact_probe(run, PROBE)

    curse = curse_rows(out, ks, seeds)
    posthoc_table = posthoc_rows(out, pk, seeds)
    curves = learning_curves(out, ks, seeds)
    fact_curves = learning_curves(out, ks, seeds, FACT_CURVE)
    # the modes the control stands for: both at K = 1 (one run serves both), else the one it ran
    served = [mode for mode in MODES if run_mode(mode, k0) == run_mode(mode0, k0)]
    budget_curves = {name: learning_curves(out, [k0], seeds, key, BUDGET_DIR, served)
                     for name, key in (("learning_curves", MLM_CURVE), ("fact_learning_curves", FACT_CURVE))}
    fact_probe_name = "fact probe (own entries)"
    info = run_results(out / "nli" / run_name("modular", ks[-1], seeds[0])).get("diagnostics") or {}
    summary = {
        "curse": curse,
        "posthoc": posthoc_table,
        "wall_seconds": round(time.time() - start, 1),
        "runs_reused": reused,
        "seeds": seeds,
        "verdict": curse_verdict(curse),
        "ambiguity": ambiguity_rows(out, ks, seeds),
        "mlm_loss_verdict": curse_verdict(curse, "probe_mlm_loss"),
        "knowledge_verdict": knowledge_verdict(curse, NO_KNOWLEDGE),
        "no_knowledge": NO_KNOWLEDGE,
        "budget_verdict": budget_verdict(out, curse, seeds),
        "plateau_verdict": plateau_verdict(curves),
        "fact_plateau_verdict": plateau_verdict(fact_curves, what=fact_probe_name),
        "shared_fact_plateau_verdict": plateau_verdict(fact_curves, ks[-1], ("shared",), fact_probe_name),
        "zero_shot_verdict": zero_shot_verdict(curse),
        "posthoc_verdict": posthoc_verdict(posthoc_table),
        "learning_curves": curves,
        "fact_learning_curves": fact_curves,
        "budget_learning_curves": budget_curves["learning_curves"],
        "budget_fact_learning_curves": budget_curves["fact_learning_curves"],
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
