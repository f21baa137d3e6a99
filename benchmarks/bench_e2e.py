"""The whole default fine-tuning job, ours against a transformers Trainer script, on the same files.

    .venv/bin/python benchmarks/bench_e2e.py                 # 1 round: xmod-train, then the Trainer script
    .venv/bin/python benchmarks/bench_e2e.py --rounds 3      # alternating, medians
    .venv/bin/python benchmarks/bench_e2e.py --threads 1     # both with 1 torch thread
    .venv/bin/python benchmarks/bench_e2e.py --before /tmp/old-checkout   # also xmod-train of another checkout
    .venv/bin/python benchmarks/bench_e2e.py --device cuda   # trainer=gpu (bf16-mixed) vs the script with bf16

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


def run_ours(cache: str, threads: int | None, extra: list[str], root: Path = ROOT) -> dict:
    """``xmod-train pretrain=none freeze=none`` of the checkout at ``root`` (its own xmod_lab first on the path)."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-c", "from xmod_lab.cli import train; train()", "pretrain=none", "freeze=none",
               f"hydra.run.dir={out}/run", *extra]  # fmt: skip
        if threads is not None:
            cmd.append(f"torch_threads={threads}")
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
    threads_used = next((line.split(":", 1)[1].split("#")[0].strip() for line in config
                         if line.startswith("torch_threads:")), "?")
    return {"runner": "xmod-train", "wall_s": wall, "test_acc": acc, "threads": threads_used}


def run_theirs(cache: str, threads: int | None, device: str = "cpu") -> dict:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "trainer_nli.py"), "--root", f"{cache}/synthetic",
           "--device", device]  # fmt: skip
    if threads is not None:
        cmd += ["--threads", str(threads)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"the Trainer script failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"runner": "transformers Trainer", "wall_s": wall, "test_acc": result["test_acc"], "threads": result["threads"]}


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
    order = [("xmod-train", lambda: run_ours(args.cache, args.threads, ours)),
             ("transformers Trainer", lambda: run_theirs(args.cache, args.threads, args.device))]  # fmt: skip
    if args.before is not None:
        before = args.before.resolve()
        order.append((f"xmod-train ({before.name})", lambda: run_ours(args.cache, args.threads, ours, before)))
    runs: dict[str, list[dict]] = {name: [] for name, _ in order}
    print(f"# load average at start: {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)", flush=True)
    for i in range(args.rounds):  # rotate who goes first
        for name, fn in order[i % len(order):] + order[: i % len(order)]:
            runs[name].append(fn())
            print(f"# round {i + 1}: {name} {runs[name][-1]['wall_s']:.1f} s", flush=True)
    print(f"# load average at end: {os.getloadavg()[0]:.1f}")
    print(f"| {'runner':<20} | threads | wall s (median of {args.rounds}) | train examples/s | test acc en | "
          "test acc mean |")  # fmt: skip
    print("|----------------------|---------|----------------|------------------|-------------|---------------|")
    walls = {}
    for name, results in runs.items():
        wall = statistics.median(r["wall_s"] for r in results)
        walls[name] = wall
        acc = results[-1]["test_acc"]
        mean = sum(acc.values()) / len(acc)
        print(f"| {name:<20} | {results[-1]['threads']!s:>7} | {wall:>14.1f} | {EPOCHS * TRAIN_EXAMPLES / wall:>16.1f} | "
              f"{acc['en']:>11.2f} | {mean:>13.2f} |")  # fmt: skip
    print(
        f"# whole job: Trainer script / xmod-train = {walls['transformers Trainer'] / walls['xmod-train']:.2f}x "
        "(target >= 1.2x at equal or better accuracy); examples/s counts the whole run's wall time"
    )


if __name__ == "__main__":
    main()
