"""A parsed table stored next to its upload, so an analysis never parses the file again.

Parsing a 50,000-row workbook takes most of a second; reading this snapshot back takes a few milliseconds.
The format is a NumPy ``.npz`` archive read with ``allow_pickle=False`` (stored bytes can never run code):
numeric, boolean and date columns are kept as their arrays, every other column as integer codes into a
JSON list of its distinct values.
"""

from __future__ import annotations

import io
import json
import math
import tempfile
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from typing import Any, BinaryIO

import numpy as np
import pandas as pd

FORMAT_VERSION = 1
_MANIFEST = "manifest"
# dtype kinds stored as raw arrays: bool, signed/unsigned int, float, complex, timedelta, datetime.
_RAW_KINDS = "biufcmM"


def encode_table(frame: pd.DataFrame) -> bytes:
    """Serialise ``frame`` (column names, values and dtypes; the index is not kept)."""
    writer = TableSnapshotWriter()
    writer.add(frame)
    with writer.finish() as archive:
        return archive.read()


class TableSnapshotWriter:
    """Builds a snapshot from a table given a chunk of rows at a time, so a large upload is never whole in memory.

    Text columns are coded across chunks (one list of distinct values per column). A column whose type changes
    between chunks (numbers first, text later) is coded as text from its first row on.
    """

    def __init__(self) -> None:
        self.columns: list[str] = []
        self.row_count = 0
        self._parts: list[list[np.ndarray]] = []
        self._coded: list[bool] = []
        self._dtypes: list[str] = []
        self._distinct: list[dict[tuple[str, Any], int]] = []

    def add(self, chunk: pd.DataFrame) -> None:
        """Append ``chunk``'s rows (its columns must be the first chunk's)."""
        if not self.columns:
            self.columns = [str(name) for name in chunk.columns]
            self._parts = [[] for _ in self.columns]
            self._distinct = [{} for _ in self.columns]
            self._coded = [not _is_raw(chunk.iloc[:, position]) for position in range(len(self.columns))]
            self._dtypes = [str(dtype) for dtype in chunk.dtypes]
        for position in range(len(self.columns)):
            series = chunk.iloc[:, position]
            parts = self._parts[position]
            if not self._coded[position] and not _fits(parts, series):
                self._coded[position], self._dtypes[position] = True, "object"
                self._parts[position] = parts = [self._codes(position, pd.Series(part)) for part in parts]
            parts.append(self._codes(position, series) if self._coded[position] else series.to_numpy())
        self.row_count += len(chunk)

    def finish(self) -> BinaryIO:
        """The snapshot, a NumPy archive readable without pickle, in a temporary file positioned at its start.

        Each column's chunks are joined and let go one column at a time, and the archive goes to disk (deleted
        when the file is closed), not to a growing buffer: at no point are there two copies of the table.
        """
        arrays: dict[str, np.ndarray] = {}
        columns: list[dict[str, Any]] = []
        for position, name in enumerate(self.columns):
            arrays[f"column{position}"] = np.concatenate(self._parts[position])
            self._parts[position] = []
            if self._coded[position]:
                values = [value for _, value in self._distinct[position]]
                columns.append({"name": name, "encoding": "codes", "dtype": self._dtypes[position], "values": values})
            else:
                columns.append({"name": name, "encoding": "array"})
        manifest = {"format": FORMAT_VERSION, "rows": self.row_count, "columns": columns}
        arrays[_MANIFEST] = np.frombuffer(json.dumps(manifest).encode("utf-8"), dtype=np.uint8)
        archive = tempfile.TemporaryFile(suffix=".npz")  # noqa: SIM115 - returned open; closing deletes it
        np.savez(archive, allow_pickle=False, **arrays)
        archive.seek(0)
        return archive

    def _codes(self, position: int, series: pd.Series) -> np.ndarray:
        # True == 1 and False == 0 to a hash table, so a column mixing types is factorized on (type, value)
        # pairs; the plain factorization of uniform columns stays in C.
        if pd.api.types.infer_dtype(series, skipna=True).startswith("mixed"):
            keyed = pd.Series([None if pd.isna(value) else (type(value).__name__, value) for value in series])
            codes, unique_keys = pd.factorize(keyed, use_na_sentinel=True)
            uniques = [value for _, value in unique_keys]
        else:
            codes, unique_values = pd.factorize(series, use_na_sentinel=True)
            uniques = unique_values.tolist()
        distinct = self._distinct[position]
        # The chunk's codes mapped to the column's; the extra last entry keeps code -1 (a missing cell) as -1.
        mapping = [distinct.setdefault((type(value).__name__, json_value(value)), len(distinct)) for value in uniques]
        return np.asarray([*mapping, -1], dtype=np.int32)[codes]


