"""What the datamodules share: the arguments they all take (:class:`DataSetup`), the lazily loaded tokenizer,
the on-disk tokenization cache, label checks, language-tagged datasets, dataloader construction, and the
skeleton of the datamodules of per-language examples (:class:`LanguageDataModule`: each subclass says how one
language's split is tokenized)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset
from transformers import PreTrainedTokenizerBase

from xmod_lab.data.collate import PadCollator
from xmod_lab.data.languages import language_ids, script_mismatch, to_xmod_language
from xmod_lab.data.sampling import (
    BATCHING_MODES,
    DataPosition,
    LanguageBatchSampler,
    ResumableLoader,
    ShardedEvalSampler,
)
from xmod_lab.data.sources import SourceSpec, source_fingerprint
from xmod_lab.data.tokenizer import load_tokenizer, tokenizer_fingerprint
from xmod_lab.results import check_eval_set_names

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


# Defaults of the datamodules' ``group_by_length`` / ``sort_eval_by_length`` (None there means these):
# measured on the default job, docs/benchmarks.md ("Batches that carry little padding").
GROUP_BY_LENGTH = False
SORT_EVAL_BY_LENGTH = True


@dataclass(frozen=True)
class DataSetup:
    """The arguments every datamodule takes besides its source and columns, checked and resolved once.
    Languages come three ways: dataset codes (``train_langs``, ``de``), X-MOD codes (``train_languages``,
    ``de_DE``) and adapter indices into the model's ``languages`` (``train_lang_ids``)."""

    languages: list[str]
    language_map: dict[str, str] | None
    train_langs: list[str]
    eval_langs: list[str]
    train_languages: list[str]
    train_lang_ids: list[int]
    eval_languages: list[str]
    eval_lang_ids: list[int]
    batch_size: int
    eval_batch_size: int
    batching: str
    cache_dir: str | None
    num_workers: int
    seed: int
    max_train_examples: int | None
    max_eval_examples: int | None
    group_by_length: bool = GROUP_BY_LENGTH
    sort_eval_by_length: bool = SORT_EVAL_BY_LENGTH

    @property
    def eval_adapters(self) -> dict[str, str]:
        """{evaluation set (dataset code): the adapter code that scores it}."""
        return dict(zip(self.eval_langs, self.eval_languages, strict=True))

    def limit(self, split: str) -> int | None:
        return self.max_train_examples if split == "train" else self.max_eval_examples

    def stage_splits(
        self, stage: str | None, has_split: Callable[[str], bool]
    ) -> list[tuple[str, list[str], list[int]]]:
        """(split, dataset codes, adapter indices) for each split a Lightning stage reads (None: every
        stage), keeping those ``has_split`` says the data provides."""
        plan = []
        if stage in (None, "fit"):
            plan.append(("train", self.train_langs, self.train_lang_ids))
        if stage in (None, "fit", "validate"):
            plan.append(("validation", self.eval_langs, self.eval_lang_ids))
        if stage in (None, "test"):
            plan.append(("test", self.eval_langs, self.eval_lang_ids))
        return [p for p in plan if has_split(p[0])]


def data_setup(
    languages: Sequence[str],
    train_langs: Sequence[str],
    eval_langs: Sequence[str] | None,
    language_map: Mapping[str, str] | None,
    batch_size: int,
    eval_batch_size: int | None,
    batching: str,
    cache_dir: str | None,
    num_workers: int,
    seed: int,
    max_train_examples: int | None,
    max_eval_examples: int | None,
    group_by_length: bool | None = None,
    sort_eval_by_length: bool | None = None,
) -> DataSetup:
    """Check and resolve the shared datamodule arguments (``eval_langs`` None: the train languages).
    ``group_by_length``: training batches of similar lengths; ``sort_eval_by_length``: evaluation batches
    longest first (sampling.py); None: the measured defaults above."""
    if batching not in BATCHING_MODES:
        raise ValueError(f"Unknown batching {batching!r}; choose one of {BATCHING_MODES}.")
    languages = [str(x) for x in languages]
    language_map = dict(language_map) if language_map else None
    train = [str(x) for x in train_langs]
    evals = [str(x) for x in (eval_langs if eval_langs is not None else train_langs)]
    check_eval_set_names(evals, "eval_langs")
    train_languages, train_lang_ids = resolve_languages(train, languages, language_map, "train")
    eval_languages, eval_lang_ids = resolve_languages(evals, languages, language_map, "eval")
    return DataSetup(
        languages=languages, language_map=language_map, train_langs=train, eval_langs=evals,
        train_languages=train_languages, train_lang_ids=train_lang_ids, eval_languages=eval_languages,
        eval_lang_ids=eval_lang_ids, batch_size=batch_size, eval_batch_size=eval_batch_size or batch_size,
        batching=batching, cache_dir=cache_dir, num_workers=num_workers, seed=seed,
        max_train_examples=max_train_examples, max_eval_examples=max_eval_examples,
        group_by_length=GROUP_BY_LENGTH if group_by_length is None else bool(group_by_length),
        sort_eval_by_length=SORT_EVAL_BY_LENGTH if sort_eval_by_length is None else bool(sort_eval_by_length),
    )  # fmt: skip


