"""Smoke test of `make bench`: the model benchmark runs at tiny size and prints its table.

Figures are not asserted (no timed tests); only that every section completes and reports.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_model_tiny_completes_and_prints_its_table():
    args = [
        "--size",
        "tiny",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--batch",
        "2",
        "--seq",
        "16",
        "--batches",
        "one,unsorted8",
    ]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_model.py"), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "| section" in out and "A tok/s" in out
    assert "max |logits ours - transformers| = " in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "section" not in line]
    sections = {line.split("|")[1].strip() for line in rows}
    assert {"vs-hf", "81-vs-1", "attention", "ckpt"} <= sections
    modes = {line.split("|")[2].strip() for line in rows if line.split("|")[1].strip() == "vs-hf"}
    assert modes == {"pretrain", "finetune", "inference"}
    assert "# targets (this run):" in out and "tokenize + MLM collate" in out
