"""Language-modelling corpora of any size: tokenized and packed in parallel, streamed to memory-mapped Arrow.

:func:`prepare_blocks` turns one language's rows into token blocks with ``datasets``' ``map(batched=True,
num_proc=N)``: each worker reads a group of lines, tokenizes it, packs it into ``<s> ... </s>`` blocks of
``max_length`` tokens and appends them to its own Arrow file, so memory holds a few groups per worker whatever the
corpus size. Plain text is first converted to an Arrow copy a chunk at a time (:func:`text_to_arrow`), other
local files (JSONL/CSV/parquet) by the ``datasets`` builders; workers read their rows from those files with plain
reads, front to back, rather than through a memory map (whose touched pages would stay in their RSS).
``streaming=True`` (a hub id too big or unwanted on disk, or any local file) reads rows lazily and writes the
blocks from one process.

The result is cached under ``cache_dir`` keyed on the source's identity (path, size, mtime), the tokenizer and
every setting; a file lock makes one process (one DDP rank, one of several runs) build it while the others wait
and then read it. :class:`BlockDataset` serves blocks to a DataLoader straight from the memory-mapped files.

Packing works per batch of ``batch_lines`` lines: each batch ends in one shorter block (no token is dropped;
with 10k-line batches that is a fraction of a percent of the blocks). Holdout rows (``holdout``) are chosen by a
hash of (seed, row index), so the same rows are held out whether the source is read in memory, mapped or
streamed.
"""

from __future__ import annotations

import gc
import hashlib
import itertools
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from filelock import FileLock
from tokenizers import Tokenizer
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from xmod_lab import hub
from xmod_lab.data.sources import _HUB_ID, SourceSpec, _fill, _local_target

log = logging.getLogger(__name__)

# Bump when the block layout changes, so stale caches are not reused.
CORPUS_FORMAT_VERSION = 1
BLOCK_FEATURES = datasets.Features({"input_ids": datasets.Sequence(datasets.Value("int32"))})
_BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
_MANIFEST = "manifest.json"
_BATCH_ROWS = 1 << 20  # the writers' own split of a table into record batches: never (see _BATCH_BYTES)
# Record batches of the Arrow files we write hold ~8 MB. Opening a file reads every batch's header through the
# memory map, and each such fault maps the pages around it (64 kB) into the process's RSS: with one batch per
# 10k-line group that was ~10% of a blocks file (60% with 2000-line groups), with 1M-character text batches 3-6%
# of the text; at 8 MB it is 0.8%. Larger batches cost anonymous memory instead (a few batches per process: 16 MB
# batches measured +120 MB of PSS over 3 processes).
_BATCH_BYTES = 8 << 20


@dataclass(frozen=True)
class BlockSpec:
    """How rows become blocks. ``keep``: ``train`` keeps the rows outside the holdout, ``holdout`` the rows
    inside it, ``all`` every row."""

    text_column: str
    max_length: int
    pack: bool
    bos: int
    eos: int
    holdout: float = 0.0
    keep: str = "all"
    seed: int = 0


