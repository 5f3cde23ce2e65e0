"""A parsed table stored next to its upload, so an analysis never parses the file again.

Parsing a 50,000-row workbook takes most of a second; reading this snapshot back takes a few milliseconds.
The format is a NumPy ``.npz`` archive read with ``allow_pickle=False`` (stored bytes can never run code):
numeric, boolean and date columns are kept as their arrays, other columns as integer codes into a JSON list
of their distinct values while those stay few (``MAX_CODED_VALUES`` a column, ``MAX_CODED_VALUES_TOTAL`` a
table), and past that as free text: the cells' UTF-8 bytes end to end with their lengths, which costs the
text itself and a few bytes a row, however many values are distinct. The model leaves mostly-distinct text
out anyway; decoding gives the same values back either way.
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

FORMAT_VERSION = 2
# Format 1 had no free-text columns; it reads the same.
_READABLE_FORMATS = (1, 2)
_MANIFEST = "manifest"
MAX_CODED_VALUES = 20_000
MAX_CODED_VALUES_TOTAL = 200_000
_ARRAY, _CODES, _TEXT = "array", "codes", "text"
# A free-text cell's kind: missing, text (its UTF-8 bytes), or another JSON value (its JSON text).
_MISSING, _STRING, _JSON = 0, 1, 2
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

    Text columns are coded across chunks (one list of distinct values per column) until a column has more than
    ``max_coded_values`` distinct values or the table more than ``max_coded_values_total``; that column is then
    stored as free text from its first row on. A column whose type changes between chunks (numbers first, text
    later) is stored as text from its first row on.
    """

    def __init__(
        self, max_coded_values: int = MAX_CODED_VALUES, max_coded_values_total: int = MAX_CODED_VALUES_TOTAL
    ) -> None:
        self.columns: list[str] = []
        self.row_count = 0
        self.max_coded_values = max_coded_values
        self.max_coded_values_total = max_coded_values_total
        self._parts: list[list[Any]] = []
        self._storage: list[str] = []
        self._dtypes: list[str] = []
        self._distinct: list[dict[tuple[str, Any], int]] = []

    def add(self, chunk: pd.DataFrame) -> None:
        """Append ``chunk``'s rows (its columns must be the first chunk's)."""
        if not self.columns:
            self.columns = [str(name) for name in chunk.columns]
            self._parts = [[] for _ in self.columns]
            self._distinct = [{} for _ in self.columns]
            self._storage = [
                _ARRAY if _is_raw(chunk.iloc[:, position]) else _CODES for position in range(len(self.columns))
            ]
            self._dtypes = [str(dtype) for dtype in chunk.dtypes]
        for position in range(len(self.columns)):
            series = chunk.iloc[:, position]
            parts = self._parts[position]
            if self._storage[position] == _ARRAY and not _fits(parts, series):
                self._storage[position], self._dtypes[position] = _CODES, "object"
                self._parts[position] = parts = [self._codes(position, pd.Series(part)) for part in parts]
            if self._storage[position] == _ARRAY:
                parts.append(series.to_numpy())
            elif self._storage[position] == _CODES:
                parts.append(self._codes(position, series))
                if self._too_many_values(position):
                    self._to_text(position)
            else:
                parts.append(_text_part(series.tolist()))
        self.row_count += len(chunk)

    def finish(self, destination: BinaryIO | None = None) -> BinaryIO:
        """The snapshot, a NumPy archive readable without pickle, written to ``destination`` (default: a
        temporary file, deleted when closed) and returned positioned at its start.

        Each column's chunks are joined and let go one column at a time, and the archive goes to disk, not to a
        growing buffer: at no point are there two copies of the table.
        """
        arrays: dict[str, np.ndarray] = {}
        columns: list[dict[str, Any]] = []
        for position, name in enumerate(self.columns):
            parts, self._parts[position] = self._parts[position], []
            storage = self._storage[position]
            if storage == _TEXT:
                for field, index in (("bytes", 0), ("lengths", 1), ("kinds", 2)):
                    arrays[f"column{position}_{field}"] = np.concatenate([part[index] for part in parts])
            else:
                arrays[f"column{position}"] = np.concatenate(parts)
            column: dict[str, Any] = {"name": name, "encoding": storage}
            if storage != _ARRAY:
                column["dtype"] = self._dtypes[position]
            if storage == _CODES:
                column["values"] = [value for _, value in self._distinct[position]]
            columns.append(column)
        manifest = {"format": FORMAT_VERSION, "rows": self.row_count, "columns": columns}
        arrays[_MANIFEST] = np.frombuffer(json.dumps(manifest).encode("utf-8"), dtype=np.uint8)
        archive = destination or tempfile.TemporaryFile(suffix=".npz")  # noqa: SIM115 - returned open
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

    def _too_many_values(self, position: int) -> bool:
        if len(self._distinct[position]) > self.max_coded_values:
            return True
        return sum(map(len, self._distinct)) > self.max_coded_values_total

    def _to_text(self, position: int) -> None:
        """Store a coded column as free text from its first row on, and forget its distinct values."""
        lookup = _lookup([value for _, value in self._distinct[position]])
        self._parts[position] = [_text_part(lookup[codes].tolist()) for codes in self._parts[position]]
        self._storage[position], self._distinct[position] = _TEXT, {}


