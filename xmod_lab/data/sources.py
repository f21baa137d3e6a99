"""One way to name where a language's split lives: a Hugging Face dataset id or local files, same schema.

A source is a small mapping (plain types, so Hydra can hold it)::

    path: facebook/xnli              # hub id, or a local file/dir; `{lang}` and `{split}` are substituted
    name: "{lang}"                   # hub config per language (ignored for local files)
    splits: {train: train, validation: validation, test: test}   # our split -> the source's split
    lang_column: null                # files holding several languages: keep rows whose value is `lang` or
                                     # starts with `lang-` (hub TyDiQA-GoldP: lang_column: id, langs: finnish, ...)

Local formats: ``.jsonl``/``.json`` (JSON Lines or a JSON array of rows), ``.csv``, ``.parquet``, ``.txt`` (one
``text`` row per line, for corpora), a directory
written by ``Dataset.save_to_disk``/``DatasetDict.save_to_disk``, or a directory holding ``<split>.<ext>``.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa

from xmod_lab import hub
from xmod_lab.data.languages import DEFAULT_LANGUAGE_MAP

_FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".txt")
# `owner/name` or `name`: anything else (extensions, deeper paths) is meant as a local path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_DEFAULT_SPLITS = {"train": "train", "validation": "validation", "test": "test"}


@dataclass(frozen=True)
class SourceSpec:
    path: str
    name: str | None = None
    splits: dict[str, str | None] = field(default_factory=lambda: dict(_DEFAULT_SPLITS))
    lang_column: str | None = None

    @classmethod
    def coerce(cls, source: SourceSpec | Mapping[str, Any] | str) -> SourceSpec:
        """Accept a spec, a plain/Hydra mapping, or a bare path string."""
        if isinstance(source, SourceSpec):
            return source
        if isinstance(source, str):
            return cls(path=source)
        unknown = set(source) - {"path", "name", "splits", "lang_column"}
        if unknown or "path" not in source:
            raise ValueError(
                f"A data source needs `path` and may have `name`, `splits`, `lang_column`; got keys {sorted(source)}."
            )
        splits = dict(_DEFAULT_SPLITS)
        splits.update(
            {str(k): (None if v is None else str(v)) for k, v in dict(source.get("splits") or {}).items()}
        )
        return cls(
            path=str(source["path"]),
            name=None if source.get("name") is None else str(source["name"]),
            splits=splits,
            lang_column=source.get("lang_column"),
        )

    def has_split(self, split: str) -> bool:
        return self.splits.get(split) is not None

    def describe(self, lang: str, split: str) -> str:
        where = _fill(self.path, lang, self.splits.get(split) or split)
        name = f" (config {_fill(self.name, lang, split)!r})" if self.name else ""
        return f"{where}{name} [language {lang!r}, split {split!r}]"


def _same_language(value: str, lang: str) -> bool:
    """A ``lang_column`` value names ``lang``: equal, ``<lang>-...`` (TyDi ids, ``en-de``), or a language name or
    code of the same adapter language before the first ``-`` (``arabic-12...`` for ``ar``)."""
    if value == lang or value.startswith(f"{lang}-"):
        return True
    head = value.split("-", 1)[0]
    same = DEFAULT_LANGUAGE_MAP.get(head)
    return same is not None and same == DEFAULT_LANGUAGE_MAP.get(lang)


def _fill(template: str, lang: str, split: str) -> str:
    return template.replace("{lang}", lang).replace("{split}", split)


def read_text(path: Path) -> str:
    """A file's text, or a clear error naming the file and line when it is not UTF-8."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ValueError(
            f"{path}:{line}: not UTF-8 (byte {data[err.start:err.start + 1]!r} at offset {err.start}). Re-encode the "
            f"file, e.g. `iconv -f latin1 -t utf-8 {path.name} > fixed.{path.suffix.lstrip('.')}`."
        ) from None


def _read_rows_json(path: Path) -> tuple[list[dict], list[int]]:
    """The rows, and the 1-based line each starts on (a JSON array: its position in the array)."""
    text = read_text(path)
    if text.lstrip().startswith("["):
        rows = json.loads(text)
        lines = list(range(1, len(rows) + 1))
    else:
        rows, lines = [], []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({err.msg}).") from err
            lines.append(lineno)
    for row, line in zip(rows, lines, strict=True):
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{line}: a {type(row).__name__}, expected a JSON object per row.")
    return rows, lines


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        kinds = sorted({_kind(v) for v in value if v is not None})
        return f"list of {' and '.join(kinds)}" if kinds else "list"
    return type(value).__name__


def _mixed_types(rows: list[dict]) -> tuple[int, str] | None:
    """(index, description) of the first row whose value types disagree with each other or with earlier rows."""
    seen: dict[str, tuple[str, int]] = {}
    for i, row in enumerate(rows):
        for column, value in row.items():
            if value is None or value == []:
                continue
            kind = _kind(value)
            if " and " in kind:
                return i, f"column {column!r} is a {kind} (one list must hold one type, e.g. all tag names or all ids)"
            first = seen.setdefault(column, (kind, i))
            if first[0] != kind and not (kind.startswith("list") and first[0] == "list"):
                return i, f"column {column!r} is a {kind}, but a {first[0]} in an earlier row"
    return None


