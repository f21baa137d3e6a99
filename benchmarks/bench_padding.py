"""How much of the default job's batches is padding: in-order vs length-sorted evaluation batches, mixed vs
length-grouped training batches (the datamodule options ``sort_eval_by_length`` / ``group_by_length``).

    .venv/bin/python benchmarks/bench_padding.py      # reads/generates the synthetic data under outputs/.cache
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from xmod_lab.data.synthetic import synthetic_nli  # noqa: E402

ADAPTERS = ["en_XX", "de_DE", "fr_XX", "ru_RU", "zh_CN"]


def padding_fraction(loader) -> float:
    real = padded = 0
    for batch in loader:
        mask = batch["attention_mask"]
        real += int(mask.sum())
        padded += mask.numel()
    return 1 - real / padded


def main() -> None:
    cache = os.environ.get("XMOD_CACHE", str(ROOT / "outputs" / ".cache"))
    for grouped in (False, True):
        dm = synthetic_nli(
            root=f"{cache}/synthetic", languages=ADAPTERS, train_langs=["en"], eval_langs=["en", "de", "fr", "ru", "zh"],
            n_corpus=4000, max_length=64, batch_size=32, eval_batch_size=128, cache_dir=None,
            group_by_length=grouped, sort_eval_by_length=grouped,
        )  # fmt: skip
        dm.setup("fit")
        train = padding_fraction(dm.train_dataloader())
        evals = ", ".join(f"{padding_fraction(loader):.1%}" for loader in dm.val_dataloader())
        print(f"group_by_length={grouped}, sort_eval_by_length={grouped}: training batches {train:.1%} padding; "
              f"validation batches (en, de, fr, ru, zh) {evals}")  # fmt: skip


if __name__ == "__main__":
    main()
