"""The results file: every uploaded row in its order, with ``anomaly_score``, ``is_anomaly``, ``top_feature`` and
the analyst's ``label`` (``anomaly``, ``normal`` or empty).

Both formats are made a chunk of rows at a time from the stored table, so a large file is never held whole in
memory: CSV chunks are sent as soon as they are rendered; an Excel workbook is written row by row with
xlsxwriter in its constant-memory mode to an anonymous temporary file, which is then sent in blocks. Each
chunk first looks at a cancel flag, so a download whose client went away stops within one chunk.

Text goes through ``spreadsheet_text`` in both formats, cells and column names alike: control characters are
removed first, then text a spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@`` first, or a tab or
carriage return) gets a leading ``'`` (OWASP's advice on CSV injection). In that order, a control character
in front of ``=`` cannot hide a formula. Numbers, and text that is only a number such as ``-5``, are left as
they are; the workbook writes text as text whatever it starts with.
"""

from __future__ import annotations

import logging
import re
import tempfile
import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xlsxwriter

from app.services.table_snapshot import TableSnapshot

logger = logging.getLogger(__name__)

# The columns scoring adds to every row (batch scoring's output has them too), then the analyst's label.
SCORE_COLUMNS = ("anomaly_score", "is_anomaly", "top_feature")
RESULT_COLUMNS = (*SCORE_COLUMNS, "label")
# Rows rendered at a time: a few MB of CSV text for wide tables, and how far a cancelled export runs on.
EXPORT_CHUNK_ROWS = 5_000
STREAM_BLOCK_BYTES = 1 << 20
SHEET_NAME = "results"
# Characters an .xlsx file cannot hold (XML 1.0 forbids them) and that no CSV reader needs: C0 controls but
# tab, line feed and carriage return.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
# Excel's serial dates count days from 1899-12-31 and take 1900 for a leap year: one day more from March 1900.
_EXCEL_EPOCH = np.datetime64("1899-12-31", "D")
_EXCEL_FAKE_LEAP_DAY = 60
_ONE_DAY = np.timedelta64(1, "D")
# How date (dtype kind M) and duration (kind m) columns are shown.
_SERIAL_FORMATS = {"M": "yyyy-mm-dd hh:mm:ss", "m": "[h]:mm:ss"}


class ExportCancelledError(Exception):
    """The download was cancelled (its client went away): the export stopped before its end."""


@dataclass(frozen=True)
class RowResults:
    """An analysis's per-row results, aligned with the uploaded table's rows."""

    scores: np.ndarray
    threshold: float
    # Per row: index into feature_names of the column that contributed most (-1: none); None if not stored.
    top_columns: np.ndarray | None
    feature_names: list[str]
    # What analysts said of rows ("anomaly", "normal"), by row number: the label column.
    labels: dict[int, str] = field(default_factory=dict)


def spreadsheet_text(text: str) -> str:
    """``text`` as it is safe to put in a spreadsheet cell: without control characters, and with a leading
    ``'`` if a spreadsheet would otherwise run it as a formula (text that is only a number is kept as it is)."""
    text = _CONTROL_CHARACTERS.sub("", text)
    if text.startswith(_FORMULA_STARTS) and not _PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


def csv_blocks(
    table: TableSnapshot, results: RowResults, cancelled: threading.Event, chunk_rows: int = EXPORT_CHUNK_ROWS
) -> Generator[bytes, None, None]:
    """The results as UTF-8 CSV with CRLF line ends (RFC 4180), one block per ``chunk_rows`` rows (the first
    with the header)."""
    for index, chunk in enumerate(result_chunks(table, results, cancelled, chunk_rows)):
        # With CRLF ends, a cell holding a carriage return is quoted: a "\n" end would leave it bare, and a
        # reader that takes CR for a line break would see the rest of the cell as a new row.
        yield chunk.to_csv(index=False, header=index == 0, lineterminator="\r\n").encode("utf-8")


def xlsx_blocks(
    table: TableSnapshot, results: RowResults, cancelled: threading.Event, chunk_rows: int = EXPORT_CHUNK_ROWS
) -> Generator[bytes, None, None]:
    """The results as an Excel workbook, in blocks: written whole to a temporary file first (the zip format
    needs its end before its start can be read), deleted once sent or when the download stops."""
    with tempfile.TemporaryFile(suffix=".xlsx") as handle:
        _write_xlsx(handle, table, results, cancelled, chunk_rows)
        handle.seek(0)
        while block := handle.read(STREAM_BLOCK_BYTES):
            yield block