def eval_source_or_train(source: SourceSpec, eval_source: Mapping[str, Any] | str | None) -> SourceSpec:
    # zero-shot setups often train on one dataset (MNLI, SQuAD, COPA) and evaluate on another (XNLI, XQuAD, ...)
    return SourceSpec.coerce(eval_source) if eval_source is not None else source


class LazyTokenizer:
    """A tokenizer loaded on first use, with the fingerprint that cache keys carry. Datamodules are built in
    every process (and by config checks) but only some of them tokenize."""

    def __init__(self, name: str) -> None:
        self.name = str(name)
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._fingerprint = ""

    def get(self) -> PreTrainedTokenizerBase:
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.name)
            self._fingerprint = tokenizer_fingerprint(self._tokenizer)
        return self._tokenizer

    @property
    def fingerprint(self) -> str:
        self.get()
        return self._fingerprint


def first_rows(ds: datasets.Dataset, limit: int | None) -> datasets.Dataset:
    return ds.select(range(min(limit, len(ds)))) if limit is not None else ds


def check_columns(ds: datasets.Dataset, required: Sequence[str], where: str) -> None:
    missing = [c for c in required if c not in ds.column_names]
    if missing:
        raise ValueError(
            f"{where}: missing column(s) {missing}; the rows have {ds.column_names}. Rename the columns in the "
            "data or set the datamodule's column arguments."
        )


def check_values(ds: datasets.Dataset, columns: Sequence[str], where: str) -> None:
    """Every row has a value in each of ``columns``: a missing key or null would otherwise be read as the text
    "None" or fail deep inside tokenization. Rows are numbered from 1, as in the file."""
    for column in columns:
        missing = next((i for i, v in enumerate(ds[column]) if v is None), None)
        if missing is not None:
            raise ValueError(
                f"{where}, row {missing + 1}: no value for {column!r} (a missing key or null). Fill it in or drop "
                "the row."
            )


def label_index(value: Any, label_names: Sequence[str], where: str, row: int, field: str = "label") -> int:
    """A label as an index into label_names (accepts integer indices or names); a clear error for anything else:
    a decimal (``1.5`` would be read as ``1``), a boolean, a null, a value outside the set. ``row``: 1-based, as in
    the file; ``field``: the column it was read from."""
    if isinstance(value, str):
        if value in label_names:
            return list(label_names).index(value)
        if value.lstrip("-").isdigit() and 0 <= int(value) < len(label_names):
            return int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value < len(label_names):
            return value
    else:
        kind = {bool: "a boolean", float: "a decimal number", type(None): "null"}.get(type(value), type(value).__name__)
        raise ValueError(
            f"{where}, row {row}, field {field!r}: label {value!r} is {kind}, not one of the label set "
            f"{list(label_names)} (an index 0..{len(label_names) - 1} or a name). Fix the row or drop it."
        )
    raise ValueError(
        f"{where}, row {row}, field {field!r}: label {value!r} is outside the label set {list(label_names)} "
        f"(indices 0..{len(label_names) - 1})."
    )


def first_bad_label_row(values: Sequence[Any]) -> int | None:
    """The 0-based row to report first in a label column that Arrow may have read as decimals: a row with a
    non-integral decimal (``0.7`` turns the whole column into decimals, ``1`` into ``1.0``), else None."""
    for row, value in enumerate(values):
        items = value if isinstance(value, list) else [value]
        if any(isinstance(v, float) and not v.is_integer() for v in items):
            return row
    return None


def label_indices(values: Sequence[Any], label_names: Sequence[str], where: str, field: str,
                 skip: Sequence[int] = ()) -> list[Any]:
    """:func:`label_index` of every row but those in ``skip`` (0-based): a row's list of tags, or its one label.
    A row whose decimal made Arrow read the whole column as decimals is reported first (that row, not row 1)."""
    bad = first_bad_label_row(values)
    if bad is not None and bad not in set(skip):
        items = values[bad] if isinstance(values[bad], list) else [values[bad]]
        culprit = next(v for v in items if isinstance(v, float) and not v.is_integer())
        label_index(culprit, label_names, where, bad + 1, field)  # raises, naming that row and value
    order = range(len(values))
    skipped = set(skip)
    out: dict[int, Any] = {}
    for row in order:
        if row in skipped:
            continue
        value = values[row]
        out[row] = ([label_index(v, label_names, where, row + 1, field) for v in value] if isinstance(value, list)
                    else label_index(value, label_names, where, row + 1, field))
    return [out[row] for row in sorted(out)]


