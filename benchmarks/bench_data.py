"""Data-layer throughput: tokenization (preprocessing) and collation (the DataLoader hot path).

    python benchmarks/bench_data.py                      # synthetic data, tokenizer trained on it
    python benchmarks/bench_data.py --tokenizer DIR      # e.g. a local copy of FacebookAI/xlm-roberta-base
    python benchmarks/bench_data.py --n 50000 --batch-size 32

Prints examples/s and tokens/s (non-pad tokens) per stage; single process, no workers (a DataLoader with
num_workers=N multiplies the collate figures roughly by N while cores are free).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import datasets  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from xmod_lab.data.collate import MaskedLMCollator, PadCollator  # noqa: E402
from xmod_lab.data.common import TaggedDataset  # noqa: E402
from xmod_lab.data.language_modeling import encode_text  # noqa: E402
from xmod_lab.data.question_answering import encode_qa  # noqa: E402
from xmod_lab.data.sampling import LanguageBatchSampler  # noqa: E402
from xmod_lab.data.sentence_pair import XNLI_LABELS, SentencePairDataModule, encode_sentence_pairs  # noqa: E402
from xmod_lab.data.sources import load_split  # noqa: E402
from xmod_lab.data.synthetic import prepare_synthetic  # noqa: E402
from xmod_lab.data.token_classification import PANX_LABELS, encode_tagged_words  # noqa: E402
from xmod_lab.data.tokenizer import load_tokenizer  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "xtreme-samples"


def report(stage: str, n: int, tokens: int, seconds: float) -> None:
    print(
        f"{stage:<34} {n:>8} ex  {n / seconds:>11,.0f} ex/s  {tokens / seconds:>13,.0f} tok/s  ({seconds:.2f} s)"
    )


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def count_tokens(ds: datasets.Dataset) -> int:
    return sum(len(x) if not x or not isinstance(x[0], list) else sum(map(len, x)) for x in ds["input_ids"])


def bench_collate(
    name: str, parts: list[tuple[datasets.Dataset, int]], collate, batch_size: int, mode: str
) -> None:
    data = TaggedDataset(parts)
    for offset in data.offsets[:-1]:  # build the in-memory row columns outside the timing (a one-off per run)
        data[int(offset)]
    loader = DataLoader(data, batch_sampler=LanguageBatchSampler(data.example_langs, batch_size, mode=mode),
                        collate_fn=collate)  # fmt: skip
    n = tokens = 0
    start = time.perf_counter()
    for batch in loader:
        n += batch["input_ids"].shape[0]
        tokens += int(batch["attention_mask"].sum())
    report(f"collate {name} ({mode}, B={batch_size})", n, tokens, time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=20000, help="synthetic examples per language (2 languages)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument(
        "--tokenizer", default=None, help="tokenizer dir or hub id (default: trained on the data)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    datasets.disable_progress_bars()

    with tempfile.TemporaryDirectory() as tmp:
        (root, secs) = timed(lambda: prepare_synthetic(Path(tmp) / "synthetic", ("en", "ru"), n_train=args.n,
                                                       n_eval=10, n_corpus=args.n))  # fmt: skip
        print(f"synthetic data + tokenizer for 2 languages x {args.n} rows: {secs:.2f} s")
        tok = load_tokenizer(args.tokenizer or str(root / "tokenizer"))
        print(f"tokenizer: {args.tokenizer or 'trained on the synthetic corpus'} ({len(tok)} tokens), "
              f"torch threads: {torch.get_num_threads()}\n")  # fmt: skip

        nli = {
            lang: load_split({"path": str(root / "xnli" / "{lang}" / "{split}.jsonl")}, lang, "train")
            for lang in ("en", "ru")
        }
        enc_nli = {}
        for lang, ds in nli.items():
            enc_nli[lang], secs = timed(lambda ds=ds, lang=lang: encode_sentence_pairs(
                ds, tok, ["premise", "hypothesis"], "label", XNLI_LABELS, args.max_length, lang))  # fmt: skip
            report(f"tokenize sentence pairs [{lang}]", len(ds), count_tokens(enc_nli[lang]), secs)
        panx = load_split({"path": str(root / "panx" / "{lang}" / "{split}.jsonl")}, "en", "train")
        enc_panx, secs = timed(
            lambda: encode_tagged_words(panx, tok, "tokens", "ner_tags", PANX_LABELS, args.max_length, "en")
        )
        report("tokenize + align word tags [en]", len(panx), count_tokens(enc_panx), secs)
        corpus = load_split({"path": str(root / "corpus" / "{lang}.txt")}, "en", "train")
        enc_lm, secs = timed(lambda: encode_text(corpus, tok, "text", args.max_length, True, "en"))
        report("tokenize + pack text lines [en]", len(corpus), count_tokens(enc_lm), secs)
        if SAMPLES.is_dir():
            xquad = load_split(
                {"path": str(SAMPLES / "xquad" / "{lang}" / "{split}.jsonl")}, "de", "validation"
            )
            cols = {"question": "question", "context": "context", "answers": "answers", "id": "id"}
            enc_qa, secs = timed(lambda: encode_qa(xquad, tok, cols, 384, 128, False, "de"))
            report("tokenize QA eval features [xquad de]", len(xquad), count_tokens(enc_qa), secs)
        print()

        parts = [(enc_nli["en"], 0), (enc_nli["ru"], 1)]
        for mode in ("mixed", "sorted", "homogeneous"):
            bench_collate("sentence pairs", parts, PadCollator(tok.pad_token_id), args.batch_size, mode)
        bench_collate("word tags", [(enc_panx, 0)], PadCollator(tok.pad_token_id), args.batch_size, "mixed")
        mlm = MaskedLMCollator(tok.pad_token_id, tok.mask_token_id, len(tok), tok.all_special_ids)
        bench_collate("MLM blocks + masking", [(enc_lm, 0)], mlm, args.batch_size, "mixed")
        if SAMPLES.is_dir():
            bench_collate(
                "QA eval features", [(enc_qa, 0)], PadCollator(tok.pad_token_id), args.batch_size, "mixed"
            )

        # The on-disk cache: a second run reads the tokenized splits instead of preprocessing them again.
        print()
        for run in ("cold (tokenize + write cache)", "warm (read cache)"):
            dm = SentencePairDataModule(
                source={"path": str(root / "xnli" / "{lang}" / "{split}.jsonl"), "splits": {"validation": None, "test": None}},
                tokenizer=str(root / "tokenizer"), languages=["en_XX", "ru_RU"], train_langs=["en", "ru"],
                max_length=args.max_length, cache_dir=str(Path(tmp) / "cache"),
            )  # fmt: skip
            dm.tokenizer  # noqa: B018 (loaded outside the timing)
            _, secs = timed(lambda dm=dm: dm.setup("fit"))
            print(f"SentencePairDataModule.setup('fit'), {run}: {secs:.2f} s for {2 * args.n} train rows")


if __name__ == "__main__":
    main()
