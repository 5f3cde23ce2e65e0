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


def decode_table(data: bytes) -> pd.DataFrame:
    """Rebuild the table ``encode_table`` stored."""
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        manifest = json.loads(archive[_MANIFEST].tobytes().decode("utf-8"))
        if manifest.get("format") != FORMAT_VERSION:
            raise ValueError(f"Unknown table snapshot format {manifest.get('format')!r}")
        names: list[str] = []
        series: dict[int, pd.Series] = {}
        for position, column in enumerate(manifest["columns"]):
            names.append(column["name"])
            stored = archive[f"column{position}"]
            if column["encoding"] == "array":
                series[position] = pd.Series(stored, copy=False)
            else:
                series[position] = _decode_codes(stored, column["values"], column["dtype"])
    frame = pd.DataFrame(series)
    frame.columns = pd.Index(names)
    return frame


def _decode_codes(codes: np.ndarray, distinct_values: list[Any], dtype: str) -> pd.Series:
    lookup = np.empty(len(distinct_values) + 1, dtype=object)
    lookup[:-1] = distinct_values
    lookup[-1] = None  # code -1: a missing cell
    values = pd.Series(lookup[codes])
    try:
        return values.astype(dtype)
    except (TypeError, ValueError):
        return values


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