SKIPPED_SHOWN = 5  # skipped rows named in logs and results.json (all are counted)


def with_skipped(ds: datasets.Dataset, rows: Sequence[int], reason: str, where: str) -> datasets.Dataset:
    """``ds`` remembering which source rows (1-based) were left out and why: the record travels with the
    tokenized cache (the dataset's info), so a cached run reports the same rows. Logs them."""
    if rows:
        log.warning("%s: skipped %d rows (%s): rows %s%s", where, len(rows), reason, list(rows[:SKIPPED_SHOWN]),
                    "..." if len(rows) > SKIPPED_SHOWN else "")
        ds.info.description = json.dumps({"skipped_rows": [int(r) for r in rows], "reason": reason})
    return ds


def skipped_rows(ds: datasets.Dataset) -> dict[str, Any] | None:
    """{count, first_rows, reason} of the rows :func:`with_skipped` recorded on ``ds``; None when none were."""
    try:
        record = json.loads(ds.info.description or "{}")
    except ValueError:
        return None
    rows = record.get("skipped_rows") if isinstance(record, dict) else None
    if not rows:
        return None
    return {"count": len(rows), "first_rows": rows[:SKIPPED_SHOWN], "reason": record.get("reason")}


def skipped_summary(datamodule: Any) -> dict[str, dict[str, Any]]:
    """{"<split>/<dataset language>": {count, first_rows, reason}} for every split the datamodule loaded that
    left rows out (results.json's ``skipped_rows``); {} when none did."""
    spec, data = getattr(datamodule, "spec", None), getattr(datamodule, "_data", None)
    if spec is None or not isinstance(data, Mapping):
        return {}
    out = {}
    for split, parts in data.items():
        langs = spec.train_langs if split == "train" else spec.eval_langs
        for lang, part in zip(langs, parts, strict=False):
            found = skipped_rows(part.parts[0][0]) if isinstance(part, TaggedDataset) else None
            if found:
                out[f"{split}/{lang}"] = found
    return out


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
        log.debug("%s: tokenized cache hit %s", desc, target)
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
    log.debug("%s: tokenized %d rows, cached at %s", desc, len(ds), target)  # -v shows it
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

    def lengths(self) -> np.ndarray:
        """Tokens per example (multiple choice: its longest choice), what padding a batch to its longest costs."""
        out = []
        for part, (ds, _) in enumerate(self.parts):
            columns = self._columns[part]
            if columns is None:
                columns = self._columns[part] = _Columns(ds)
            if "input_ids" in columns.ragged:
                out.append(np.diff(columns.ragged["input_ids"][1]))
            else:  # nested lists (choices)
                rows = columns.objects["input_ids"]
                out.append(np.array([max((len(c) for c in r), default=0) for r in rows], dtype=np.int64))
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

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


def tagged_splits(
    plan: Sequence[tuple[str, Sequence[str], Sequence[int]]],
    encoded: Callable[[str, str], datasets.Dataset],
    check: tuple[DataSetup, PreTrainedTokenizerBase] | None = None,
) -> dict[str, list[TaggedDataset]]:
    """One :class:`TaggedDataset` per language for each planned split; ``encoded(lang, split)`` builds one.
    ``check``: (setup, tokenizer) to warn about text in another script than its adapter's (:func:`check_script`)."""
    out = {}
    for split, langs, ids in plan:
        out[split] = []
        for lang, lid in zip(langs, ids, strict=True):
            ds = encoded(lang, split)
            if check is not None:
                check_script(ds, lang, lid, *check)
            out[split].append(TaggedDataset([(ds, lid)]))
    return out


_SCRIPT_WARNED: set[tuple[str, str]] = set()


def check_script(ds: datasets.Dataset, code: str, lang_id: int, setup: DataSetup,
                 tokenizer: PreTrainedTokenizerBase) -> None:
    """Warn (once per dataset code and adapter) when the text of dataset language ``code`` is in another
    script than its adapter's (``zh`` of UD-POS is Traditional; the default map gives it ``zh_CN``). Reads
    the whole set's tokenized rows back, so a cached dataset is checked too."""
    adapter = setup.languages[lang_id]
    if not adapter.startswith("zh_") or (code, adapter) in _SCRIPT_WARNED or "input_ids" not in ds.column_names:
        return
    sample = ds["input_ids"]
    text = "".join(tokenizer.batch_decode([ids if not ids or isinstance(ids[0], int) else ids[0] for ids in sample],
                                          skip_special_tokens=True))
    warning = script_mismatch(text, code, adapter, setup.languages)
    if warning:
        _SCRIPT_WARNED.add((code, adapter))
        log.warning(warning)