def _text_part(values: list[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cells as free text: their bytes end to end, each cell's length, and its kind (missing, text, JSON)."""
    encoded: list[bytes] = []
    kinds = np.empty(len(values), dtype=np.uint8)
    for index, value in enumerate(values):
        value = json_value(value)
        if value is None:
            kinds[index] = _MISSING
            encoded.append(b"")
        elif isinstance(value, str):
            kinds[index] = _STRING
            encoded.append(value.encode("utf-8", "surrogatepass"))
        else:
            kinds[index] = _JSON
            encoded.append(json.dumps(value).encode("utf-8"))
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    return np.frombuffer(b"".join(encoded), dtype=np.uint8), lengths, kinds


def _lookup(values: list[Any]) -> np.ndarray:
    """A coded column's distinct values, with None last for code -1 (a missing cell)."""
    lookup = np.empty(len(values) + 1, dtype=object)
    lookup[:-1] = values
    lookup[-1] = None
    return lookup


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

    A million-row table costs its compact arrays (numbers as numbers, text as integer codes or as its bytes)
    until rows are asked for, so an analysis or a download can walk through it in chunks with little memory.
    """

    def __init__(self, data: bytes | BinaryIO) -> None:
        with np.load(io.BytesIO(data) if isinstance(data, bytes) else data, allow_pickle=False) as archive:
            manifest = json.loads(archive[_MANIFEST].tobytes().decode("utf-8"))
            if manifest.get("format") not in _READABLE_FORMATS:
                raise ValueError(f"Unknown table snapshot format {manifest.get('format')!r}")
            self._columns: list[dict[str, Any]] = manifest["columns"]
            self._arrays: list[Any] = []
            for position, column in enumerate(self._columns):
                if column["encoding"] == _TEXT:
                    lengths = archive[f"column{position}_lengths"]
                    offsets = np.concatenate([np.zeros(1, dtype=np.int64), np.cumsum(lengths)])
                    self._arrays.append(
                        (archive[f"column{position}_bytes"], offsets, archive[f"column{position}_kinds"])
                    )
                else:
                    self._arrays.append(archive[f"column{position}"])
        self.row_count: int = manifest["rows"]
        self.columns: list[str] = [column["name"] for column in self._columns]
        self._lookups = {
            position: _lookup(column["values"])
            for position, column in enumerate(self._columns)
            if column["encoding"] == _CODES
        }

    def rows(self, start: int = 0, stop: int | None = None) -> pd.DataFrame:
        """Rows ``start`` to ``stop`` (exclusive) as a DataFrame whose index is their row numbers."""
        stop = self.row_count if stop is None else min(stop, self.row_count)
        return self._frame(np.arange(start, max(start, stop)), pd.RangeIndex(start, max(start, stop)))

    def take(self, rows: np.ndarray) -> pd.DataFrame:
        """The rows numbered ``rows`` (in that order) as a DataFrame whose index is their row numbers."""
        positions = np.asarray(rows, dtype=np.int64)
        return self._frame(positions, pd.Index(positions))

    def _frame(self, positions: np.ndarray, index: pd.Index) -> pd.DataFrame:
        # A range of rows is sliced (a view, no copy); other selections are gathered.
        contiguous = len(positions) > 0 and int(positions[-1]) - int(positions[0]) == len(positions) - 1
        selection: slice | np.ndarray = slice(int(positions[0]), int(positions[-1]) + 1) if contiguous else positions
        series: dict[int, pd.Series] = {}
        for position, column in enumerate(self._columns):
            if column["encoding"] == _ARRAY:
                series[position] = pd.Series(self._arrays[position][selection], index=index, copy=False)
            elif column["encoding"] == _CODES:
                values = self._lookups[position][self._arrays[position][selection]]
                series[position] = _typed(values, column["dtype"], index)
            else:
                data, offsets, kinds = self._arrays[position]
                series[position] = _typed(_decode_text(data, offsets, kinds, positions), column["dtype"], index)
        frame = pd.DataFrame(series, index=index)
        frame.columns = pd.Index(self.columns)
        return frame

    def chunks(self, chunk_rows: int) -> Iterator[pd.DataFrame]:
        """All rows in order, ``chunk_rows`` at a time."""
        for start in range(0, self.row_count, chunk_rows):
            yield self.rows(start, start + chunk_rows)


def _decode_text(data: np.ndarray, offsets: np.ndarray, kinds: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The cells of a free-text column at ``rows``, as the values they were stored from."""
    values = np.empty(len(rows), dtype=object)
    for index, row in enumerate(rows.tolist()):
        kind = int(kinds[row])
        cell = data[int(offsets[row]) : int(offsets[row + 1])].tobytes()
        if kind == _STRING:
            values[index] = cell.decode("utf-8", "surrogatepass")
        elif kind == _JSON:
            values[index] = json.loads(cell)
        else:
            values[index] = None
    return values


def _typed(values: np.ndarray, dtype: str, index: pd.Index) -> pd.Series:
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
