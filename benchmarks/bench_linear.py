"""A float32 linear layer at inference: torch's default CPU matmul (MKL) against oneDNN, as the LM head's decoder
chooses (xmod_lab/models/kernels.py). Interleaved repetitions, medians, GFLOP/s.

    .venv/bin/python benchmarks/bench_linear.py                     # base shapes: decoder rows 1-1,024, layers
    .venv/bin/python benchmarks/bench_linear.py --threads 1 --reps 7
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from xmod_lab.models.kernels import linear, onednn_applies  # noqa: E402

# (rows, in, out): the base LM head's decoder at several row counts (generation decodes one row per sequence),
# then the base layer's projections and FFN at 1,024 tokens.
SHAPES = [(1024, 768, 250002), (128, 768, 250002), (8, 768, 250002), (1, 768, 250002),
          (1024, 768, 768), (1024, 768, 3072), (1024, 3072, 768)]  # fmt: skip


def time_pair(rows: int, d_in: int, d_out: int, reps: int) -> tuple[float, float, float]:
    torch.manual_seed(0)
    layer, x = nn.Linear(d_in, d_out), torch.randn(rows, d_in)
    times: dict[str, list[float]] = {"mkl": [], "onednn": []}
    with torch.no_grad():
        assert onednn_applies(layer, x), "oneDNN does not apply on this machine / torch build"
        with torch.backends.mkldnn.flags(enabled=False):
            reference = linear(layer, x)
        diff = (linear(layer, x) - reference).abs().max().item()
        for r in range(reps):  # alternate who goes first
            for name in ("mkl", "onednn") if r % 2 == 0 else ("onednn", "mkl"):
                with torch.backends.mkldnn.flags(enabled=name == "onednn"):
                    t0 = time.perf_counter()
                    linear(layer, x)
                    times[name].append(time.perf_counter() - t0)
    return statistics.median(times["mkl"]), statistics.median(times["onednn"]), diff


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"# torch {torch.__version__}, {args.threads} threads, medians of {args.reps}, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}")  # fmt: skip
    print("| rows x in x out | MKL ms | oneDNN ms | MKL / oneDNN | GFLOP/s MKL, oneDNN | max abs diff |")
    print("|---|---|---|---|---|---|")
    for rows, d_in, d_out in SHAPES:
        mkl, dnn, diff = time_pair(rows, d_in, d_out, args.reps)
        flop = 2 * rows * d_in * d_out / 1e9
        print(f"| {rows} x {d_in} x {d_out} | {1e3 * mkl:.1f} | {1e3 * dnn:.1f} | {mkl / dnn:.2f} | "
              f"{flop / mkl:.0f}, {flop / dnn:.0f} | {diff:.1e} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
