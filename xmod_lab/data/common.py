"""Plain helpers the datamodules share: language resolution, the on-disk tokenization cache, label checks,
language-tagged datasets and dataloader construction. (Functions, not a base class: each datamodule stays
readable on its own.)"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from torch.utils.data import DataLoader, Dataset

from xmod_lab.data.languages import language_ids, to_xmod_language
from xmod_lab.data.sampling import LanguageBatchSampler, ShardedEvalSampler
from xmod_lab.data.sources import SourceSpec, source_fingerprint

log = logging.getLogger(__name__)

# Bump when any preprocessing function changes its output, so stale caches are not reused.
PREPROCESSING_VERSION = 1


def resolve_languages(
    langs: Sequence[str], languages: Sequence[str], language_map: Mapping[str, str] | None, role: str
) -> tuple[list[str], list[int]]:
    """Dataset codes -> (X-MOD codes, indices into the model's languages); errors name the culprit."""
    if not langs:
        raise ValueError(f"No {role} languages given.")
    codes = [to_xmod_language(str(lang), language_map) for lang in langs]
    return codes, language_ids(codes, languages, role=role)


def check_columns(ds: datasets.Dataset, required: Sequence[str], where: str) -> None:
    missing = [c for c in required if c not in ds.column_names]
    if missing:
        raise ValueError(
            f"{where}: missing column(s) {missing}; the rows have {ds.column_names}. Rename the columns in the "
            "data or set the datamodule's column arguments."
        )


def label_index(value: Any, label_names: Sequence[str], where: str, row: int) -> int:
    """A label as an index into label_names (accepts indices or names); a clear error outside the set."""
    if isinstance(value, str) and not value.lstrip("-").isdigit():
        if value in label_names:
            return list(label_names).index(value)
    else:
        idx = int(value)
        if 0 <= idx < len(label_names):
            return idx
    raise ValueError(
        f"{where}, row {row}: label {value!r} is outside the label set {list(label_names)} "
        f"(indices 0..{len(label_names) - 1})."
    )


def cached(
    build: Callable[[], datasets.Dataset], key: Mapping[str, Any], cache_dir: str | None, desc: str
) -> datasets.Dataset:
    """``build()``, or its saved result when one with the same key exists under ``cache_dir``."""
    if cache_dir is None:
        return build()
    digest = hashlib.sha256(
        json.dumps({**key, "v": PREPROCESSING_VERSION}, sort_keys=True).encode()
    ).hexdigest()
    target = Path(cache_dir).expanduser() / digest[:24]
    if (target / "dataset_info.json").exists():
        log.info("%s: tokenized cache hit %s", desc, target)
        return datasets.load_from_disk(str(target))
    ds = build()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    quiet = not datasets.utils.are_progress_bars_disabled()
    if quiet:  # one bar per language and split is noise in training logs
        datasets.disable_progress_bars()
    try:
        ds.save_to_disk(str(tmp))
    finally:
        if quiet:
            datasets.enable_progress_bars()
    try:  # atomic publish: concurrent ranks may race, and the loser's copy is simply dropped
        os.replace(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("%s: tokenized %d rows, cached at %s", desc, len(ds), target)
    return datasets.load_from_disk(str(target))


def cache_key(source: SourceSpec, lang: str, split: str, tokenizer_fp: str, **params: Any) -> dict[str, Any]:
    return {"source": source_fingerprint(source, lang, split), "tokenizer": tokenizer_fp, **params}


class _Columns:
    """A tokenized dataset's columns in memory for fast row reads: int-list columns as one flat array plus
    offsets (zero-copy from Arrow), scalar columns as arrays, anything else as Python objects."""

    def __init__(self, ds: datasets.Dataset) -> None:
        import pyarrow as pa

        if ds._indices is not None:  # a select()ed view: materialise the rows it points at
            ds = ds.flatten_indices()
        self.ragged: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.scalars: dict[str, np.ndarray] = {}
        self.objects: dict[str, list] = {}
        for name in ds.column_names:
            col = ds.data.table.column(name).combine_chunks()
            if (
                pa.types.is_list(col.type)
                and pa.types.is_integer(col.type.value_type)
                and col.null_count == 0
            ):
                self.ragged[name] = (np.asarray(col.values), np.asarray(col.offsets))
            elif (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)) and col.null_count == 0:
                self.scalars[name] = col.to_numpy()
            else:
                self.objects[name] = col.to_pylist()

    def row(self, i: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, (values, offsets) in self.ragged.items():
            out[name] = values[offsets[i] : offsets[i + 1]].tolist()
        for name, values in self.scalars.items():
            out[name] = values[i].item()
        for name, values in self.objects.items():
            out[name] = values[i]
        return out


class TaggedDataset(Dataset):
    """Several per-language datasets as one; each example carries its adapter index as ``lang_ids``.
    ``parts`` keeps the Arrow datasets; rows are read from an in-memory copy (the DataLoader's hot path)."""

    def __init__(
        self, parts: Sequence[tuple[datasets.Dataset, int]], columns: Sequence[str] | None = None
    ) -> None:
        self.parts = [(ds if columns is None else ds.select_columns(list(columns)), lid) for ds, lid in parts]
        self._columns: list[_Columns | None] = [None] * len(self.parts)  # built on first read
        sizes = [len(ds) for ds, _ in self.parts]
        self.offsets = np.cumsum([0, *sizes])
        self.example_langs = np.concatenate(
            [np.full(n, lid, dtype=np.int64) for n, (_, lid) in zip(sizes, parts, strict=True)]
        )

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} examples")
        part = int(np.searchsorted(self.offsets, index, side="right")) - 1
        columns = self._columns[part]
        if columns is None:
            columns = self._columns[part] = _Columns(self.parts[part][0])
        row = columns.row(int(index - self.offsets[part]))
        row["lang_ids"] = self.parts[part][1]
        return row


def loaded(data: Mapping[str, list[TaggedDataset]], split: str, source: SourceSpec) -> list[TaggedDataset]:
    """The per-language datasets of ``split``, or a clear error saying why there are none."""
    if split not in data:
        raise RuntimeError(
            f"No {split!r} data: call setup() for that stage first, or configure a {split!r} split for "
            f"source {source.path!r} (its splits: {source.splits})."
        )
    return data[split]


def train_loader(
    data: TaggedDataset,
    collate: Callable,
    batch_size: int,
    batching: str,
    seed: int,
    num_workers: int,
    alpha: float | None = None,
    drop_last: bool = False,
) -> DataLoader:
    sampler = LanguageBatchSampler(
        data.example_langs,
        batch_size,
        mode=batching,
        shuffle=True,
        alpha=alpha,
        seed=seed,
        drop_last=drop_last,
    )
    return DataLoader(
        data,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )


def eval_loaders(
    datas: Sequence[TaggedDataset], collate: Callable, batch_size: int, num_workers: int
) -> list[DataLoader]:
    return [
        DataLoader(
            d,
            batch_sampler=ShardedEvalSampler(len(d), batch_size),
            collate_fn=collate,
            num_workers=num_workers,
        )
        for d in datas
    ]
