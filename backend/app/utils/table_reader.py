"""Read an uploaded or local table (.csv, .xlsx, .xls) into a DataFrame.

One reader for the training CLI, ``detect_anomalies_in_excel`` and the API, so a file that trains a model
reads the same way when it is scored.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import BinaryIO

import pandas as pd

SUPPORTED_EXTENSIONS = (".csv", ".xlsx", ".xls")
_SNIFF_BYTES = 64 * 1024
_DELIMITERS = ",;\t|"


class TableReadError(ValueError):
    """The file could not be read as a table; the message says what to do about it."""


class UnsupportedFileTypeError(TableReadError):
    """The file's extension is not one the reader understands."""


def file_extension(filename: str) -> str:
    """Return the lower-cased extension of ``filename`` if supported, else raise ``UnsupportedFileTypeError``."""
    extension = Path(filename).suffix.lower()
    if extension not in SUPPORTED_EXTENSIONS:
        raise UnsupportedFileTypeError(
            f"Unsupported file type {extension or '(none)'!r} for {Path(filename).name!r}: "
            f"upload a .csv, .xlsx or .xls file."
        )
    return extension


def read_table(source: str | Path | bytes | BinaryIO, filename: str | None = None) -> pd.DataFrame:
    """Read ``source`` (a path, the file's bytes or a binary file object) into a DataFrame.

    ``filename`` names the file when ``source`` is not a path; its extension picks the parser. CSV
    delimiters are sniffed, UTF-8 (with or without BOM) and UTF-16 with BOM are decoded, anything else
    falls back to Latin-1. Excel files are read with python-calamine, first non-empty sheet.
    """
    name = filename if filename is not None else str(source)
    extension = file_extension(name)
    data = _read_bytes(source)
    if not data.strip():
        raise TableReadError(f"{Path(name).name!r} is empty: upload a file with a header row and data rows.")
    frame = _read_csv(data, name) if extension == ".csv" else _read_excel(data, name)
    frame.columns = [str(column).strip() for column in frame.columns]
    if frame.shape[1] == 0 or frame.shape[0] == 0:
        raise TableReadError(
            f"{Path(name).name!r} has no data rows: the first row must be the column names, "
            f"followed by at least one row of values."
        )
    return frame


def _read_bytes(source: str | Path | bytes | BinaryIO) -> bytes:
    if isinstance(source, bytes):
        return source
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise TableReadError(f"File not found: {str(path)!r}: check the path.")
        return path.read_bytes()
    return source.read()


def _decode(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _sniff_delimiter(text: str) -> str:
    sample = text[:_SNIFF_BYTES]
    # Sniff on whole lines only: a sample cut mid-line confuses the sniffer.
    if len(text) > _SNIFF_BYTES and "\n" in sample:
        sample = sample[: sample.rindex("\n")]
    try:
        return csv.Sniffer().sniff(sample, delimiters=_DELIMITERS).delimiter
    except csv.Error:
        return ","


def _read_csv(data: bytes, name: str) -> pd.DataFrame:
    if b"\x00" in data[:_SNIFF_BYTES] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise TableReadError(f"{Path(name).name!r} is not a text CSV file: export the table as CSV and upload it.")
    text = _decode(data)
    try:
        return pd.read_csv(io.StringIO(text), sep=_sniff_delimiter(text))
    except pd.errors.EmptyDataError as error:
        raise TableReadError(f"{Path(name).name!r} has no columns: the first row must be the column names.") from error
    except (pd.errors.ParserError, ValueError) as error:
        raise TableReadError(f"{Path(name).name!r} could not be parsed as CSV ({error}): check its rows.") from error


def _read_excel(data: bytes, name: str) -> pd.DataFrame:
    try:
        sheets = pd.read_excel(io.BytesIO(data), engine="calamine", sheet_name=None)
    except Exception as error:  # calamine raises its own error types for every kind of broken workbook
        raise TableReadError(
            f"{Path(name).name!r} could not be read as an Excel workbook ({error}): "
            f"save it again as .xlsx or export it as CSV."
        ) from error
    for frame in sheets.values():
        if frame.shape[1] > 0 and frame.notna().to_numpy().any():
            return frame
    return pd.DataFrame()