def held_out(indices: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Whether each row index belongs to the holdout: a splitmix64 hash of (seed, index) below ``fraction``."""
    with np.errstate(over="ignore"):
        z = np.asarray(indices, dtype=np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15 + 1) % 2**64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(2**53) < fraction


class BlockEncoder:
    """Rows (an Arrow table) -> an Arrow table of token blocks; picklable, so ``map(num_proc=N)`` ships it."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, spec: BlockSpec) -> None:
        self.tokenizer = tokenizer
        self.spec = spec
        # The Rust tokenizer directly (no BatchEncoding around it, no offsets tracked), without padding and
        # truncation: the backend applies whatever it last remembered (transformers 5 leaves padding on after a
        # `padding=True` call, and save_pretrained writes it to tokenizer.json), and the cache key
        # (tokenizer_fingerprint) rightly leaves that call-time state out, so it must not reach the blocks. A
        # copy only where such state is set (the caller's tokenizer keeps it): copying costs 0.27 s at XLM-R's
        # 250k pieces, and an encoder is made per language and split on every run, cache hits included.
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None and (backend.padding is not None or backend.truncation is not None):
            backend = Tokenizer.from_str(backend.to_str())
            backend.no_padding()
            backend.no_truncation()
        self._backend = backend

    def _ids(self, texts: list[str]) -> list[list[int]]:
        if self._backend is not None:
            encode = getattr(self._backend, "encode_batch_fast", self._backend.encode_batch)
            return [e.ids for e in encode(texts, add_special_tokens=False)]
        return self.tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]

    def __call__(self, rows: pa.Table, indices: Sequence[int]) -> pa.Table:
        spec = self.spec
        texts = rows.column(spec.text_column).to_pylist()
        if spec.keep != "all":
            out = held_out(np.asarray(indices), spec.holdout, spec.seed)
            texts = [t for t, o in zip(texts, out, strict=True) if o == (spec.keep == "holdout")]
        texts = [t for t in texts if isinstance(t, str) and t.strip()]
        body = spec.max_length - 2
        ids = self._ids(texts) if texts else []
        if not spec.pack:
            blocks = [[spec.bos, *seq[:body], spec.eos] for seq in ids if seq]
            return pa.table({"input_ids": pa.array(blocks, type=pa.list_(pa.int32()))})
        n = sum(map(len, ids))
        if n == 0:
            return pa.table({"input_ids": pa.array([], type=pa.list_(pa.int32()))})
        stream = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=n)
        n_blocks = -(-n // body)
        grid = np.empty((n_blocks, spec.max_length), dtype=np.int32)
        grid[:, 0], grid[:, -1] = spec.bos, spec.eos
        padded = np.zeros(n_blocks * body, dtype=np.int32)
        padded[:n] = stream
        grid[:, 1:-1] = padded.reshape(n_blocks, body)
        values = grid.ravel()
        last = n - (n_blocks - 1) * body  # tokens in the last (possibly shorter) block
        if last < body:
            values = np.concatenate([values[: (n_blocks - 1) * spec.max_length + 1 + last], np.int32([spec.eos])])
        offsets = np.arange(n_blocks + 1, dtype=np.int32) * spec.max_length
        offsets[-1] = len(values)
        return pa.table({"input_ids": pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))})


