"""The whole default fine-tuning job, ours against a transformers Trainer script, on the same files.

    .venv/bin/python benchmarks/bench_e2e.py                 # 1 round: xmod-train, then the Trainer script
    .venv/bin/python benchmarks/bench_e2e.py --rounds 3      # alternating, medians
    .venv/bin/python benchmarks/bench_e2e.py --threads 1     # both with 1 torch thread
    .venv/bin/python benchmarks/bench_e2e.py --before /tmp/old-checkout   # also xmod-train of another checkout
    .venv/bin/python benchmarks/bench_e2e.py --device cuda   # trainer=gpu (bf16-mixed) vs the script with bf16
    .venv/bin/python benchmarks/bench_e2e.py --seeds 0,1,2   # one round per seed: accuracy as mean +- sd over seeds

Ours: ``xmod-train pretrain=none freeze=none`` (the default experiment without MLM pre-training, everything
trains, 20 epochs, validation every epoch, test of the best checkpoint on the 5 evaluation sets).
Theirs: ``benchmarks/trainer_nli.py`` (same data, tokenizer, model sizes and recipe; Trainer's defaults
otherwise). Each run is a fresh process, timed from start to exit; both read the synthetic data generated
once under ``--cache`` (generated before the first timed run). Prints wall time, training examples/s and
test accuracy (English and the mean over the 5 sets) side by side.

Threads: by default each side runs as shipped: xmod-train with its ``torch_threads`` (conf/train.yaml), the script
with torch's default (one thread per core), as a user would run each; ``--threads N`` sets both. Every run is a
fresh process; the load average is printed before and after (other processes' load slows two threads far more
than one: benchmarks/bench_threads.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN_EXAMPLES, EPOCHS = 4000, 20  # conf/trainer/cpu.yaml's max_epochs


def run_ours(cache: str, threads: int | None, extra: list[str], seed: int | None = None, root: Path = ROOT) -> dict:
    """``xmod-train pretrain=none freeze=none`` of the checkout at ``root`` (its own xmod_lab first on the path)."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-c", "from xmod_lab.cli import train; train()", "pretrain=none", "freeze=none",
               f"hydra.run.dir={out}/run", *extra]  # fmt: skip
        if threads is not None:
            cmd.append(f"torch_threads={threads}")
        if seed is not None:
            cmd.append(f"seed={seed}")
        env = {**os.environ, "XMOD_CACHE": cache, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"xmod-train failed:\n{proc.stderr[-3000:]}")
        results = json.loads((Path(out) / "run" / "results.json").read_text())
        config = (Path(out) / "run" / "config.yaml").read_text().splitlines()
    table = results["test"]
    acc = {k: v["acc"] for k, v in table.items() if k not in ("avg", "zs_avg")}

    def setting(key: str) -> str:
        return next((line.split(":", 1)[1].split("#")[0].strip() for line in config if line.startswith(f"{key}:")), "?")

    return {"runner": "xmod-train", "wall_s": wall, "test_acc": acc, "threads": setting("torch_threads"),
            "seed": setting("seed")}  # fmt: skip


def run_theirs(cache: str, threads: int | None, device: str = "cpu", seed: int | None = None) -> dict:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "trainer_nli.py"), "--root", f"{cache}/synthetic",
           "--device", device]  # fmt: skip
    if threads is not None:
        cmd += ["--threads", str(threads)]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"the Trainer script failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"runner": "transformers Trainer", "wall_s": wall, "test_acc": result["test_acc"], "threads": result["threads"],
            "seed": str(result["seed"])}  # fmt: skip


def spread(values: list[float]) -> str:
    """``mean +- sd`` over runs (sample sd); a single run prints its value and no spread."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} +- {statistics.stdev(values):.2f}"


def summary(runs: dict[str, list[dict]]) -> list[str]:
    """The side-by-side table: wall time as median (min-max) over rounds, accuracy as mean +- sd over every run,
    so rounds with different seeds show the seeds' spread (rounds of one seed repeat the same numbers)."""
    lines = [
        "| runner | threads | seeds | wall s: median (min-max) | train examples/s | test acc en | test acc mean of 5 |",
        "|---|---|---|---|---|---|---|",
    ]
    walls = {}
    for name, results in runs.items():
        wall = [r["wall_s"] for r in results]
        walls[name] = statistics.median(wall)
        en = [r["test_acc"]["en"] for r in results]
        mean = [statistics.mean(r["test_acc"].values()) for r in results]
        seeds = ",".join(sorted({str(r["seed"]) for r in results}, key=lambda x: (len(x), x)))
        lines.append(
            f"| {name} | {results[-1]['threads']} | {seeds} | {walls[name]:.1f} ({min(wall):.1f}-{max(wall):.1f}) | "
            f"{EPOCHS * TRAIN_EXAMPLES / walls[name]:.1f} | {spread(en)} | {spread(mean)} |"
        )
    lines.append(
        f"# whole job: Trainer script / xmod-train = {walls['transformers Trainer'] / walls['xmod-train']:.2f}x "
        "(medians; target >= 1.2x at equal or better accuracy); examples/s counts the whole run's wall time"
    )
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads of both runs (default: each side's own: xmod-train's torch_threads, torch's)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="cuda: xmod-train trainer=gpu (bf16-mixed), the script with bf16 autocast")
    p.add_argument("--before", type=Path, default=None,
                   help="also time xmod-train of this checkout (e.g. a git worktree of an earlier commit)")
    p.add_argument("--cache", default=str(ROOT / "outputs" / ".cache"))
    p.add_argument("--seeds", default=None,
                   help="comma-separated seeds; round i runs every runner with seed i mod len (default: conf's seed)")
    p.add_argument(
        "--ours", nargs="*", default=[], help="more xmod-train overrides, e.g. data.group_by_length=true"
    )
    args = p.parse_args(argv)
    ours = [*(["trainer=gpu"] if args.device == "cuda" else []), *args.ours]
    sys.path.insert(0, str(ROOT))
    from xmod_lab.data.synthetic import prepare_synthetic

    prepare_synthetic(
        f"{args.cache}/synthetic", vocab_size=1000, n_train=4000, n_eval=500, n_corpus=4000, seed=0
    )
    seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else [None]
    order = [("xmod-train", lambda seed: run_ours(args.cache, args.threads, ours, seed)),
             ("transformers Trainer", lambda seed: run_theirs(args.cache, args.threads, args.device, seed))]  # fmt: skip
    if args.before is not None:
        before = args.before.resolve()
        order.append((f"xmod-train ({before.name})", lambda seed: run_ours(args.cache, args.threads, ours, seed, before)))
    runs: dict[str, list[dict]] = {name: [] for name, _ in order}
    print(f"# load average at start: {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)", flush=True)
    for i in range(args.rounds):  # rotate who goes first
        seed = seeds[i % len(seeds)]
        for name, fn in order[i % len(order):] + order[: i % len(order)]:
            runs[name].append(fn(seed))
            print(f"# round {i + 1} (seed {runs[name][-1]['seed']}): {name} {runs[name][-1]['wall_s']:.1f} s "
                  f"(load {os.getloadavg()[0]:.1f})", flush=True)  # fmt: skip
    print(f"# load average at end: {os.getloadavg()[0]:.1f}")
    print("\n".join(summary(runs)))


if __name__ == "__main__":
    main()
