"""``mmads data import``: build a dataset directory from CSV, JSON Lines or Parquet files.

A mapping (a small YAML file, or ``--map`` options) says, per contract file, which source file feeds
it and which source column becomes which contract column::

    items:
      file: products.csv                 # .csv, .jsonl/.json (JSON Lines), .parquet
      columns: {item_id: product, title: name, category: department, created_at: listed_at}
      keep: [price, brand]               # side features (default: none)
      time_unit: s                       # numeric times: s, ms, us or ns
    behaviors:
      file: actions.csv
      columns: {user_id: visitor, item_id: product, action: event, ts: unix_time}
      values: {action: {add_to_cart: cart, buy: purchase}}   # source value -> contract value
      time_unit: s
    impressions:
      file: shown.csv
      columns: {user_id: visitor, item_id: product, ts: unix_time}
      derive: {clicked: "clicks > 0"}    # a pandas expression over the source columns
      where: "placement == 'feed'"       # keep only these rows (pandas query)
      time_unit: s

Per file, also: ``time_format`` (strptime format of string times), ``timezone`` (of naive times,
default UTC), ``defaults`` (a constant for a contract column the source lacks) and ``id_type``
(``auto``: integers when the first chunk's ids are all integers, else strings; ``int``; ``str``).
``created_at: first_event`` on items dates each item at its first behavior or impression.

Files are read and written in chunks (:data:`CHUNK_ROWS` rows), so memory stays bounded whatever the
file size; a progress bar shows the rows. The result is then checked by ``validate``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from tqdm import tqdm

from infra.contract import OPTIONAL_COLUMNS, SCHEMA
from infra.errors import MmadsError

logger = logging.getLogger(__name__)

CHUNK_ROWS = 200_000
FIRST_EVENT = "first_event"
TARGETS = ("items", "behaviors", "impressions", "queries", "users")
_CANONICAL = re.compile(r"0|[1-9][0-9]{0,18}")


class DataImportError(MmadsError):
    """A mapping or a source file cannot be imported; the message names the file, row, column and value."""


class FileMapping(BaseModel):
    """How one source file becomes one contract file (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: Path
    columns: dict[str, str] = Field(default_factory=dict)  # contract column -> source column
    keep: list[str] = Field(default_factory=list)
    derive: dict[str, str] = Field(default_factory=dict)
    values: dict[str, dict[str, Any]] = Field(default_factory=dict)
    defaults: dict[str, Any] = Field(default_factory=dict)
    where: str | None = None
    time_unit: Literal["s", "ms", "us", "ns"] | None = None
    time_format: str | None = None
    timezone: str = "UTC"
    id_type: Literal["auto", "int", "str"] = "auto"

    @field_validator("file")
    @classmethod
    def _suffix(cls, v: Path) -> Path:
        if _format(v) is None:
            raise ValueError(f"{v}: the file must end in .csv, .jsonl, .json or .parquet")
        return v


class ImportMapping(BaseModel):
    """The whole mapping: one :class:`FileMapping` per contract file (items, behaviors, impressions required)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    items: FileMapping
    behaviors: FileMapping
    impressions: FileMapping
    queries: FileMapping | None = None
    users: FileMapping | None = None

    def targets(self) -> dict[str, FileMapping]:
        """The contract files to write, events first (``created_at: first_event`` needs them)."""
        order = ("behaviors", "impressions", "items", "queries", "users")
        return {t: m for t in order if (m := getattr(self, t)) is not None}


def _format(path: Path) -> str | None:
    name = path.name.lower()
    for suffix, fmt in ((".csv", "csv"), (".csv.gz", "csv"), (".jsonl", "jsonl"), (".json", "jsonl"),
                        (".jsonl.gz", "jsonl"), (".parquet", "parquet")):
        if name.endswith(suffix):
            return fmt
    return None


def load_mapping(path: Path | None, overrides: list[str], base_dir: Path | None = None) -> ImportMapping:
    """The mapping from a YAML file and ``--map`` options (``impressions.ts=unix_time``, ``items.file=x.csv``).

    Relative file paths are resolved against the YAML file's directory (or ``base_dir``).

    Raises:
        DataImportError: the YAML or an option is malformed, or a key is unknown.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise DataImportError(f"cannot read the mapping {path}: {exc}") from None
        base_dir = Path(path).resolve().parent
    for opt in overrides:
        key, sep, value = opt.partition("=")
        target, _, col = key.partition(".")
        if not sep or target not in TARGETS or not col:
            raise DataImportError(f"--map {opt!r}: expected FILE.COLUMN=SOURCE_COLUMN or FILE.file=PATH "
                               f"(FILE one of {list(TARGETS)})")
        section = raw.setdefault(target, {})
        if col in ("file", "time_unit", "time_format", "timezone", "id_type", "where"):
            section[col] = value
        else:
            section.setdefault("columns", {})[col] = value
    try:
        mapping = ImportMapping.model_validate(raw)
    except ValidationError as exc:
        parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:3]]
        raise DataImportError("invalid import mapping: " + "; ".join(parts)) from None
    if base_dir is not None:
        resolved = {t: m.model_copy(update={"file": (base_dir / m.file) if not m.file.is_absolute() else m.file})
                    for t, m in mapping.targets().items()}
        mapping = mapping.model_copy(update=resolved)
    return mapping