def _write_xlsx(
    handle: Any, table: TableSnapshot, results: RowResults, cancelled: threading.Event, chunk_rows: int
) -> None:
    # Constant-memory mode keeps one row in memory and its rows in a file of tmpdir: a directory of this
    # export's own, so a cancelled export leaves nothing behind. Text is never turned into formulas, links or
    # numbers: what a cell held as text stays text.
    with tempfile.TemporaryDirectory(prefix="xlsx-export-") as scratch:
        workbook = xlsxwriter.Workbook(
            handle,
            {
                "constant_memory": True,
                "tmpdir": scratch,
                "strings_to_formulas": False,
                "strings_to_urls": False,
                "strings_to_numbers": False,
            },
        )
        sheet = workbook.add_worksheet(SHEET_NAME)
        formats = {kind: workbook.add_format({"num_format": shown}) for kind, shown in _SERIAL_FORMATS.items()}
        row_number = 0
        for chunk in result_chunks(table, results, cancelled, chunk_rows):
            if row_number == 0:
                sheet.write_row(0, 0, list(chunk.columns))
                row_number = 1
                for position in range(chunk.shape[1]):
                    # Dates and durations are written as Excel serial numbers in a column shown as dates.
                    kind = chunk.iloc[:, position].dtype.kind
                    if kind in formats:
                        sheet.set_column(position, position, None, formats[kind])
            cells = [_excel_cells(chunk.iloc[:, position]) for position in range(chunk.shape[1])]
            for row in zip(*cells, strict=True):
                sheet.write_row(row_number, 0, row)
                row_number += 1
        workbook.close()


def result_chunks(
    table: TableSnapshot, results: RowResults, cancelled: threading.Event, chunk_rows: int = EXPORT_CHUNK_ROWS
) -> Iterator[pd.DataFrame]:
    """The table with the result columns appended, ``chunk_rows`` rows at a time, text made spreadsheet-safe.

    The result columns are added beside the uploaded ones even when an uploaded column has the same name.
    Raises ``ExportCancelledError`` at the first chunk after ``cancelled`` is set.
    """
    names = np.asarray([*(spreadsheet_text(name) for name in results.feature_names), None], dtype=object)
    header = [spreadsheet_text(str(column)) for column in table.columns] + list(RESULT_COLUMNS)
    # range(0, 1) for an empty table: one empty chunk, so the header is still written.
    for start in range(0, max(table.row_count, 1), chunk_rows):
        if cancelled.is_set():
            logger.info("A results export stopped after %d of %d rows: its download was cancelled", start,
                        table.row_count)  # fmt: skip
            raise ExportCancelledError
        stop = min(start + chunk_rows, table.row_count)
        uploaded = table.rows(start, stop).reset_index(drop=True)
        columns = {position: _safe_text(uploaded.iloc[:, position]) for position in range(uploaded.shape[1])}
        scores = results.scores[start:stop]
        top = results.top_columns[start:stop] if results.top_columns is not None else np.full(len(scores), -1)
        columns[len(columns)] = pd.Series(scores)
        columns[len(columns)] = pd.Series(scores > results.threshold)
        columns[len(columns)] = pd.Series(names[top], dtype=object)
        columns[len(columns)] = pd.Series([results.labels.get(row) for row in range(start, stop)], dtype=object)
        chunk = pd.DataFrame(columns)
        chunk.columns = pd.Index(header)
        yield chunk


def _safe_text(series: pd.Series) -> pd.Series:
    """A column with its text cells made spreadsheet-safe; numeric, boolean and date columns as they are."""
    if series.dtype.kind in "biufcmM":
        return series
    return series.astype(object).map(lambda value: spreadsheet_text(value) if isinstance(value, str) else value)


def _excel_cells(series: pd.Series) -> list[Any]:
    """A column's cells as values xlsxwriter writes: missing and non-finite cells ``None`` (left empty), dates
    and durations as serial numbers (their column is formatted to show them), text and numbers as they are."""
    kind = series.dtype.kind
    if kind in "mM":
        if isinstance(series.dtype, pd.DatetimeTZDtype):
            series = series.dt.tz_localize(None)  # Excel has no time zones: keep the wall-clock time
        values = series.to_numpy()
        # The epoch in days keeps the column's own unit, so dates past 2262 do not overflow nanoseconds.
        days = (values - _EXCEL_EPOCH) / _ONE_DAY if kind == "M" else values / _ONE_DAY
        if kind == "M":
            days = np.where(days >= _EXCEL_FAKE_LEAP_DAY, days + 1, days)
        return _blank_where(days, np.isnat(values))
    if kind in "biuf":
        if kind == "f":
            return _blank_where(series, ~np.isfinite(series.to_numpy(dtype=np.float64, na_value=np.nan)))
        return _blank_where(series, series.isna().to_numpy(dtype=bool))
    return [_excel_value(value) for value in series.tolist()]


def _blank_where(values: Any, missing: np.ndarray) -> list[Any]:
    """``values`` as Python scalars, ``None`` where ``missing``."""
    cells = np.asarray(values, dtype=object)
    cells[missing] = None
    return cells.tolist()


def _excel_value(value: Any) -> Any:
    """One cell of a text (mixed) column as a value xlsxwriter writes as what it is."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if pd.isna(value):
        return None
    return spreadsheet_text(str(value))