def _load_file(path: Path) -> datasets.Dataset:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        rows, lines = _read_rows_json(path)
        if not rows:
            return datasets.Dataset.from_dict({})
        # from_list takes its columns from the first row: a key missing there would drop the column for every
        # row; every key of any row becomes a column, null where a row lacks it (reported at that row)
        columns = list(dict.fromkeys(key for row in rows for key in row))
        if any(len(row) != len(columns) for row in rows):
            rows = [{key: row.get(key) for key in columns} for row in rows]
        try:
            return datasets.Dataset.from_list(rows)
        except (TypeError, ValueError, ArithmeticError, pa.ArrowException) as err:
            found = _mixed_types(rows)
            if found is None:
                raise ValueError(f"{path}: the rows do not form one table ({type(err).__name__}: {err}).") from err
            raise ValueError(f"{path}:{lines[found[0]]}: {found[1]}.") from None
    if suffix == ".csv":
        import pandas as pd

        frame = pd.read_csv(io.StringIO(read_text(path)), keep_default_na=False)
        return datasets.Dataset.from_pandas(frame, preserve_index=False)
    if suffix == ".txt":  # plain text corpora: one row per line, in a `text` column
        return datasets.Dataset.from_dict({"text": read_text(path).splitlines()})
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return datasets.Dataset(pq.read_table(path))
    raise ValueError(f"{path}: unsupported file type {suffix!r}; use one of {', '.join(_FILE_SUFFIXES)}.")


def _is_saved_dataset(path: Path) -> bool:
    return any((path / f).exists() for f in ("dataset_info.json", "state.json", "dataset_dict.json"))


def _local_target(path: Path, split_name: str) -> Path | None:
    """The file or saved dataset that `path` designates, or None when `path` is not local."""
    if path.is_file() or (path.is_dir() and _is_saved_dataset(path)):
        return path
    if path.is_dir():
        for suffix in _FILE_SUFFIXES:
            if (path / f"{split_name}{suffix}").is_file():
                return path / f"{split_name}{suffix}"
        if (path / split_name).is_dir() and _is_saved_dataset(path / split_name):
            return path / split_name
    return None


def missing_local_file(source: SourceSpec | Mapping[str, Any] | str, lang: str, split: str) -> str | None:
    """The message :func:`load_split` would fail with for a local file that does not exist, else None (a split
    the source does not configure, a hub id, a file that exists): checkable before any data is read."""
    spec = SourceSpec.coerce(source)
    split_name = spec.splits.get(split)
    if split_name is None:
        return None
    filled = _fill(spec.path, lang, split_name)
    if _local_target(Path(filled).expanduser(), split_name) is not None:
        return None
    if not _HUB_ID.match(filled) or filled.lower().endswith(_FILE_SUFFIXES):
        return f"Data file not found: {spec.describe(lang, split)}. Check `path` and the language code."
    return None


def load_split(source: SourceSpec | Mapping[str, Any] | str, lang: str, split: str) -> datasets.Dataset:
    """Rows of one language and split, from the hub or local files; never empty (a clear error instead)."""
    spec = SourceSpec.coerce(source)
    split_name = spec.splits.get(split)
    if split_name is None:
        raise ValueError(f"Source {spec.path!r} has no {split!r} split configured (splits: {spec.splits}).")
    filled = _fill(spec.path, lang, split_name)
    local = _local_target(Path(filled).expanduser(), split_name)
    if local is not None:
        if local.is_file():
            try:
                ds = _load_file(local)
            except ValueError as err:
                raise ValueError(f"{err} [language {lang!r}, split {split!r}]") from None
        else:
            ds = datasets.load_from_disk(str(local))
            if isinstance(ds, datasets.DatasetDict):
                if split_name not in ds:
                    raise ValueError(f"{local}: saved DatasetDict has splits {list(ds)}, not {split_name!r}.")
                ds = ds[split_name]
    elif not _HUB_ID.match(filled) or filled.lower().endswith(_FILE_SUFFIXES):
        raise FileNotFoundError(
            f"Data file not found: {spec.describe(lang, split)}. Check `path` and the language code."
        )
    else:
        name = _fill(spec.name, lang, split_name) if spec.name else None
        with hub.reaching("dataset", filled, "data.source.path", f" (config {name!r})" if name else ""):
            ds = datasets.load_dataset(filled, name=name, split=split_name)
    if spec.lang_column is not None:
        if spec.lang_column not in ds.column_names:
            raise ValueError(
                f"{spec.describe(lang, split)}: lang_column {spec.lang_column!r} is not a column ({ds.column_names})."
            )
        values = list(ds[spec.lang_column])
        keep = [i for i, v in enumerate(values) if _same_language(str(v), lang)]
        if not keep and values:
            raise ValueError(
                f"{spec.describe(lang, split)}: lang_column {spec.lang_column!r} keeps none of the {len(values)} rows "
                f"(values like {str(values[0])!r}): a row is kept when its value is {lang!r}, starts with '{lang}-', "
                "or starts with a language name of the same language (TyDi ids: 'arabic-...' for ar). For a file "
                "that holds one language only, set lang_column: null (e.g. data.eval_source.lang_column=null)."
            )
        ds = ds.select(keep)
    if len(ds) == 0:
        raise ValueError(
            f"Empty split: {spec.describe(lang, split)} has no rows. Remove the language or fix the data."
        )
    return ds


def source_fingerprint(source: SourceSpec | Mapping[str, Any] | str, lang: str, split: str) -> str:
    """A key that changes when the rows may have changed: file size and mtime locally, the spec for hub ids."""
    spec = SourceSpec.coerce(source)
    split_name = spec.splits.get(split) or split
    filled = _fill(spec.path, lang, split_name)
    local = _local_target(Path(filled).expanduser(), split_name)
    parts: list[str] = [json.dumps([spec.path, spec.name, split_name, spec.lang_column, lang])]
    if local is not None:
        files = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file())
        for f in files:
            st = f.stat()
            parts.append(f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]
