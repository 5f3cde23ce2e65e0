"""Read an uploaded or local table (.csv, .xlsx, .xls) into a DataFrame, whole or in chunks.

One reader for the training CLI, ``detect_anomalies_in_excel`` and the API, so a file that trains a model
reads the same way when it is scored. CSV is parsed straight from the bytes (never decoded into one large
string first), and ``iter_table`` yields it in chunks so a million-row file is never whole in memory.
"""

from __future__ import annotations

import codecs
import csv
import io
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd

SUPPORTED_EXTENSIONS = (".csv", ".xlsx", ".xls")
DEFAULT_CHUNK_ROWS = 100_000
CSV_SNIFF_BYTES = 64 * 1024
_DELIMITERS = ",;\t|"
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
# Decompression-bomb limits for .xlsx (a zip of XML): real workbooks pack about 5-20x; a full sheet of
# 1,048,576 rows x 20 columns unpacks to well under 2 GB.
MAX_UNPACKED_BYTES = 2 * 2**30
SUSPICIOUS_UNPACKED_BYTES = 64 * 2**20
MAX_PACKING_RATIO = 200

Source = str | Path | bytes | BinaryIO


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


def read_table(source: Source, filename: str | None = None) -> pd.DataFrame:
    """Read ``source`` (a path, the file's bytes or a seekable binary file object) into one DataFrame.

    ``filename`` names the file when ``source`` is not a path; its extension picks the parser. CSV
    delimiters are sniffed; UTF-8 (with or without BOM) and UTF-16 with BOM are decoded, anything else is read
    as Latin-1. Excel files are read with python-calamine, first non-empty sheet.
    """
    name = _name(source, filename)
    if file_extension(name) != ".csv":
        return _checked(_read_excel(source, name), name)
    with _csv_handle(source, name) as (handle, options):
        return _checked(_parse_csv(lambda: pd.read_csv(handle, **options), name), name)