def _chunks(path: Path, columns: list[str] | None) -> Iterator[pd.DataFrame]:
    fmt = _format(path)
    if not path.is_file():
        raise DataImportError(f"{path}: no such file")
    if fmt == "parquet":
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=CHUNK_ROWS, columns=columns):
            yield batch.to_pandas()
    elif fmt == "csv":
        # every column as text: types are decided per column below, the same for every chunk
        yield from pd.read_csv(path, chunksize=CHUNK_ROWS, usecols=columns, dtype=str, keep_default_na=True)
    else:
        yield from pd.read_json(path, lines=True, chunksize=CHUNK_ROWS, dtype=False)


def _total_rows(path: Path) -> int | None:
    """Rows in a source file, for the progress bar: exact for parquet, counted lines for text.

    A CSV's count is its lines less the header (a quoted field with a line break counts twice);
    a JSON Lines count skips blank lines only at the end. Counting reads the file once in 1 MiB
    blocks (about a second per GiB), never holding more than a block.
    """
    fmt = _format(path)
    if fmt == "parquet":
        return int(pq.ParquetFile(path).metadata.num_rows)
    if not path.is_file():
        return None
    lines = 0
    last = b"\n"
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            lines += block.count(b"\n")
            last = block[-1:]
    lines += last != b"\n"  # a last line without its line break
    return max(lines - (fmt == "csv"), 0)


@dataclass
class _Writer:
    """Appends chunks to one parquet file with the schema of its first chunk."""

    path: Path
    writer: pq.ParquetWriter | None = None
    rows: int = 0

    def write(self, df: pd.DataFrame) -> None:
        table = pa.Table.from_pandas(df, preserve_index=False)
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, table.schema)
        elif table.schema != self.writer.schema:
            table = table.cast(self.writer.schema)
        self.writer.write_table(table)
        self.rows += len(df)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


@dataclass
class _State:
    """What carries over between chunks: id types decided on the first chunk, first event per item."""

    id_types: dict[str, str] = field(default_factory=dict)
    first_event: dict[Any, pd.Timestamp] = field(default_factory=dict)


def _where(src: str, start: int, mask: np.ndarray) -> str:
    row = start + int(np.flatnonzero(mask)[0])
    return f"{src}: row {row}"


def _ids(s: pd.Series, col: str, how: str, state: _State, key: str, src: str, start: int) -> pd.Series:
    """An id column as int64 or str, decided on the first chunk (``auto``) and the same afterwards."""
    if s.isna().any():
        raise DataImportError(f"{_where(src, start, s.isna().to_numpy())}: column '{col}' is empty")
    text = s.astype(str).str.strip()
    chosen = state.id_types.get(key) or (how if how != "auto" else
                                         "int" if text.map(lambda v: bool(_CANONICAL.fullmatch(v))).all() else "str")
    state.id_types[key] = chosen
    if chosen == "str":
        return text.astype(object)
    ok = text.map(lambda v: bool(_CANONICAL.fullmatch(v))).to_numpy()
    if not ok.all():
        bad = text[~ok].iloc[0]
        raise DataImportError(f"{_where(src, start, ~ok)}: column '{col}' = {bad!r} is not an integer id, but the "
                           f"first rows were (set id_type: str for this file)")
    return text.astype(np.int64)


def _times(s: pd.Series, col: str, m: FileMapping, src: str, start: int) -> pd.Series:
    """A time column as UTC timestamps (numbers with ``time_unit``, strings parsed)."""
    try:
        if m.time_unit is not None:
            out = pd.to_datetime(pd.to_numeric(s), unit=m.time_unit, utc=True)
        else:
            parsed = pd.to_datetime(s, format=m.time_format, utc=False)
            if getattr(parsed.dt, "tz", None) is None:
                parsed = parsed.dt.tz_localize(m.timezone)
            out = parsed.dt.tz_convert("UTC")
    except (ValueError, TypeError, OverflowError) as exc:
        raise DataImportError(f"{src}: column '{col}' (rows {start}..{start + len(s) - 1}): cannot read times "
                           f"({exc}); set time_unit (numbers) or time_format (strings)") from None
    bad = out.isna() & s.notna()
    if bad.any():
        first = s[bad].iloc[0]
        raise DataImportError(f"{_where(src, start, bad.to_numpy())}: column '{col}' = {first!r} is not a time")
    return out.dt.as_unit("us")


def _contract_columns(target: str) -> dict[str, str]:
    file = f"{target}.parquet"
    return {**SCHEMA[file], **OPTIONAL_COLUMNS.get(file, {})}


def _numbers_where_possible(df: pd.DataFrame, text_columns: set[str]) -> pd.DataFrame:
    """CSV text columns that hold only numbers as numbers (ids and times are converted on their own)."""
    out = df.copy()
    for col in out.columns:
        if col in text_columns or out[col].dtype != object:
            continue
        num = pd.to_numeric(out[col], errors="coerce")
        if (num.notna() | out[col].isna()).all():
            out[col] = num
    return out