def train_loader(
    data: Mapping[str, list[TaggedDataset]],
    source: SourceSpec,
    collate: Callable,
    setup: DataSetup,
    position: DataPosition,
    alpha: float | None = None,
) -> DataLoader:
    """The training loader over every train language at once, batched by ``setup.batching``, starting where
    ``position`` (restored from a checkpoint) says."""
    parts = loaded(data, "train", source)
    merged = TaggedDataset([p.parts[0] for p in parts])
    sampler = position.attach(LanguageBatchSampler(
        merged.example_langs, setup.batch_size, mode=setup.batching, shuffle=True, alpha=alpha, seed=setup.seed,
        lengths=merged.lengths() if setup.group_by_length else None,
    ))  # fmt: skip
    return ResumableLoader(
        merged,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=setup.num_workers,
        persistent_workers=setup.num_workers > 0,
    )


def eval_loaders(
    data: Mapping[str, list[TaggedDataset]],
    split: str,
    source: SourceSpec,
    collate: Callable,
    setup: DataSetup,
    groups: Callable[[TaggedDataset], Sequence] | None = None,
) -> list[DataLoader]:
    """One in-order loader per eval language (``eval_languages`` order). ``groups``: per-row keys that
    a rank's shard must not split (QA: the features of one example)."""
    return [
        DataLoader(
            d,
            batch_sampler=ShardedEvalSampler(
                len(d), setup.eval_batch_size, groups=groups(d) if groups is not None else None,
                # QA (groups): an example's features stay in order, its answer picks the first of equal scores
                lengths=d.lengths() if setup.sort_eval_by_length and groups is None else None,
            ),
            collate_fn=collate,
            num_workers=setup.num_workers,
        )
        for d in loaded(data, split, source)
    ]


class LanguageDataModule(LightningDataModule):
    """The skeleton of the datamodules of per-language examples (sentence pairs, tagged words, multiple choice,
    QA): the checked shared arguments (``spec``), the train source and the evaluation one (``eval_source``: a
    zero-shot setup may evaluate on another dataset), the tokenizer (loaded on first use), the loaded splits, one
    training loader over every train language and one loader per evaluation set, and the training data position
    (in checkpoints: a mid-epoch resume continues at the next batch). A subclass tokenizes: ``_split(lang,
    split)`` is one language's split, tokenized and cached."""

    def __init__(self, source: Mapping[str, Any] | str, tokenizer: str, setup: DataSetup,
                 eval_source: Mapping[str, Any] | str | None = None) -> None:
        super().__init__()
        self.spec = setup
        self.source = SourceSpec.coerce(source)
        self.eval_source = eval_source_or_train(self.source, eval_source)
        self.train_languages, self.eval_languages = setup.train_languages, setup.eval_languages
        self._tokenizer = LazyTokenizer(tokenizer)
        self._data: dict[str, list[TaggedDataset]] = {}
        self.position = DataPosition()

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self._tokenizer.get()

    def _split(self, lang: str, split: str) -> datasets.Dataset:
        raise NotImplementedError

    def _source(self, split: str) -> SourceSpec:
        return self.source if split == "train" else self.eval_source

    def _plan(self, stage: str | None) -> list[tuple[str, list[str], list[int]]]:
        return self.spec.stage_splits(stage, lambda split: self._source(split).has_split(split))

    def prepare_data(self) -> None:
        # Runs on one process per node: fill the cache so the other ranks only read it in setup().
        if self.spec.cache_dir is not None:
            tagged_splits(self._plan(None), self._split)

    def setup(self, stage: str | None = None) -> None:
        self._data.update(tagged_splits(self._plan(stage), self._split, (self.spec, self.tokenizer)))

    def _collate(self) -> PadCollator:
        return PadCollator(self.tokenizer.pad_token_id)

    def train_dataloader(self) -> DataLoader:
        return train_loader(self._data, self._source("train"), self._collate(), self.spec, self.position)

    def val_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("validation")

    def test_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("test")

    def _eval_loaders(self, split: str) -> list[DataLoader]:
        return eval_loaders(self._data, split, self._source(split), self._collate(), self.spec)

    def state_dict(self) -> dict[str, Any]:
        """The training data position (saved in checkpoints; a mid-epoch resume continues at the next batch)."""
        return self.position.state_dict(getattr(self, "trainer", None))

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.position.load_state_dict(state_dict)
