"""Data-layer throughput: tokenization (preprocessing) and collation (the DataLoader hot path).

    python benchmarks/bench_data.py                      # synthetic data, tokenizer trained on it
    python benchmarks/bench_data.py --tokenizer DIR      # e.g. a local copy of FacebookAI/xlm-roberta-base
    python benchmarks/bench_data.py --n 50000 --batch-size 32
    python benchmarks/bench_data.py --corpus DIR         # MLM corpus DIR/<lang>.txt: cold with 1 and 2 processes, then from cache
    python benchmarks/bench_data.py --corpus DIR --procs 2   # one cold run with 2 processes, then from cache
    python benchmarks/bench_data.py --write-corpus DIR --megabytes 300   # a synthetic en + ru corpus to try it on

Prints examples/s and tokens/s (non-pad tokens) per stage; single process, no workers (a DataLoader with
num_workers=N multiplies the collate figures roughly by N while cores are free).

``--corpus`` runs ``LanguageModelingDataModule.setup("fit")`` in a fresh process per measurement: cold (empty
cache: read, tokenize, pack, write) once per entry of ``--procs`` (default ``1,2`` tokenizing processes, so the
two figures come from one run on the same machine load and their ratio is meaningful), then warm from the cache
the last one wrote. For each: setup wall time, text MB/s, MB of text per CPU second, tokens/s per process, the
blocks written, and peak memory sampled every 50 ms over the main process and its workers: PSS (a page shared
by forked workers counted once), its anonymous part (the rest is pages of memory-mapped files: clean page cache
the kernel can drop), the largest single-process RSS and the RSS summed over processes (a page shared by n
processes counted n times), with the same figures before setup. ``TOKENIZERS_PARALLELISM=false`` (set here unless already set):
one process is one core.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import datasets  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from xmod_lab.data.collate import MaskedLMCollator, PadCollator  # noqa: E402
from xmod_lab.data.common import TaggedDataset  # noqa: E402
from xmod_lab.data.corpus import BlockEncoder, BlockSpec  # noqa: E402
from xmod_lab.data.language_modeling import LanguageModelingDataModule  # noqa: E402
from xmod_lab.data.question_answering import encode_qa  # noqa: E402
from xmod_lab.data.sampling import LanguageBatchSampler  # noqa: E402
from xmod_lab.data.sentence_pair import XNLI_LABELS, SentencePairDataModule, encode_sentence_pairs  # noqa: E402
from xmod_lab.data.sources import load_split  # noqa: E402
from xmod_lab.data.synthetic import ALL_LANGUAGES, corpus_line, make_language, prepare_synthetic  # noqa: E402
from xmod_lab.data.token_classification import PANX_LABELS, encode_tagged_words  # noqa: E402
from xmod_lab.data.tokenizer import load_tokenizer, train_tokenizer  # noqa: E402

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


def write_corpus(out: Path, megabytes: float, langs: tuple[str, ...] = ("en", "ru"), seed: int = 0) -> None:
    """``out/<lang>.txt`` of about ``megabytes`` MB each: lines drawn from 20k synthetic sentences per language."""
    out.mkdir(parents=True, exist_ok=True)
    for lang in langs:
        rng = random.Random(f"{seed}:{lang}")
        language = make_language(lang, seed)
        pool = [corpus_line(rng, language) for _ in range(20_000)]
        written = 0
        with open(out / f"{lang}.txt", "w", encoding="utf-8") as f:
            while written < megabytes * 1e6:
                chunk = "\n".join(rng.choices(pool, k=5000)) + "\n"
                f.write(chunk)
                written += len(chunk.encode())
    print(f"wrote {len(langs)} x {megabytes} MB of text to {out}")


def _memory(pid: int) -> tuple[int, int, int]:
    """(RSS, PSS, anonymous PSS) in bytes. PSS counts a page shared by forked workers once over all of them; the
    anonymous part leaves out pages of memory-mapped files (clean page cache the kernel can drop)."""
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in ("Rss", "Pss", "Pss_Anon"):
                fields[name] = int(rest.split()[0]) * 1024
    return fields.get("Rss", 0), fields.get("Pss", 0), fields.get("Pss_Anon", 0)


def _peak_memory(stop: threading.Event, out: list[int]) -> None:
    """Every 50 ms, over this process and its workers: out = [largest RSS of one process, peak PSS sum, peak
    anonymous PSS sum, peak RSS sum (a shared page counted in every process that maps it)]."""
    import psutil

    me = psutil.Process()
    while not stop.is_set():
        sums = [0, 0, 0]
        for p in [me, *me.children(recursive=True)]:
            try:
                rss, pss, anon = _memory(p.pid)
            except OSError:
                continue
            out[0] = max(out[0], rss)
            sums = [sums[0] + pss, sums[1] + anon, sums[2] + rss]
        out[1], out[2], out[3] = max(out[1], sums[0]), max(out[2], sums[1]), max(out[3], sums[2])
        stop.wait(0.05)


def setup_once(corpus: Path, langs: list[str], tokenizer: str, cache: str, max_length: int, num_proc: int) -> dict:
    """One ``setup('fit')`` in this process: the figures as a dict (run in a fresh process per measurement)."""
    datasets.disable_progress_bars()
    dm = LanguageModelingDataModule(
        source={"path": str(corpus / "{lang}.txt"), "splits": {"validation": None, "test": None}},
        tokenizer=tokenizer, languages=[f"{lang}_XX" for lang in langs], language_map={lang: f"{lang}_XX" for lang in langs},
        train_langs=langs, max_length=max_length, cache_dir=cache, num_proc=num_proc,
    )  # fmt: skip
    dm.tokenizer  # noqa: B018 (loaded outside the timing)
    before = _memory(os.getpid())
    peak, stop = [0, 0, 0, 0], threading.Event()
    sampler = threading.Thread(target=_peak_memory, args=(stop, peak), daemon=True)
    sampler.start()
    start, cpu = time.perf_counter(), time.process_time()
    dm.setup("fit")
    wall = time.perf_counter() - start
    stop.set()
    sampler.join()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    blocks = dm._data["train"]
    mb = 2**20
    return {
        "wall_s": wall, "main_cpu_s": time.process_time() - cpu, "children_cpu_s": children.ru_utime + children.ru_stime,
        "rss_before_mb": before[0] / mb, "pss_before_mb": before[1] / mb, "anon_before_mb": before[2] / mb,
        "peak_rss_main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_rss_worker_mb": children.ru_maxrss / 1024, "peak_rss_one_mb": peak[0] / mb,
        "peak_rss_sum_mb": peak[3] / mb, "peak_pss_mb": peak[1] / mb, "peak_anon_mb": peak[2] / mb,
        "blocks": sum(b.blocks for b in blocks), "tokens": sum(b.tokens for b in blocks),
        "built": [b.built for b in blocks], "num_proc": num_proc,
    }  # fmt: skip


def _run_setup(corpus: Path, langs: list[str], tokenizer: str, cache: Path, max_length: int, num_proc: int) -> dict:
    cmd = [sys.executable, __file__, "--_setup-once",
           json.dumps([str(corpus), langs, tokenizer, str(cache), max_length, num_proc])]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"setup failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _describe(run: str, r: dict, megabytes: float) -> str:
    return (
        f"{run}: setup {r['wall_s']:.2f} s, {megabytes / r['wall_s']:.2f} MB text/s, "
        f"{r['tokens'] / r['wall_s'] / r['num_proc']:,.0f} tokens/s per process, "
        f"CPU {r['main_cpu_s'] + r['children_cpu_s']:.1f} s ({megabytes / (r['main_cpu_s'] + r['children_cpu_s']):.2f} "
        f"MB text/CPU-s), {r['blocks']:,} blocks ({r['tokens']:,} tokens), built {r['built']}\n"
        f"    peak memory: PSS {r['peak_pss_mb']:.0f} MB (anonymous {r['peak_anon_mb']:.0f} MB, mapped files "
        f"{r['peak_pss_mb'] - r['peak_anon_mb']:.0f} MB) over the main process and its workers; RSS "
        f"{r['peak_rss_main_mb']:.0f} MB main / {r['peak_rss_worker_mb']:.0f} MB largest worker / "
        f"{r['peak_rss_sum_mb']:.0f} MB summed over processes; before setup: RSS "
        f"{r['rss_before_mb']:.0f} MB, PSS {r['pss_before_mb']:.0f} MB, anonymous {r['anon_before_mb']:.0f} MB"
    )


def bench_corpus(args: argparse.Namespace) -> None:
    corpus = Path(args.corpus)
    langs = sorted(p.stem for p in corpus.glob("*.txt"))
    if not langs:
        raise SystemExit(f"--corpus {corpus}: no <lang>.txt files there.")
    megabytes = sum((corpus / f"{lang}.txt").stat().st_size for lang in langs) / 1e6
    procs = [int(p) for p in args.procs.split(",")]
    with tempfile.TemporaryDirectory(dir=args.cache_root) as tmp:
        tokenizer = args.tokenizer
        if tokenizer is None:
            sample = []
            for lang in langs:
                with open(corpus / f"{lang}.txt", encoding="utf-8") as f:
                    sample += [line for _, line in zip(range(5000), f, strict=False)]
            tokenizer = str(Path(tmp) / "tokenizer")
            train_tokenizer(sample, 4000, tokenizer)
        print(f"corpus {corpus}: {', '.join(langs)}, {megabytes:.1f} MB of text; tokenizer {tokenizer}; "
              f"max_length {args.max_length}; TOKENIZERS_PARALLELISM={os.environ.get('TOKENIZERS_PARALLELISM')}")  # fmt: skip
        cold = {}
        for n in procs:  # each cold run in its own empty cache; the last one's cache serves the warm run
            cache = Path(tmp) / f"cache-{n}"
            cold[n] = _run_setup(corpus, langs, tokenizer, cache, args.max_length, n)
            print(_describe(f"cold, {n} process{'es' if n > 1 else ''} (tokenize + pack + write cache)", cold[n], megabytes))
            if len(procs) > 1 and n != procs[-1]:
                shutil.rmtree(cache)  # disk: one cache at a time
        warm = _run_setup(corpus, langs, tokenizer, cache, args.max_length, procs[-1])
        print(_describe("warm (read the cache)", warm, megabytes))
        if len(procs) > 1:
            base = cold[procs[0]]["wall_s"]
            print("throughput relative to " + f"{procs[0]} process(es): " +
                  ", ".join(f"{n} -> {base / cold[n]['wall_s']:.2f}x" for n in procs))  # fmt: skip
        if cold[procs[-1]]["blocks"] != cold[procs[0]]["blocks"]:
            raise SystemExit("the number of processes changed the blocks")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--_setup-once":
        print(json.dumps(setup_once(Path(json.loads(sys.argv[2])[0]), *json.loads(sys.argv[2])[1:])))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", default=None, help="directory of <lang>.txt files: benchmark MLM corpus setup")
    parser.add_argument("--procs", default="1,2",
                        help="--corpus: tokenizing processes of the cold runs, comma-separated (default 1,2)")
    parser.add_argument("--cache-root", default=None, help="--corpus: where the temporary cache goes (default: TMPDIR)")
    parser.add_argument("--write-corpus", default=None, help="write a synthetic en + ru corpus to this directory")
    parser.add_argument("--megabytes", type=float, default=60.0, help="--write-corpus: MB of text per language")
    parser.add_argument("--n", type=int, default=5000,
                        help="synthetic examples per language (all languages are generated; en and ru are timed)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=None, help="tokens per example (default 128; --corpus: 512)")
    parser.add_argument(
        "--tokenizer", default=None, help="tokenizer dir or hub id (default: trained on the data)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    if args.write_corpus:
        write_corpus(Path(args.write_corpus), args.megabytes)
        return
    if args.corpus:
        args.max_length = args.max_length or 512
        bench_corpus(args)
        return
    args.max_length = args.max_length or 128
    torch.set_num_threads(args.threads)
    datasets.disable_progress_bars()

    with tempfile.TemporaryDirectory() as tmp:
        (root, secs) = timed(lambda: prepare_synthetic(Path(tmp) / "synthetic", n_train=args.n, n_eval=10,
                                                       n_corpus=args.n))  # fmt: skip
        print(f"synthetic data + tokenizer for {len(ALL_LANGUAGES)} languages x {args.n} rows: {secs:.2f} s "
              "(en and ru are benchmarked below)")
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
        encoder = BlockEncoder(tok, BlockSpec("text", args.max_length, True, tok.cls_token_id, tok.sep_token_id))
        enc_lm, secs = timed(lambda: datasets.Dataset(encoder(corpus.data.table, range(len(corpus)))))
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
