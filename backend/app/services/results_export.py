"""The results file: every uploaded row in its order, with ``anomaly_score``, ``is_anomaly`` and ``top_feature``.

Both formats are made a chunk of rows at a time, so a large file is never held whole in memory: CSV chunks
are sent as soon as they are rendered; an Excel workbook is written in openpyxl's write-only mode to an
anonymous temporary file, which is then sent in blocks.

Text cells that begin with ``=``, ``+``, ``-`` or ``@`` (or a tab or carriage return) get a leading ``'``, so
a spreadsheet shows them instead of running them as formulas (OWASP's advice on CSV injection). Numbers, and
text that is only a number such as ``-5``, are left as they are.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import IO, Any

import numpy as np
import pandas as pd
from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

from app.services.table_snapshot import TableSnapshot

RESULT_COLUMNS = ("anomaly_score", "is_anomaly", "top_feature")
# Rows rendered at a time: a few MB of CSV text for wide tables.
EXPORT_CHUNK_ROWS = 5_000
STREAM_BLOCK_BYTES = 1 << 20
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class RowResults:
    """An analysis's per-row results, aligned with the uploaded table's rows."""

    scores: np.ndarray
    threshold: float
    # Per row: index into feature_names of the column that contributed most (-1: none); None if not stored.
    top_columns: np.ndarray | None
    feature_names: list[str]


def escape_formula(value: Any) -> Any:
    """``value`` with a leading ``'`` if it is text a spreadsheet would run as a formula; otherwise unchanged."""
    if isinstance(value, str) and value.startswith(_FORMULA_PREFIXES) and not _is_number(value):
        return "'" + value
    return value


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def csv_blocks(table: TableSnapshot, results: RowResults, chunk_rows: int = EXPORT_CHUNK_ROWS) -> Iterator[bytes]:
    """The results as UTF-8 CSV, one block per ``chunk_rows`` rows (the first with the header)."""
    for index, chunk in enumerate(_result_chunks(table, results, chunk_rows)):
        yield chunk.to_csv(index=False, header=index == 0, lineterminator="\n").encode("utf-8")


def write_xlsx(table: TableSnapshot, results: RowResults, chunk_rows: int = EXPORT_CHUNK_ROWS) -> IO[bytes]:
    """The results as an Excel workbook in an anonymous temporary file, positioned at its start.

    The file is deleted when it is closed (``file_blocks`` closes it once it is sent).
    """
    handle = tempfile.TemporaryFile(suffix=".xlsx")  # noqa: SIM115 - returned open, closed by file_blocks
    try:
        workbook = Workbook(write_only=True)
        sheet = workbook.create_sheet("results")
        for index, chunk in enumerate(_result_chunks(table, results, chunk_rows)):
            if index == 0:
                sheet.append([_excel_value(name) for name in chunk.columns])
            cells = [_excel_column(chunk.iloc[:, position]) for position in range(chunk.shape[1])]
            for row in zip(*cells, strict=True):
                sheet.append(row)
        workbook.save(handle)
        handle.seek(0)
    except BaseException:
        handle.close()
        raise
    return handle


def file_blocks(handle: IO[bytes]) -> Iterator[bytes]:
    """The file's content in blocks; the file is closed at the end (or when the download stops)."""
    with handle:
        while block := handle.read(STREAM_BLOCK_BYTES):
            yield block


def _result_chunks(table: TableSnapshot, results: RowResults, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The table with the result columns appended, ``chunk_rows`` rows at a time, text escaped.

    The result columns are added beside the uploaded ones even when an uploaded column has the same name.
    """
    names = np.asarray([*(escape_formula(name) for name in results.feature_names), None], dtype=object)
    header = [escape_formula(str(column)) for column in table.columns] + list(RESULT_COLUMNS)
    # range(0, 1) for an empty table: one empty chunk, so the header is still written.
    for start in range(0, max(table.row_count, 1), chunk_rows):
        stop = min(start + chunk_rows, table.row_count)
        uploaded = table.rows(start, stop).reset_index(drop=True)
        columns = {position: _escaped(uploaded.iloc[:, position]) for position in range(uploaded.shape[1])}
        scores = results.scores[start:stop]
        top = results.top_columns[start:stop] if results.top_columns is not None else np.full(len(scores), -1)
        columns[len(columns)] = pd.Series(scores)
        columns[len(columns)] = pd.Series(scores > results.threshold)
        columns[len(columns)] = pd.Series(names[top], dtype=object)
        chunk = pd.DataFrame(columns)
        chunk.columns = pd.Index(header)
        yield chunk


def _escaped(series: pd.Series) -> pd.Series:
    """A text column with formula-like cells escaped; any other column as it is."""
    if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_datetime64_any_dtype(series):
        return series
    if pd.api.types.is_timedelta64_dtype(series) or pd.api.types.is_bool_dtype(series):
        return series
    return series.astype(object).map(escape_formula)


def _excel_column(series: pd.Series) -> list[Any]:
    """A column's cells as values openpyxl writes: missing and non-finite cells empty, dates without zone."""
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        series = series.dt.tz_localize(None)  # Excel has no time zones: keep the wall-clock time
    if pd.api.types.is_float_dtype(series):
        keep = np.isfinite(series.to_numpy(dtype=np.float64, na_value=np.nan))
    else:
        keep = series.notna().to_numpy(dtype=bool)
    cells = series.astype(object).where(keep, None).tolist()
    if series.dtype == object or isinstance(series.dtype, pd.StringDtype):
        return [_excel_value(cell) for cell in cells]
    return cells


def _excel_value(value: Any) -> Any:
    """One cell of a text (mixed) column as a value openpyxl can write."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return ILLEGAL_CHARACTERS_RE.sub("", value)  # control characters are not allowed in the file format
    if isinstance(value, datetime):
        return None if pd.isna(value) else value.replace(tzinfo=None)
    if isinstance(value, date | time | timedelta):
        return value
    return str(value)
