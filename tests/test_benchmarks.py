"""Smoke test of `make bench`: the model benchmark runs at tiny size and prints its table; the end-to-end
section's Trainer script runs the job xmod-train composes.

Figures are not asserted (no timed tests); only that every section completes and reports.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.tasks.run_helpers import compose_run, no_hydra
from xmod_lab.data.synthetic_world import WORLD_DEFAULTS

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
    assert {"vs-hf", "81-vs-1", "attention", "ckpt", "kernels"} <= sections
    modes = {line.split("|")[2].strip() for line in rows if line.split("|")[1].strip() == "vs-hf"}
    assert modes == {"pretrain", "finetune", "inference"}
    assert "# targets (this run):" in out and "tokenize + MLM collate" in out


def test_the_trainer_script_runs_the_recipe_xmod_train_composes(tmp_path):
    """bench_e2e compares `xmod-train pretrain=none freeze=none` with benchmarks/trainer_nli.py: the script's
    settings must be the composed job's, or the comparison times (and scores) two different jobs."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from trainer_nli import recipe
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    with no_hydra():
        cfg = compose_run("train", tmp_path / "run", tmp_path / "cache", ["pretrain=none", "freeze=none"])
    rec = recipe()
    assert rec["optimizer"] == OmegaConf.to_container(cfg.optimizer)
    assert rec["scheduler"] == OmegaConf.to_container(cfg.scheduler)
    assert (rec["seed"], rec["epochs"], rec["max_grad_norm"]) == (cfg.seed, cfg.trainer.max_epochs,
                                                                  cfg.trainer.gradient_clip_val)
    data = cfg.data
    assert (rec["batch_size"], rec["eval_batch_size"], rec["max_length"]) == (data.batch_size, data.eval_batch_size,
                                                                              data.max_length)
    assert rec["generation"] == {k: data[k] for k in ("vocab_size", "n_train", "n_eval", "n_corpus", "seed")}
    assert rec["world"] == {k: data[k] for k in WORLD_DEFAULTS}  # the same generated folder, world included
    assert rec["model"] == {k: v for k, v in OmegaConf.to_container(cfg.model.config).items() if k != "vocab_size"}
    assert cfg.model.pretrained is None and cfg.freeze.policy == "none"  # a fresh model, everything trains
    assert (rec["adapters"], rec["train"], rec["eval"]) == (list(cfg.languages.adapters), list(cfg.languages.train),
                                                            list(cfg.languages.eval))


def test_the_end_to_end_table_gives_each_runner_its_own_median_and_seed_spread():
    """bench_e2e's figures: wall time as each runner's median over its rounds, accuracy as mean +- sd over its
    seeds (not the last round's value), and the ratio of the two medians."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from bench_e2e import summary
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))

    def run(wall, en, seed):
        return {"wall_s": wall, "test_acc": {"en": en, "de": en - 10}, "threads": 1, "seed": str(seed)}

    lines = summary({
        "xmod-train": [run(60.0, 60.0, 0), run(70.0, 64.0, 1), run(100.0, 62.0, 2)],
        "transformers Trainer": [run(90.0, 50.0, 0), run(84.0, 54.0, 1), run(80.0, 58.0, 2)],
    })  # fmt: skip
    ours, theirs = (next(line for line in lines if line.startswith(f"| {name} |"))
                    for name in ("xmod-train", "transformers Trainer"))  # fmt: skip
    assert "| 0,1,2 | 70.0 (60.0-100.0) |" in ours and "| 84.0 (80.0-90.0) |" in theirs
    assert "| 62.00 +- 2.00 | 57.00 +- 2.00 |" in ours  # en; the mean of en and de = en - 5
    assert "| 54.00 +- 4.00 | 49.00 +- 4.00 |" in theirs
    assert "= 1.20x" in lines[-1]  # 84 / 70
    one = summary({"xmod-train": [run(60.0, 61.0, 0)], "transformers Trainer": [run(90.0, 50.0, 0)]})
    assert "| 61.00 | 56.00 |" in one[2]  # a single run: its value, no spread
