"""The data benchmark runs (tiny size); it prints figures, the test only checks every stage reports."""

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_data.py"


def test_bench_data_runs(monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("bench_data", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", ["bench_data.py", "--n", "120", "--batch-size", "16"])
    module.main()
    out = capsys.readouterr().out
    for stage in ("tokenize sentence pairs", "align word tags", "pack text lines", "collate sentence pairs (homogeneous",
                  "MLM blocks", "warm (read cache)"):  # fmt: skip
        assert stage in out
    assert "ex/s" in out and "tok/s" in out
