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
from xmod_lab.data.corpus import BlockDataset, BlockEncoder, BlockSpec, held_out
from xmod_lab.data.language_modeling import LanguageModelingDataModule


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
    from xmod_lab.data.tokenizer import load_tokenizer

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
    import json, resource, sys
    import datasets
    from xmod_lab.data.language_modeling import LanguageModelingDataModule
    datasets.disable_progress_bars()
    corpus, tok, cache = sys.argv[1:4]
    dm = LanguageModelingDataModule(source={"path": corpus + "/{lang}.txt", "splits": {"validation": None, "test": None}},
        tokenizer=tok, languages=["en_XX"], train_langs=["en"], max_length=64, cache_dir=cache, num_proc=1,
        batch_lines=2000)
    dm.tokenizer
    def rss():
        return int(open("/proc/self/statm").read().split()[1]) * 4096
    before = rss()
    dm.setup("fit")
    print(json.dumps({"growth": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before,
                      "tokens": dm._data["train"][0].tokens}))
""")


@pytest.mark.slow
def test_preparation_memory_does_not_grow_with_the_corpus(tmp_path, tokenizer_dir):
    """Peak RSS while preparing 1 MB and 6 MB of text, one process each: the same within a few MB (loading the
    text into Python lists, as before, costs ~30 bytes of RAM per byte of text: 150 MB more for the larger)."""
    line = "Anna 3 Ben Paris river city 12 who built the a of Berlin Rhine population\n"
    growth = {}
    for mb in (1, 6):
        (tmp_path / f"c{mb}").mkdir()
        (tmp_path / f"c{mb}" / "en.txt").write_text(line * int(mb * 1e6 / len(line)), encoding="utf-8")
        done = subprocess.run([sys.executable, "-c", MEASURE, str(tmp_path / f"c{mb}"), str(tokenizer_dir),
                               str(tmp_path / f"cache{mb}")], capture_output=True, text=True, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        growth[mb] = json.loads(done.stdout.strip().splitlines()[-1])
    assert growth[6]["tokens"] > 5 * growth[1]["tokens"]
    assert growth[6]["growth"] - growth[1]["growth"] < 40e6, growth
