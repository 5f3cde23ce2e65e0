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
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from typing import Any

import numpy as np
import pandas as pd

FORMAT_VERSION = 1
_MANIFEST = "manifest"
# dtype kinds stored as raw arrays: bool, signed/unsigned int, float, complex, timedelta, datetime.
_RAW_KINDS = "biufcmM"


def encode_table(frame: pd.DataFrame) -> bytes:
    """Serialise ``frame`` (column names, values and dtypes; the index is not kept)."""
    arrays: dict[str, np.ndarray] = {}
    columns: list[dict[str, Any]] = []
    for position, name in enumerate(frame.columns):
        series = frame.iloc[:, position]
        key = f"column{position}"
        dtype = series.dtype
        if isinstance(dtype, np.dtype) and dtype.kind in _RAW_KINDS:
            arrays[key] = series.to_numpy()
            columns.append({"name": str(name), "encoding": "array"})
        else:
            codes, uniques = pd.factorize(series, use_na_sentinel=True)
            arrays[key] = codes.astype(np.int32 if len(uniques) < 2**31 else np.int64)
            columns.append(
                {
                    "name": str(name),
                    "encoding": "codes",
                    "dtype": str(dtype),
                    "values": [json_value(value) for value in uniques.tolist()],
                }
            )
    manifest = {"format": FORMAT_VERSION, "rows": len(frame), "columns": columns}
    arrays[_MANIFEST] = np.frombuffer(json.dumps(manifest).encode("utf-8"), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **arrays)
    return buffer.getvalue()


class TableSnapshot:
    """A stored table, decoded a range of rows at a time: only the rows asked for become a DataFrame.

    A million-row table costs its compact arrays (numbers as numbers, text as integer codes) until rows are
    asked for, so an analysis or a download can walk through it in chunks with little memory.
    """

    def __init__(self, data: bytes) -> None:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
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
        index = pd.RangeIndex(start, stop)
        series: dict[int, pd.Series] = {}
        for position, column in enumerate(self._columns):
            stored = self._arrays[position][start:stop]
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


def decode_table(data: bytes) -> pd.DataFrame:
    """Rebuild the whole table ``encode_table`` stored."""
    return TableSnapshot(data).rows()


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
