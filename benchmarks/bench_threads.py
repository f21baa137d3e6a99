"""Torch threads for the default job (`torch_threads` in conf/train.yaml): its training steps and evaluation batches
timed under each thread count, interleaved, on the same batches.

    .venv/bin/python benchmarks/bench_threads.py                  # threads 1 and torch's default (the cores)
    .venv/bin/python benchmarks/bench_threads.py --threads 1,2,4 --rounds 40

The default job's pieces (the recipe of benchmarks/trainer_nli.py, read from the conf files): our
XmodForSequenceClassification at model=tiny's sizes, the synthetic NLI data under outputs/.cache, AdamW (fused, two
weight-decay groups as configure_adamw builds them), gradient clipping 1.0. Each round takes the next `--steps`
training batches and one validation batch of each language and runs them under every thread count in turn (the
order rotates): load that comes and goes hits every setting alike. Prints medians per step and per evaluation batch.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(ROOT / "benchmarks"))

from trainer_nli import recipe  # noqa: E402

from xmod_lab.data.synthetic import prepare_synthetic, synthetic_nli  # noqa: E402
from xmod_lab.models import XmodConfig, XmodForSequenceClassification  # noqa: E402
from xmod_lab.tasks.common import model_inputs, parameter_groups  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = torch.get_num_threads()
    p.add_argument("--threads", default=f"1,{default}", help=f"comma-separated (torch's default here: {default})")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--steps", type=int, default=4, help="training steps per round and setting")
    p.add_argument("--cache", default=os.environ.get("XMOD_CACHE", str(ROOT / "outputs" / ".cache")))
    args = p.parse_args(argv)
    settings = sorted({int(t) for t in args.threads.split(",")})
    rec = recipe()
    folder = prepare_synthetic(f"{args.cache}/synthetic", **rec["generation"])
    dm = synthetic_nli(
        root=str(folder), languages=rec["adapters"], train_langs=rec["train"], eval_langs=rec["eval"],
        n_corpus=rec["generation"]["n_corpus"], max_length=rec["max_length"], batch_size=rec["batch_size"],
        eval_batch_size=rec["eval_batch_size"], cache_dir=f"{args.cache}/tokenized",
    )  # fmt: skip
    dm.setup("fit")
    torch.manual_seed(rec["seed"])
    model = XmodForSequenceClassification(XmodConfig(
        vocab_size=len(dm.tokenizer), **rec["model"], languages=rec["adapters"], num_labels=3,
        pad_token_id=dm.tokenizer.pad_token_id,
    ))  # fmt: skip
    opt = rec["optimizer"]
    optimizer = torch.optim.AdamW(parameter_groups(model, opt["weight_decay"]), lr=opt["lr"], betas=tuple(opt["betas"]),
                                  eps=opt["eps"], fused=True)  # fmt: skip
    train = itertools.cycle(list(dm.train_dataloader()))
    evals = [next(iter(loader)) for loader in dm.val_dataloader()]

    def step(batch) -> float:
        t0 = time.perf_counter()
        model.train()
        loss = model(**model_inputs(batch)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), rec["max_grad_norm"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    @torch.no_grad()
    def evaluate(batch) -> float:
        t0 = time.perf_counter()
        model.eval()
        model(**model_inputs({k: v for k, v in batch.items() if k != "labels"}))
        return time.perf_counter() - t0

    steps: dict[int, list[float]] = {t: [] for t in settings}
    eval_times: dict[int, list[float]] = {t: [] for t in settings}
    step(next(train))  # warm-up: optimizer state, allocator
    for r in range(args.rounds):
        batches = [next(train) for _ in range(args.steps)]
        order = settings[r % len(settings):] + settings[: r % len(settings)]
        for t in order:
            torch.set_num_threads(t)
            steps[t] += [step(b) for b in batches]
            eval_times[t] += [evaluate(b) for b in evals]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# default job, {args.rounds} rounds x {args.steps} steps, {os.cpu_count()} cores, load average {load:.1f}")
    print("| torch threads | training step ms (median) | evaluation batch ms (median) | step vs 1 thread |")
    print("|---------------|---------------------------|------------------------------|------------------|")
    base = statistics.median(steps[settings[0]])
    for t in settings:
        s, e = statistics.median(steps[t]), statistics.median(eval_times[t])
        print(f"| {t:>13} | {1000 * s:>25.1f} | {1000 * e:>28.1f} | {base / s:>15.2f}x |")


if __name__ == "__main__":
    main()