def _convert(target: str, df: pd.DataFrame, m: FileMapping, state: _State, start: int) -> pd.DataFrame:
    """One source chunk as a contract chunk."""
    src = str(m.file)
    kinds = _contract_columns(target)
    df = _numbers_where_possible(df, {m.columns.get(c, c) for c, k in kinds.items() if k in ("id", "ts")})
    if m.where:
        df = df.query(m.where)
    out = pd.DataFrame(index=df.index)
    for col, kind in kinds.items():
        source = m.columns.get(col)
        if col in m.derive:
            out[col] = df.eval(m.derive[col])
        elif source == FIRST_EVENT:
            continue
        elif source is not None:
            if source not in df.columns:
                raise DataImportError(f"{src}: no column '{source}' (mapped to {target}.{col}); it has "
                                   f"{sorted(df.columns)[:20]}")
            out[col] = df[source]
        elif col in m.defaults:
            out[col] = m.defaults[col]
        elif col in df.columns:
            out[col] = df[col]
        else:
            continue
        if col in m.values:
            table = {str(k): v for k, v in m.values[col].items()}
            out[col] = out[col].map(lambda v, t=table: t.get(str(v), v))
        if kind == "id":
            out[col] = _ids(out[col], col, m.id_type, state, f"{target}.{col}", src, start)
        elif kind == "ts":
            out[col] = _times(out[col], col, m, src, start)
        elif kind == "clicked":
            out[col] = pd.to_numeric(out[col].map(lambda v: {"true": 1, "false": 0}.get(str(v).lower(), v)),
                                     errors="coerce").astype("Int8")
        elif kind.startswith("str"):
            out[col] = out[col].astype(object).where(out[col].notna(), None)
    for col in m.keep:
        if col not in df.columns:
            raise DataImportError(f"{src}: no column '{col}' to keep as a side feature")
        out[col] = df[col]
    return out.reset_index(drop=True)


def _note_first_events(state: _State, chunk: pd.DataFrame) -> None:
    if "item_id" not in chunk.columns or "ts" not in chunk.columns:
        return
    firsts = chunk.groupby("item_id", sort=False)["ts"].min()
    for item, ts in firsts.items():
        prev = state.first_event.get(item)
        if prev is None or ts < prev:
            state.first_event[item] = ts


def _fill_created_at(chunk: pd.DataFrame, state: _State, src: str) -> pd.DataFrame:
    when = chunk["item_id"].map(state.first_event)
    if when.isna().any():
        item = chunk.loc[when.isna(), "item_id"].iloc[0]
        raise DataImportError(f"{src}: item {item!r} has no behavior or impression to date it by "
                           f"(created_at: {FIRST_EVENT}); map a created_at column instead")
    cols = list(chunk.columns)
    chunk = chunk.assign(created_at=pd.to_datetime(when, utc=True).dt.as_unit("us"))
    position = cols.index("category") + 1 if "category" in cols else len(cols)
    return chunk[[*cols[:position], "created_at", *cols[position:]]]


@dataclass(frozen=True)
class ImportSummary:
    """Rows written per contract file."""

    out: Path
    rows: Mapping[str, int]


def import_dataset(mapping: ImportMapping, out: Path, *, progress: bool = True) -> ImportSummary:
    """Write the dataset directory ``out`` from the mapped source files (chunk by chunk).

    Args:
        mapping: what to read and how (see the module docstring).
        out: the dataset directory to write (created; existing contract files are replaced).
        progress: show a progress bar per file.

    Returns:
        The rows written per file.

    Raises:
        DataImportError: a source file is missing or a value cannot be converted (file, row, column, value).
    """
    out.mkdir(parents=True, exist_ok=True)
    state = _State()
    rows: dict[str, int] = {}
    for target, m in mapping.targets().items():
        writer = _Writer(out / f"{target}.parquet")
        start = 0
        try:
            with tqdm(total=_total_rows(m.file), disable=not progress, desc=f"import {target}", unit="row") as bar:
                for chunk in _chunks(m.file, None):
                    converted = _convert(target, chunk, m, state, start)
                    if target == "items" and m.columns.get("created_at") == FIRST_EVENT:
                        converted = _fill_created_at(converted, state, str(m.file))
                    if target in ("behaviors", "impressions"):
                        _note_first_events(state, converted)
                    writer.write(converted)
                    start += len(chunk)
                    bar.update(len(chunk))
        except (pd.errors.ParserError, ValueError, KeyError, TypeError, NameError, SyntaxError,
                pa.ArrowException) as exc:
            raise DataImportError(f"{m.file} (rows from {start}): {exc.__class__.__name__}: {str(exc)[:300]}") from None
        finally:
            writer.close()
        rows[target] = writer.rows
        logger.info("imported %s: %d rows from %s", target, writer.rows, m.file)
    return ImportSummary(out, rows)
