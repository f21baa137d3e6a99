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


class TaggedDataset(Dataset):
    """Several per-language datasets as one; each example carries its adapter index as ``lang_ids``."""

    def __init__(
        self, parts: Sequence[tuple[datasets.Dataset, int]], columns: Sequence[str] | None = None
    ) -> None:
        self.parts = [(ds if columns is None else ds.select_columns(list(columns)), lid) for ds, lid in parts]
        sizes = [len(ds) for ds, _ in self.parts]
        self.offsets = np.cumsum([0, *sizes])
        self.example_langs = np.concatenate(
            [np.full(n, lid, dtype=np.int64) for n, (_, lid) in zip(sizes, parts, strict=True)]
        )

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int) -> dict[str, Any]:
        part = int(np.searchsorted(self.offsets, index, side="right")) - 1
        ds, lid = self.parts[part]
        row = ds[int(index - self.offsets[part])]
        row["lang_ids"] = lid
        return row

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        # One Arrow read per language part instead of one per row: the DataLoader's hot path.
        idx = np.asarray(indices, dtype=np.int64)
        parts = np.searchsorted(self.offsets, idx, side="right") - 1
        rows: list[dict[str, Any] | None] = [None] * len(idx)
        for part in np.unique(parts):
            where = np.flatnonzero(parts == part)
            ds, lid = self.parts[part]
            columns = ds[(idx[where] - self.offsets[part]).tolist()]
            for j, pos in enumerate(where):
                row = {k: v[j] for k, v in columns.items()}
                row["lang_ids"] = lid
                rows[pos] = row
        return rows  # type: ignore[return-value]


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