def _is_raw(series: pd.Series) -> bool:
    return isinstance(series.dtype, np.dtype) and series.dtype.kind in _RAW_KINDS


def _fits(parts: list[np.ndarray], series: pd.Series) -> bool:
    """Whether ``series`` can be stored as a raw array beside ``parts`` (numbers of any width join up)."""
    if not _is_raw(series):
        return False
    if not parts:
        return True
    kinds = {parts[0].dtype.kind, series.dtype.kind}
    return len(kinds) == 1 or kinds <= set("biuf")


class TableSnapshot:
    """A stored table, decoded a range of rows at a time: only the rows asked for become a DataFrame.

    A million-row table costs its compact arrays (numbers as numbers, text as integer codes) until rows are
    asked for, so an analysis or a download can walk through it in chunks with little memory.
    """

    def __init__(self, data: bytes | BinaryIO) -> None:
        with np.load(io.BytesIO(data) if isinstance(data, bytes) else data, allow_pickle=False) as archive:
            manifest = json.loads(archive[_MANIFEST].tobytes().decode("utf-8"))
            if manifest.get("format") != FORMAT_VERSION:
                raise ValueError(f"Unknown table snapshot format {manifest.get('format')!r}")
            self._columns: list[dict[str, Any]] = manifest["columns"]
            self._arrays = [archive[f"column{position}"] for position in range(len(self._columns))]
        self.row_count: int = manifest["rows"]
        self.columns: list[str] = [column["name"] for column in self._columns]
        # Per coded column: its distinct values, with None last for code -1 (a missing cell).
        self._lookups: dict[int, np.ndarray] = {}
        for position, column in enumerate(self._columns):
            if column["encoding"] == "codes":
                lookup = np.empty(len(column["values"]) + 1, dtype=object)
                lookup[:-1] = column["values"]
                lookup[-1] = None
                self._lookups[position] = lookup

    def rows(self, start: int = 0, stop: int | None = None) -> pd.DataFrame:
        """Rows ``start`` to ``stop`` (exclusive) as a DataFrame whose index is their row numbers."""
        stop = self.row_count if stop is None else min(stop, self.row_count)
        return self._frame(slice(start, stop), pd.RangeIndex(start, stop))

    def take(self, rows: np.ndarray) -> pd.DataFrame:
        """The rows numbered ``rows`` (in that order) as a DataFrame whose index is their row numbers."""
        positions = np.asarray(rows, dtype=np.int64)
        return self._frame(positions, pd.Index(positions))

    def _frame(self, selection: slice | np.ndarray, index: pd.Index) -> pd.DataFrame:
        series: dict[int, pd.Series] = {}
        for position, column in enumerate(self._columns):
            stored = self._arrays[position][selection]
            if column["encoding"] == "array":
                series[position] = pd.Series(stored, index=index, copy=False)
            else:
                series[position] = _decode_codes(self._lookups[position][stored], column["dtype"], index)
        frame = pd.DataFrame(series, index=index)
        frame.columns = pd.Index(self.columns)
        return frame

    def chunks(self, chunk_rows: int) -> Iterator[pd.DataFrame]:
        """All rows in order, ``chunk_rows`` at a time."""
        for start in range(0, self.row_count, chunk_rows):
            yield self.rows(start, start + chunk_rows)


def _decode_codes(values: np.ndarray, dtype: str, index: pd.Index) -> pd.Series:
    series = pd.Series(values, index=index)
    try:
        return series.astype(dtype)
    except (TypeError, ValueError):
        return series


def json_value(value: Any) -> Any:
    """``value`` as a JSON/BSON-friendly scalar: NaN and NaT become ``None``, dates ISO text."""
    if value is None or value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, np.generic):
        if isinstance(value, np.datetime64):
            return None if np.isnat(value) else pd.Timestamp(value).isoformat()
        if isinstance(value, np.timedelta64):
            return None if np.isnat(value) else str(pd.Timedelta(value))
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return str(pd.Timedelta(value))
    return str(value)
