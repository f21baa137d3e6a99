"""The data benchmark runs (tiny size); it prints figures, the test only checks every stage reports."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_data.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_data", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_data_runs(monkeypatch, capsys):
    module = load_bench()
    monkeypatch.setattr(sys, "argv", ["bench_data.py", "--n", "120", "--batch-size", "16"])
    module.main()
    out = capsys.readouterr().out
    for stage in ("tokenize sentence pairs", "align word tags", "pack text lines", "collate sentence pairs (homogeneous",
                  "MLM blocks", "warm (read cache)"):  # fmt: skip
        assert stage in out
    assert "ex/s" in out and "tok/s" in out


@pytest.mark.slow
def test_bench_corpus_reports_one_and_two_processes_and_the_cache(tmp_path, tokenizer_dir):
    """`--corpus` prints both cold runs (same blocks: it exits non-zero otherwise), the warm run from the cache
    and the memory figures the targets are stated in."""
    load_bench().write_corpus(tmp_path / "c", 0.3)
    done = subprocess.run([sys.executable, str(BENCH), "--corpus", str(tmp_path / "c"), "--cache-root", str(tmp_path),
                           "--tokenizer", str(tokenizer_dir)], capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for line in ("cold, 1 process", "cold, 2 processes", "warm (read the cache)", "2 -> "):
        assert line in out, out
    assert out.count("built [True, True]") == 2 and "built [False, False]" in out
    assert out.count("anonymous") == 6 and out.count("MB text/s") == 3
