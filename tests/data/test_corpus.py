"""LM corpus preparation: packing, holdout, the shared cache, streaming, parallel workers, flat memory."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pytest

from tests.data.conftest import MODEL_LANGUAGES, write_jsonl
from xmod_lab.data.corpus import (
    BlockDataset,
    BlockEncoder,
    BlockSpec,
    _GroupEncoder,
    _SequentialRows,
    held_out,
    open_rows,
    text_to_arrow,
)
from xmod_lab.data.language_modeling import LanguageModelingDataModule
from xmod_lab.data.sources import SourceSpec
from xmod_lab.data.tokenizer import load_tokenizer


def lm(tmp_path, tokenizer_dir, source, **kw):
    args = dict(source=source, tokenizer=str(tokenizer_dir), languages=MODEL_LANGUAGES, train_langs=["en", "de"],
                max_length=16, batch_size=4, cache_dir=str(tmp_path / "cache"), num_proc=1)  # fmt: skip
    args.update(kw)
    return LanguageModelingDataModule(**args)


def rows_of(blocks):
    return [list(r["input_ids"]) for r in BlockDataset([(blocks.dataset, 0)])]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Two languages as plain text and as JSONL, with blank lines to drop."""
    root = tmp_path_factory.mktemp("corpus")
    for lang in ("en", "de"):
        lines = [f"Anna {i % 7} Ben {lang} {i}" if i % 11 else "  " for i in range(300)]
        (root / f"{lang}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        write_jsonl(root / "jsonl" / f"{lang}.jsonl", [{"text": t} for t in lines])
    return root


def test_packing_is_the_token_stream_cut_into_blocks(tokenizer_dir):
    tok = load_tokenizer(str(tokenizer_dir))
    texts = [f"Anna {i} Ben Paris river city {i * 7}" for i in range(40)] + ["", "   "]
    spec = BlockSpec("text", 16, True, tok.cls_token_id, tok.sep_token_id)
    out = BlockEncoder(tok, spec)(pa.table({"text": texts}), range(len(texts))).column("input_ids").to_pylist()
    stream = [t for text in texts if text.strip() for t in tok(text, add_special_tokens=False)["input_ids"]]
    assert all(b[0] == tok.cls_token_id and b[-1] == tok.sep_token_id for b in out)
    assert [len(b) for b in out[:-1]] == [16] * (len(out) - 1) and 2 < len(out[-1]) <= 16
    assert [t for b in out for t in b[1:-1]] == stream  # nothing dropped, nothing reordered
    lines = BlockEncoder(tok, BlockSpec("text", 16, False, tok.cls_token_id, tok.sep_token_id))
    per_line = lines(pa.table({"text": texts}), range(len(texts))).column("input_ids").to_pylist()
    assert len(per_line) == 40 and per_line[3] == tok(texts[3], max_length=16, truncation=True)["input_ids"]


def test_blocks_ignore_the_padding_and_truncation_a_tokenizer_remembers(tokenizer_dir):
    """transformers 5 leaves padding (and truncation) on in the Rust backend after a call that asked for them, and
    save_pretrained writes it to tokenizer.json; the cache key leaves that state out, so the blocks must too
    (a run that padded a batch before tokenizing, or an export saved after one, made padded blocks)."""
    texts = [f"Anna {i} Ben Paris river city {i * 7}" for i in range(40)]
    clean = load_tokenizer(str(tokenizer_dir))
    for packed in (True, False):
        spec = BlockSpec("text", 16, packed, clean.cls_token_id, clean.sep_token_id)
        want = BlockEncoder(clean, spec)(pa.table({"text": texts}), range(40)).column("input_ids").to_pylist()
        used = load_tokenizer(str(tokenizer_dir))
        used(["Anna", "Anna 1 Ben Paris river city 7"], padding=True, truncation=True, max_length=5)
        assert used.backend_tokenizer.padding is not None and used.backend_tokenizer.truncation is not None
        got = BlockEncoder(used, spec)(pa.table({"text": texts}), range(40)).column("input_ids").to_pylist()
        assert got == want and clean.pad_token_id not in {t for b in got for t in b}
        assert used.backend_tokenizer.padding is not None  # the caller's tokenizer is left as it was


def test_holdout_hash_is_stable_and_near_the_fraction():
    idx = np.arange(100_000)
    out = held_out(idx, 0.05, seed=3)
    assert abs(out.mean() - 0.05) < 0.003
    assert np.array_equal(out[500:900], held_out(idx[500:900], 0.05, seed=3))  # a row's fate ignores batching
    assert not np.array_equal(out, held_out(idx, 0.05, seed=4))


def test_blocks_are_cached_keyed_and_shared(tmp_path, tokenizer_dir, corpus):
    src = {"path": str(corpus / "{lang}.txt"), "splits": {"validation": None, "test": None}}
    first = lm(tmp_path, tokenizer_dir, src)
    first.setup("fit")
    again = lm(tmp_path, tokenizer_dir, src)
    again.setup("fit")
    assert [b.built for b in first._data["train"]] == [True, True]
    assert [b.built for b in again._data["train"]] == [False, False]
    assert rows_of(first._data["train"][1]) == rows_of(again._data["train"][1])
    other = lm(tmp_path, tokenizer_dir, src, max_length=24)  # another setting: another entry
    other.setup("fit")
    assert other._data["train"][0].built and max(map(len, rows_of(other._data["train"][0]))) == 24
    os.utime(corpus / "de.txt", ns=(1, 1))  # the source changed: de is prepared again, en is not
    changed = lm(tmp_path, tokenizer_dir, src)
    changed.setup("fit")
    assert [b.built for b in changed._data["train"]] == [False, True]


def test_streaming_and_parallel_workers_give_the_same_blocks(tmp_path, tokenizer_dir, corpus):
    src = {"path": str(corpus / "jsonl" / "{lang}.jsonl"), "splits": {"validation": None, "test": None}}
    kw = dict(holdout=0.1, batch_lines=64, eval_langs=["de"])
    mapped = lm(tmp_path / "a", tokenizer_dir, src, **kw)
    streamed = lm(tmp_path / "b", tokenizer_dir, src, streaming=True, **kw)
    parallel = lm(tmp_path / "c", tokenizer_dir, src, num_proc=2, **kw)
    for dm in (mapped, streamed, parallel):
        dm.setup("fit")
    for split in ("train", "validation"):
        reference = [rows_of(b) for b in mapped._data[split]]
        assert [rows_of(b) for b in streamed._data[split]] == reference, split
        assert [rows_of(b) for b in parallel._data[split]] == reference, split
    n_train, n_val = mapped._data["train"][1].tokens, mapped._data["validation"][0].tokens
    assert 0.05 < n_val / (n_train + n_val) < 0.2


def test_bad_sources_name_the_problem(tmp_path, tokenizer_dir, corpus):
    with pytest.raises(ValueError, match="missing column 'body'"):
        lm(tmp_path, tokenizer_dir, {"path": str(corpus / "jsonl" / "{lang}.jsonl")}, text_column="body",
           holdout=0.1).setup("fit")  # fmt: skip
    with pytest.raises(FileNotFoundError, match="nowhere/en.txt"):
        lm(tmp_path, tokenizer_dir, {"path": str(tmp_path / "nowhere" / "{lang}.txt")}, holdout=0.1).setup("fit")
    (tmp_path / "blank").mkdir()
    for lang in ("en", "de"):
        (tmp_path / "blank" / f"{lang}.txt").write_text("\n  \n\n")
    with pytest.raises(ValueError, match="no non-empty text"):
        lm(tmp_path, tokenizer_dir, {"path": str(tmp_path / "blank" / "{lang}.txt")}, holdout=0.1).setup("fit")


MEASURE = textwrap.dedent("""
    import json, sys, threading
    import datasets
    from xmod_lab.data import corpus as prep
    from xmod_lab.data.language_modeling import LanguageModelingDataModule
    datasets.disable_progress_bars()
    prep._BATCH_BYTES = 1 << 20  # record batches of 1 MB, so that both corpora span many (8 MB by default)
    corpus, tok, cache = sys.argv[1:4]
    dm = LanguageModelingDataModule(source={"path": corpus + "/{lang}.txt", "splits": {"validation": None, "test": None}},
        tokenizer=tok, languages=["en_XX"], train_langs=["en"], max_length=64, cache_dir=cache, num_proc=1,
        batch_lines=2000)
    dm.tokenizer
    def status():
        fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
        return {k: int(fields[k].split()[0]) * 1024 for k in ("RssAnon", "RssFile")}
    before, peak, stop = status(), status(), threading.Event()
    def sample():
        while not stop.wait(0.005):
            now = status()
            for k in peak:
                peak[k] = max(peak[k], now[k])
    sampler = threading.Thread(target=sample)
    sampler.start()
    dm.setup("fit")
    stop.set()
    sampler.join()
    print(json.dumps({**{k: peak[k] - before[k] for k in peak}, "tokens": dm._data["train"][0].tokens}))
""")


@pytest.mark.slow
def test_preparation_memory_does_not_grow_with_the_corpus(tmp_path, tokenizer_dir):
    """Peak growth of anonymous memory and of mapped-file pages while preparing 5 MB and 17 MB of text, one
    process each: the same within a few MB. Reading the source through a memory map leaves ~1 MB of mapped
    pages per MB of text in the process's RSS, the `datasets` text builder ~2 MB of anonymous memory per MB,
    and loading the text into Python lists (the first version) ~30 MB per MB."""
    rng = np.random.default_rng(0)
    words = "Anna Ben Paris river city who built the a of Berlin Rhine population".split()
    growth = {}
    for mb in (5, 17):
        (tmp_path / f"c{mb}").mkdir()
        with open(tmp_path / f"c{mb}" / "en.txt", "w", encoding="utf-8") as f:
            while f.tell() < mb * 1e6:
                f.write("\n".join(" ".join(rng.choice(words, 12)) for _ in range(1000)) + "\n")
        done = subprocess.run([sys.executable, "-c", MEASURE, str(tmp_path / f"c{mb}"), str(tokenizer_dir),
                               str(tmp_path / f"cache{mb}")], capture_output=True, text=True, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        growth[mb] = json.loads(done.stdout.strip().splitlines()[-1])
    assert growth[17]["tokens"] > 3 * growth[5]["tokens"]
    # what file-backed growth remains is the pages around record-batch headers, which this test's 1 MB batches
    # make 8x denser than the 8 MB of real runs: 3.4-4.2 MB here over 5 runs; reading through the map was 19 MB
    assert growth[17]["RssFile"] - growth[5]["RssFile"] < 6e6, growth
    assert growth[17]["RssAnon"] - growth[5]["RssAnon"] < 8e6, growth


def _stream_file(path, batches):
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, pa.schema([("text", pa.string())])) as writer:
        for texts in batches:
            writer.write_batch(pa.record_batch([pa.array(texts, pa.string())], names=["text"]))


def test_sequential_rows_read_any_range_across_batches_and_files(tmp_path):
    """The plain-read row source gives exactly the rows of each range, in the order workers ask and behind it."""
    rows = [f"line {i}" for i in range(50)]
    _stream_file(tmp_path / "a.arrow", [rows[0:7], rows[7:20], rows[20:21]])
    _stream_file(tmp_path / "b.arrow", [rows[21:40], rows[40:50]])
    reader = _SequentialRows([str(tmp_path / "a.arrow"), str(tmp_path / "b.arrow")], "text")
    for start, stop in [(0, 3), (3, 7), (7, 25), (25, 26), (30, 50), (5, 45), (44, 50)]:  # forward, skip, back
        assert reader.rows(start, stop).column("text").to_pylist() == rows[start:stop], (start, stop)
    with pytest.raises(IndexError, match="past the end"):
        reader.rows(45, 51)


def test_whole_files_are_read_forward_and_filtered_rows_through_the_map(tmp_path, tokenizer_dir, corpus):
    """Where the rows are whole Arrow files (text/JSONL converted, saved datasets) workers read them with plain
    reads; a filtered source (an indices mapping) falls back to the memory map, with the same blocks."""
    tok = load_tokenizer(str(tokenizer_dir))
    encoder = BlockEncoder(tok, BlockSpec("text", 16, True, tok.cls_token_id, tok.sep_token_id))
    rows = open_rows(SourceSpec.coerce({"path": str(corpus / "{lang}.txt")}), "en", "train", str(tmp_path / "raw"))
    whole = _GroupEncoder(rows, encoder, 64, len(rows))
    assert whole.reader is not None and whole.rows is None
    (tmp_path / "mixed").mkdir()
    lines = [{"text": f"Anna {i} Ben", "lang": "en" if i % 3 else "de"} for i in range(200)]
    write_jsonl(tmp_path / "mixed" / "train.jsonl", lines)
    spec = SourceSpec.coerce({"path": str(tmp_path / "mixed" / "{split}.jsonl"), "lang_column": "lang"})
    filtered = open_rows(spec, "en", "train", str(tmp_path / "raw")).select_columns(["text"])
    mapped = _GroupEncoder(filtered, encoder, 64, len(filtered))
    assert mapped.reader is None and mapped.rows is not None
    assert mapped({"group": [1]}).column("input_ids").to_pylist() == encoder(
        pa.table({"text": [r["text"] for r in lines if r["lang"] == "en"][64:128]}), range(64, 128)
    ).column("input_ids").to_pylist()


@pytest.mark.parametrize(("chunk_chars", "batch_bytes"), [(3, None), (3, 10), (1 << 20, None)])
def test_text_conversion_gives_the_rows_of_the_datasets_text_builder(tmp_path, chunk_chars, batch_bytes):
    """Our chunked .txt -> Arrow conversion (memory-flat) and the `text` builder that streaming=True reads agree on
    every line ending, blank lines, a last line without an ending, and separators that are not line endings."""
    import datasets

    text = "first\r\nsecond\rthird\n\n  \nu\u2028v\x0cw \tend\r\n\r\nпоследняя строка"
    (tmp_path / "t.txt").write_bytes(text.encode("utf-8"))
    text_to_arrow(tmp_path / "t.txt", tmp_path / "t.arrow", chunk_chars=chunk_chars, batch_bytes=batch_bytes)
    ours = list(datasets.Dataset.from_file(str(tmp_path / "t.arrow"))["text"])
    builder = [r["text"] for r in datasets.load_dataset("text", data_files=str(tmp_path / "t.txt"), split="train",
                                                        streaming=True)]  # fmt: skip
    assert ours == builder and len(ours) == 8, ours
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt is not UTF-8 text.*iconv"):
        text_to_arrow(tmp_path / "latin1.txt", tmp_path / "latin1.arrow")
    assert not list(tmp_path.glob("*latin1.arrow*"))  # no partial file left behind