def iter_table(
    source: Source, filename: str | None = None, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> Iterator[pd.DataFrame]:
    """Yield ``source``'s rows as DataFrames of at most ``chunk_rows`` rows, in order.

    CSV is parsed chunk by chunk from the stream; a workbook is read whole (its format bounds it to
    1,048,576 rows per sheet) and then sliced. The first chunk is checked like ``read_table``'s result.
    """
    name = _name(source, filename)
    if file_extension(name) != ".csv":
        frame = _checked(_read_excel(source, name), name)
        for start in range(0, len(frame), chunk_rows):
            yield frame.iloc[start : start + chunk_rows]
        return
    with _csv_handle(source, name) as (handle, options):
        chunks = _parse_csv(lambda: pd.read_csv(handle, chunksize=chunk_rows, **options), name)
        first = True
        while True:
            chunk = _parse_csv(lambda: next(chunks, None), name)
            if chunk is None:
                if first:
                    _checked(pd.DataFrame(), name)
                return
            yield _checked(chunk, name) if first else _clean_columns(chunk)
            first = False


def _name(source: Source, filename: str | None) -> str:
    return filename if filename is not None else str(source)


def normalize_column_names(columns: Iterable[object]) -> list[str]:
    """Column names as text without surrounding spaces; a repeated name gets pandas' suffix (``v``, ``v.1``).

    Applied wherever a table comes in (files, DataFrames given to the detector), so ``"amount "`` and
    ``"amount"`` name the same column everywhere and two columns never end up with one name.
    """
    names: list[str] = []
    seen: set[str] = set()
    for column in columns:
        name = base = str(column).strip()
        repeat = 0
        while name in seen:
            repeat += 1
            name = f"{base}.{repeat}"
        seen.add(name)
        names.append(name)
    return names


def _clean_columns(frame: pd.DataFrame) -> pd.DataFrame:
    frame.columns = normalize_column_names(frame.columns)
    return frame


def _checked(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    if frame.shape[1] == 0 or frame.shape[0] == 0:
        raise TableReadError(
            f"{Path(name).name!r} has no data rows: the first row must be the column names, "
            f"followed by at least one row of values."
        )
    return _clean_columns(frame)


@contextmanager
def _binary(source: Source, name: str) -> Iterator[BinaryIO]:
    """``source`` as a seekable binary stream, positioned at its start."""
    if isinstance(source, bytes):
        yield io.BytesIO(source)
    elif isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise TableReadError(f"File not found: {str(path)!r}: check the path.")
        with open(path, "rb") as handle:
            yield handle
    elif source.seekable():
        source.seek(0)
        yield source
    else:
        yield io.BytesIO(source.read())


@dataclass(frozen=True)
class CsvFormat:
    """How a CSV file is written: what ``read_csv`` needs to parse any part of it the way it parses the whole."""

    encoding: str
    delimiter: str

    @property
    def read_csv_options(self) -> dict[str, str]:
        """The ``pandas.read_csv`` keyword arguments for this format."""
        return {"sep": self.delimiter, "encoding": self.encoding}


def sniff_csv_format(head: bytes, name: str) -> CsvFormat:
    """The encoding and delimiter of a CSV file whose first ``CSV_SNIFF_BYTES`` bytes (or all, if fewer) are
    ``head``; ``TableReadError`` for an empty or binary file."""
    if not head.strip():
        raise TableReadError(f"{Path(name).name!r} is empty: upload a file with a header row and data rows.")
    encoding = _encoding(head)
    if encoding != "utf-16" and b"\x00" in head:
        raise TableReadError(f"{Path(name).name!r} is not a text CSV file: export the table as CSV and upload it.")
    sample = head.decode(encoding, errors="ignore")
    return CsvFormat(encoding, _sniff_delimiter(sample, complete=len(head) < CSV_SNIFF_BYTES))


def parse_csv(content: bytes, name: str, csv_format: CsvFormat) -> pd.DataFrame:
    """Parse CSV ``content`` (a header row, then any number of rows) written in ``csv_format``.

    Unlike ``read_table`` it accepts a header without rows, so any slice of a file's rows after its header
    reads as the same rows would in the whole file; and it refuses a first row longer than the header, which
    ``read_csv`` would silently turn into an index (shifting every column of that slice).
    """
    frame = _parse_csv(lambda: pd.read_csv(io.BytesIO(content), **csv_format.read_csv_options), name)
    if not frame.index.equals(pd.RangeIndex(len(frame))):
        raise TableReadError(
            f"{Path(name).name!r} could not be parsed as CSV (its rows have more fields than its header): "
            "check its rows."
        )
    return _clean_columns(frame)


@contextmanager
def _csv_handle(source: Source, name: str) -> Iterator[tuple[BinaryIO, dict[str, str]]]:
    """The CSV's byte stream and the ``read_csv`` options (encoding, delimiter) sniffed from its start."""
    with _binary(source, name) as handle:
        head = handle.read(CSV_SNIFF_BYTES)
        handle.seek(0)
        yield handle, sniff_csv_format(head, name).read_csv_options


def _encoding(head: bytes) -> str:
    if head.startswith(_UTF16_BOMS):
        return "utf-16"
    try:
        # An incremental decoder accepts a character cut in two at the end of the sample.
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return "latin-1"
    return "utf-8-sig"


def _sniff_delimiter(sample: str, complete: bool) -> str:
    # Sniff whole lines only: a sample cut mid-line confuses the sniffer.
    if not complete and "\n" in sample:
        sample = sample[: sample.rindex("\n")]
    try:
        return csv.Sniffer().sniff(sample, delimiters=_DELIMITERS).delimiter
    except csv.Error:
        return ","


def _parse_csv(parse: Any, name: str) -> Any:
    try:
        return parse()
    except pd.errors.EmptyDataError as error:
        raise TableReadError(f"{Path(name).name!r} has no columns: the first row must be the column names.") from error
    except UnicodeDecodeError as error:
        raise TableReadError(
            f"{Path(name).name!r} mixes text encodings (not valid UTF-8 at byte {error.start}): "
            "save it as UTF-8 CSV and upload it again."
        ) from error
    except (pd.errors.ParserError, ValueError) as error:
        raise TableReadError(f"{Path(name).name!r} could not be parsed as CSV ({error}): check its rows.") from error


def _check_archive(handle: BinaryIO, name: str) -> None:
    """Refuse an .xlsx whose entries would inflate far beyond any real workbook (a decompression bomb).

    Only the archive's directory is read; nothing is decompressed. Not a zip at all is left to the parser.
    """
    try:
        with zipfile.ZipFile(handle) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError):
        return
    finally:
        handle.seek(0)
    packed = max(1, sum(entry.compress_size for entry in entries))
    unpacked = sum(entry.file_size for entry in entries)
    if unpacked > MAX_UNPACKED_BYTES or (
        unpacked > SUSPICIOUS_UNPACKED_BYTES and unpacked / packed > MAX_PACKING_RATIO
    ):
        raise TableReadError(
            f"{Path(name).name!r} would expand to {unpacked / 2**20:,.0f} MB from {packed / 2**20:,.1f} MB "
            "(a compressed archive this dense is not a normal workbook): export the sheet as CSV and upload that."
        )


def _read_excel(source: Source, name: str) -> pd.DataFrame:
    with _binary(source, name) as handle:
        _check_archive(handle, name)
        try:
            sheets = pd.read_excel(handle, engine="calamine", sheet_name=None)
        except Exception as error:  # calamine raises its own error types for every kind of broken workbook
            raise TableReadError(
                f"{Path(name).name!r} could not be read as an Excel workbook ({error}): "
                f"save it again as .xlsx or export it as CSV."
            ) from error
    for frame in sheets.values():
        if frame.shape[1] > 0 and frame.notna().to_numpy().any():
            return frame
    return pd.DataFrame()