def text_to_arrow(path: Path, target: Path, chunk_chars: int = 1 << 20, batch_bytes: int | None = None) -> None:
    """``path``'s lines as an Arrow stream file with one ``text`` column, converted a chunk at a time.

    The rows are those of the ``datasets`` ``text`` builder (what ``streaming=True`` reads): lines end at
    ``\n``, ``\r\n`` or ``\r`` and lose their ending, blank lines are rows. That builder holds Python strings
    of every line of a 10 MB chunk and leaves memory behind that grows with the file (measured: +110 MB of
    anonymous memory and +65 MB of touched mapped pages for 60 MB of text); here a chunk is split by Arrow and
    chunks are written in record batches of ``batch_bytes`` (default :data:`_BATCH_BYTES`)."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.partial")
    schema = pa.schema([("text", pa.string())])
    try:
        with open(path, encoding="utf-8", newline=None) as f, pa.OSFile(str(tmp), "wb") as sink:
            with pa.ipc.new_stream(sink, schema) as writer:
                pending: list[pa.Array] = []
                while text := f.read(chunk_chars):
                    text += f.readline()  # whole lines only; newline=None has turned \r\n and \r into \n
                    lines = pc.split_pattern(pa.array([text], pa.string()), "\n").flatten()
                    if text.endswith("\n"):
                        lines = lines.slice(0, len(lines) - 1)  # the empty piece after the last line ending
                    pending.append(lines)
                    if sum(a.nbytes for a in pending) >= (batch_bytes or _BATCH_BYTES):
                        writer.write_batch(pa.record_batch([pa.concat_arrays(pending)], schema=schema))
                        pending = []
                if pending:
                    writer.write_batch(pa.record_batch([pa.concat_arrays(pending)], schema=schema))
        os.replace(tmp, target)  # atomic: a run sharing the raw cache sees the whole file or none
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path} is not UTF-8 text ({err}); convert it, e.g. `iconv -f <its encoding> -t utf-8`."
        ) from err
    finally:
        tmp.unlink(missing_ok=True)


def _text_rows(path: Path, raw_cache: str) -> datasets.Dataset:
    stat = path.stat()
    identity = json.dumps([str(path.resolve()), stat.st_size, stat.st_mtime_ns, CORPUS_FORMAT_VERSION])
    target = Path(raw_cache) / f"text-{hashlib.sha256(identity.encode()).hexdigest()[:24]}.arrow"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        text_to_arrow(path, target)
    return datasets.Dataset.from_file(str(target))


def _builder_rows(path: Path, raw_cache: str | None, streaming: bool) -> datasets.Dataset | datasets.IterableDataset:
    suffix = path.suffix.lower()
    if suffix not in _BUILDERS:
        raise ValueError(f"{path}: unsupported file type {suffix!r}; use one of {', '.join(_BUILDERS)}.")
    if suffix == ".txt" and not streaming and raw_cache is not None:
        return _text_rows(path, raw_cache)
    return datasets.load_dataset(
        _BUILDERS[suffix], data_files=str(path), split="train", cache_dir=raw_cache, streaming=streaming
    )


def open_rows(
    source: SourceSpec, lang: str, split: str, raw_cache: str | None, streaming: bool = False
) -> datasets.Dataset | datasets.IterableDataset:
    """One language's rows of ``split``, memory-mapped (or lazily streamed), never loaded into memory whole.
    ``raw_cache``: where the ``datasets`` builders keep their Arrow copy of local files."""
    split_name = source.splits.get(split)
    if split_name is None:
        raise ValueError(f"Source {source.path!r} has no {split!r} split configured (splits: {source.splits}).")
    filled = _fill(source.path, lang, split_name)
    local = _local_target(Path(filled).expanduser(), split_name)
    if local is not None and local.is_file():
        ds = _builder_rows(local, raw_cache, streaming)
    elif local is not None:
        ds = datasets.load_from_disk(str(local))
        if isinstance(ds, datasets.DatasetDict):
            if split_name not in ds:
                raise ValueError(f"{local}: saved DatasetDict has splits {list(ds)}, not {split_name!r}.")
            ds = ds[split_name]
        if streaming:
            ds = ds.to_iterable_dataset()
    elif not _HUB_ID.match(filled) or filled.lower().endswith(tuple(_BUILDERS)):
        raise FileNotFoundError(f"Data file not found: {source.describe(lang, split)}. Check `path` and the language code.")
    else:
        name = _fill(source.name, lang, split_name) if source.name else None
        with hub.reaching("dataset", filled, "data.source.path", f" (config {name!r})" if name else ""):
            ds = datasets.load_dataset(filled, name=name, split=split_name, streaming=streaming)
    if source.lang_column is not None:
        column, prefix = source.lang_column, f"{lang}-"

        def same_language(batch: Mapping[str, list]) -> list[bool]:
            return [v == lang or str(v).startswith(prefix) for v in batch[column]]

        ds = ds.filter(same_language, batched=True)
    return ds


def _num_proc(requested: int | None, rows: int, batch_lines: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(requested or cores, -(-rows // batch_lines)))


def _groups_per_batch(batch_lines: int, text_bytes_per_row: float) -> int:
    """Groups of ``batch_lines`` rows per written record batch: ~``_BATCH_BYTES`` of blocks (int32 blocks take
    about twice the bytes of the text they encode)."""
    return max(1, int(_BATCH_BYTES / 2 / max(text_bytes_per_row, 1.0) / batch_lines))


def _stream_blocks(
    rows: datasets.IterableDataset, encoder: BlockEncoder, path: Path, batch_lines: int, limit: int | None
) -> None:
    writer = datasets.arrow_writer.ArrowWriter(features=BLOCK_FEATURES, path=str(path), writer_batch_size=_BATCH_ROWS)
    pending: list[pa.Table] = []
    try:
        start = 0
        for batch in (rows.take(limit) if limit is not None else rows).iter(batch_size=batch_lines):
            if encoder.spec.text_column not in batch:
                raise ValueError(
                    f"missing column {encoder.spec.text_column!r}; the rows have {sorted(batch)}. Rename the column "
                    "in the data or set the datamodule's text_column."
                )
            n = len(batch[encoder.spec.text_column])
            table = pa.table({encoder.spec.text_column: pa.array(batch[encoder.spec.text_column], pa.string())})
            pending.append(encoder(table, range(start, start + n)))
            start += n
            if sum(t.nbytes for t in pending) >= _BATCH_BYTES:
                writer.write_table(pa.concat_tables(pending).combine_chunks())
                pending = []
        if pending:
            writer.write_table(pa.concat_tables(pending).combine_chunks())
        writer.finalize()
    finally:
        writer.close()


def _stream_files(rows: datasets.Dataset) -> list[str] | None:
    """The Arrow files that hold exactly ``rows``, in order; None when ``rows`` is not a plain concatenation of
    whole files (an indices mapping from a filter, an in-memory or sliced table)."""
    if rows._indices is not None or not rows.cache_files:
        return None
    files = [f["filename"] for f in rows.cache_files]
    n = sum(datasets.table.MemoryMappedTable.from_file(f).num_rows for f in files)  # reads the metadata only
    return files if n == len(rows) else None


class _SequentialRows:
    """One column of Arrow stream files read forward with plain reads: at most one record batch in memory.

    Reading through a memory map instead would leave every touched page of the file in the process's RSS (clean
    page cache, but counted against the process until the map is closed), i.e. memory proportional to the text
    read so far. A map worker asks for its groups in increasing order, so reading forward serves them all; a
    request behind the current position reopens the files (correct, only slower)."""

    def __init__(self, files: Sequence[str], column: str) -> None:
        self.files, self.column = list(files), column
        self._batches: Any = None
        self._chunk: pa.Array | None = None
        self._start = 0  # row number of self._chunk[0]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_batches": None, "_chunk": None, "_start": 0}

    def _read(self):
        for name in self.files:
            with pa.OSFile(name) as f:
                for batch in pa.ipc.open_stream(f):
                    yield batch.column(self.column)

    def rows(self, start: int, stop: int) -> pa.Table:
        if self._batches is None or start < self._start:
            self._batches, self._chunk, self._start = self._read(), None, 0
        pieces, pos = [], start
        while pos < stop:
            end = self._start + (len(self._chunk) if self._chunk is not None else 0)
            if pos >= end:
                chunk = next(self._batches, None)
                if chunk is None:
                    raise IndexError(f"rows {start}:{stop} past the end of {self.files} ({end} rows)")
                self._chunk, self._start = chunk, end
                continue
            take = min(stop, end)
            pieces.append(self._chunk.slice(pos - self._start, take - pos))
            pos = take
        return pa.table({self.column: pa.chunked_array(pieces)})


class _GroupEncoder:
    """Encodes whole groups of ``batch_lines`` rows: group g is rows [g * batch_lines, (g + 1) * batch_lines),
    wherever the worker boundaries fall, so the blocks do not depend on the number of processes. Rows come from
    :class:`_SequentialRows` where the source is whole Arrow files, else from the memory-mapped dataset."""

    def __init__(self, rows: datasets.Dataset, encoder: BlockEncoder, batch_lines: int, n_rows: int) -> None:
        files = _stream_files(rows)
        self.reader = _SequentialRows(files, encoder.spec.text_column) if files is not None else None
        self.rows = rows.with_format("arrow") if files is None else None
        self.encoder, self.batch_lines, self.n_rows = encoder, batch_lines, n_rows

    def __call__(self, batch: Mapping[str, list]) -> pa.Table:
        tables = []
        for g in batch["group"]:
            start = int(g) * self.batch_lines
            stop = min(start + self.batch_lines, self.n_rows)
            rows = self.reader.rows(start, stop) if self.reader is not None else self.rows[start:stop]
            tables.append(self.encoder(rows, range(start, stop)))
        return pa.concat_tables(tables).combine_chunks()  # one record batch (see _BATCH_BYTES)


def _map_blocks(
    rows: datasets.Dataset,
    encoder: BlockEncoder,
    path: Path,
    batch_lines: int,
    num_proc: int | None,
    where: str,
    limit: int | None,
) -> None:
    if encoder.spec.text_column not in rows.column_names:
        raise ValueError(
            f"{where}: missing column {encoder.spec.text_column!r}; the rows have {rows.column_names}. Rename the "
            "column in the data or set the datamodule's text_column."
        )
    rows = rows.select_columns([encoder.spec.text_column])
    n_rows = len(rows) if limit is None else min(limit, len(rows))
    procs = _num_proc(num_proc, n_rows, batch_lines)
    encode = _GroupEncoder(rows, encoder, batch_lines, n_rows)
    if encode.reader is None:
        log.info("%s: rows read through a memory map (not whole Arrow files): touched pages count in RSS", where)
    # map over group numbers; workers read their groups' rows themselves
    per_batch = _groups_per_batch(batch_lines, rows.data.nbytes / max(len(rows), 1))  # sizes only, no data read
    groups = datasets.Dataset.from_dict({"group": np.arange(-(-n_rows // batch_lines))})
    # Forked workers share the parent's pages until they write to them; a garbage collection in a worker writes
    # to every tracked object's header and so copies most of the parent's heap (~150 MB each, measured).
    gc.freeze()
    try:
        groups.map(
            encode, batched=True, batch_size=per_batch, num_proc=procs if procs > 1 else None,
            remove_columns=["group"], features=BLOCK_FEATURES, cache_file_name=str(path), load_from_cache_file=False,
            writer_batch_size=_BATCH_ROWS,
            new_fingerprint=hashlib.sha256(str(path).encode()).hexdigest()[:32], desc=f"tokenize + pack {where}",
        )  # fmt: skip
    finally:
        gc.unfreeze()


@dataclass(frozen=True)
class Blocks:
    """A prepared corpus: its memory-mapped blocks and what went into them."""

    dataset: datasets.Dataset
    directory: Path
    blocks: int
    tokens: int
    built: bool  # False: read from the cache


def _load_blocks(directory: Path) -> tuple[datasets.Dataset, dict[str, Any]]:
    manifest = json.loads((directory / _MANIFEST).read_text())
    parts = [datasets.Dataset.from_file(str(directory / f)) for f in manifest["files"]]
    ds = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    return ds, manifest


def prepare_blocks(
    key: Mapping[str, Any],
    rows: Any,
    encoder: BlockEncoder,
    cache_dir: str | Path,
    where: str,
    limit: int | None = None,
    batch_lines: int = 10_000,
    num_proc: int | None = None,
) -> Blocks:
    """The blocks of one language and split, built once per ``key`` under ``cache_dir`` (see module doc).
    ``rows``: a callable returning the rows (called only when the cache misses)."""
    digest = hashlib.sha256(json.dumps({**key, "v": CORPUS_FORMAT_VERSION}, sort_keys=True).encode()).hexdigest()
    root = Path(cache_dir).expanduser()
    target = root / f"lm-{digest[:24]}"
    root.mkdir(parents=True, exist_ok=True)
    built = False
    with FileLock(str(root / f".lm-{digest[:24]}.lock")):  # one builder; the others wait here, then read
        if not (target / _MANIFEST).exists():
            tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-lm-"))
            try:
                source_rows = rows()
                if isinstance(source_rows, datasets.IterableDataset):
                    _stream_blocks(source_rows, encoder, tmp / "blocks.arrow", batch_lines, limit)
                else:
                    _map_blocks(source_rows, encoder, tmp / "blocks.arrow", batch_lines, num_proc, where, limit)
                files = sorted(p.name for p in tmp.glob("blocks*.arrow"))
                ds = datasets.concatenate_datasets([datasets.Dataset.from_file(str(tmp / f)) for f in files])
                tokens = sum(int(pc.sum(pc.list_value_length(c)).as_py() or 0) for c in ds.data.column("input_ids").chunks)
                if tokens == 0:
                    raise ValueError(
                        f"{where}: no non-empty text in column {encoder.spec.text_column!r}"
                        + (" outside the holdout" if encoder.spec.keep == "train" else "")
                        + (" inside the holdout: raise holdout" if encoder.spec.keep == "holdout" else "")
                        + "."
                    )
                manifest = {"files": files, "blocks": len(ds), "tokens": tokens, "key": dict(key),
                            "spec": asdict(encoder.spec)}  # fmt: skip
                (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
                del ds
                os.replace(tmp, target)  # atomic publish
                built = True
                log.info("%s: %d blocks, %d tokens, cached at %s", where, manifest["blocks"], tokens, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    ds, manifest = _load_blocks(target)
    return Blocks(ds, target, int(manifest["blocks"]), int(manifest["tokens"]), built)


class BlockDataset(Dataset):
    """Token blocks of several languages as one map-style dataset, read from memory-mapped Arrow without copying
    (a row is copied out of the mapped files only when read); each example carries its adapter index as ``lang_ids``.
    Pickles by file reference (DataLoader workers map the files again)."""

    def __init__(self, parts: Sequence[tuple[datasets.Dataset, int]]) -> None:
        if not parts:
            raise ValueError("BlockDataset needs at least one (dataset, language id) part.")
        self.parts = [(ds, int(lid)) for ds, lid in parts]
        sizes = [len(ds) for ds, _ in self.parts]
        self.offsets = np.cumsum([0, *sizes])
        self.example_langs = np.repeat(np.array([lid for _, lid in self.parts], dtype=np.int64), sizes)
        self._views: list[tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_views": None}

    def _build_views(self) -> list[tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]]:
        views = []
        for ds, _ in self.parts:
            if ds._indices is not None:
                raise ValueError("BlockDataset reads whole Arrow tables; flatten_indices() a selected dataset first.")
            chunks = ds.data.column("input_ids").chunks
            starts = np.cumsum([0, *(len(c) for c in chunks)])
            views.append((starts, [(c.offsets.to_numpy(), c.values.to_numpy()) for c in chunks]))
        return views

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} blocks")
        if self._views is None:
            self._views = self._build_views()
        part = int(np.searchsorted(self.offsets, index, side="right")) - 1
        row = int(index - self.offsets[part])
        starts, chunks = self._views[part]
        c = int(np.searchsorted(starts, row, side="right")) - 1
        offsets, values = chunks[c]
        i = row - int(starts[c])
        return {"input_ids": values[offsets[i] : offsets[i + 1]].tolist(), "lang_ids": self.parts[part][1]}
