"""Read an uploaded or local table (.csv, .xlsx, .xls) into a DataFrame, whole or in chunks, within budgets.

One reader for the training CLI, ``detect_anomalies_in_excel`` and the API, so a file that trains a model
reads the same way when it is scored. It reads what spreadsheet tools open: CSV lines in UTF-8 with any line
that is not UTF-8 read as Windows-1252 (or UTF-16 with its BOM), the delimiter found by which one splits the
rows most consistently, a space after a delimiter before a quoted field skipped, and title lines above the
header skipped; ``TableChunks.notes`` says what was skipped or decoded otherwise.

Budgets (``ReadLimits``) are checked before anything is materialised where the format allows: a CSV's header
is counted before pandas parses a row, and an .xlsx's sheet XML and shared strings are scanned straight out
of the zip (cells, used range, the bytes shared strings would expand to) before calamine reads it. Parsers
can still be crashed by a hostile file (python-calamine aborts the process on some legacy .xls files): the
API therefore reads uploads in memory-limited child processes (``app.services.upload_parsing``).
"""

from __future__ import annotations

import codecs
import csv
import io
import math
import re
import sys
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import python_calamine

SUPPORTED_EXTENSIONS = (".csv", ".xlsx", ".xls")
DEFAULT_CHUNK_ROWS = 100_000
# A chunk holds at most this many cells, so a wide table is read in fewer rows at a time.
CHUNK_CELLS = 2_000_000
_SNIFF_BYTES = 64 * 1024
_DELIMITERS = ",;\t|"
# Title lines are looked for among the first rows only.
_HEADER_SEARCH_ROWS = 100
# Column names are stored in the dataset's document (16 MB at most in MongoDB).
MAX_HEADER_BYTES = 2**20
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
_DECODE_BLOCK_BYTES = 2**20
_SCAN_BLOCK_BYTES = 4 * 2**20
# Decompression-bomb limits for .xlsx (a zip of XML): real workbooks pack about 5-20x; a full sheet of
# 1,048,576 rows x 20 columns unpacks to well under 2 GB.
MAX_UNPACKED_BYTES = 2 * 2**30
SUSPICIOUS_UNPACKED_BYTES = 64 * 2**20
MAX_PACKING_RATIO = 200
_PHYSICAL_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")
_SEP_DIRECTIVE = re.compile(r"sep=(.)\s*\Z")
_UNNAMED = re.compile(r"Unnamed: \d+(_level_\d+)?\Z")
# SpreadsheetML, with or without a namespace prefix: a cell with content (not self-closing), its reference, a
# shared-string cell's index, a shared-string item, and where a cell or row starts (to cut blocks between cells).
_CONTENT_CELL = re.compile(rb"<(?:\w+:)?c(\s[^>]*)?(?<!/)>")
_CELL_REFERENCE = re.compile(rb'\br="\$?([A-Z]{1,3})\$?([0-9]{1,7})"')
_SHARED_STRING_CELL = re.compile(rb'\bt="s"[^>]*>\s*<(?:\w+:)?v>\s*([0-9]{1,10})\s*<')
_SHARED_STRING_ITEM = re.compile(rb"<(?:\w+:)?si[\s>/]")
_CELL_OR_ROW_START = re.compile(rb"<(?:\w+:)?(?:c|row)[\s>/]")

# One CSV field may be as large as the file: the csv module's default limit (128 KB) would refuse a big cell.
csv.field_size_limit(sys.maxsize)

Source = str | Path | bytes | BinaryIO


class TableReadError(ValueError):
    """The file could not be read as a table; the message says what to do about it."""


class UnsupportedFileTypeError(TableReadError):
    """The file's extension is not one the reader understands."""


@dataclass(frozen=True)
class ReadLimits:
    """What one table may cost: columns, cells, and the text a workbook's shared strings may expand to."""

    max_columns: int = 10_000
    max_cells: int = 25_000_000
    max_text_bytes: int = 512 * 2**20


DEFAULT_LIMITS = ReadLimits()


def file_extension(filename: str) -> str:
    """Return the lower-cased extension of ``filename`` if supported, else raise ``UnsupportedFileTypeError``."""
    extension = Path(filename).suffix.lower()
    if extension not in SUPPORTED_EXTENSIONS:
        raise UnsupportedFileTypeError(
            f"Unsupported file type {extension or '(none)'!r} for {Path(filename).name!r}: "
            f"upload a .csv, .xlsx or .xls file."
        )
    return extension


class TableChunks:
    """A table read a chunk of rows at a time (or whole, with ``chunk_rows=None``), in order.

    ``notes`` tells what the reader did that a user would want to know (title lines skipped, lines decoded as
    Windows-1252); it is complete once the chunks have been iterated. Each chunk has the same columns; the
    first is checked to have data, and every chunk counts against ``limits.max_cells``.
    """

    def __init__(
        self,
        source: Source,
        filename: str | None = None,
        chunk_rows: int | None = DEFAULT_CHUNK_ROWS,
        limits: ReadLimits = DEFAULT_LIMITS,
    ) -> None:
        self.name = filename if filename is not None else str(source)
        self.notes: list[str] = []
        self._source = source
        self._chunk_rows = chunk_rows
        self._limits = limits
        self._extension = file_extension(self.name)

    def __iter__(self) -> Iterator[pd.DataFrame]:
        chunks = self._csv_chunks() if self._extension == ".csv" else self._excel_chunks()
        cells = 0
        first = True
        for chunk in chunks:
            if first:
                _check_columns(chunk.shape[1], self.name, self._limits)
            cells += chunk.size
            _check_cells(cells, self.name, self._limits)
            yield _checked(chunk, self.name) if first else _clean_columns(chunk)
            first = False
        if first:
            _checked(pd.DataFrame(), self.name)

    def _csv_chunks(self) -> Iterator[pd.DataFrame]:
        with _binary(self._source) as handle:
            layout = csv_format(handle, self.name, self._limits)
            self.notes.extend(layout.notes)
            handle.seek(0)
            stream = _Utf8Stream(handle, utf16=layout.utf16)
            reader = io.BufferedReader(stream, buffer_size=_DECODE_BLOCK_BYTES)
            reader.read(layout.skip_bytes)
            options = _read_csv_options(layout)
            if self._chunk_rows is None:
                yield _parse_csv(lambda: pd.read_csv(reader, **options), self.name)
            else:
                rows = max(1, min(self._chunk_rows, CHUNK_CELLS // max(1, layout.columns)))
                chunks = _parse_csv(lambda: pd.read_csv(reader, chunksize=rows, **options), self.name)
                while (chunk := _parse_csv(lambda: next(chunks, None), self.name)) is not None:
                    yield chunk
            if stream.legacy_lines:
                self.notes.append(
                    f"{_plural(stream.legacy_lines, 'line')} decoded as Windows-1252 (Latin-1): not UTF-8"
                )

    def _excel_chunks(self) -> Iterator[pd.DataFrame]:
        frame = _read_excel(self._source, self.name, self._limits, self.notes)
        step = self._chunk_rows or max(1, len(frame))
        for start in range(0, len(frame), step):
            yield frame.iloc[start : start + step]


def read_table(source: Source, filename: str | None = None, limits: ReadLimits = DEFAULT_LIMITS) -> pd.DataFrame:
    """Read ``source`` (a path, the file's bytes or a seekable binary file object) into one DataFrame.

    ``filename`` names the file when ``source`` is not a path; its extension picks the parser. Excel files are
    read with python-calamine, first non-empty sheet. Raises ``TableReadError`` with what to do.
    """
    return list(TableChunks(source, filename, chunk_rows=None, limits=limits))[0]


def iter_table(
    source: Source,
    filename: str | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    limits: ReadLimits = DEFAULT_LIMITS,
) -> Iterator[pd.DataFrame]:
    """Yield ``source``'s rows as DataFrames of at most ``chunk_rows`` rows, in order (see ``TableChunks``)."""
    return iter(TableChunks(source, filename, chunk_rows, limits))


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
    frame = _clean_columns(frame)
    header_bytes = sum(len(column.encode("utf-8", "surrogatepass")) for column in frame.columns)
    if header_bytes > MAX_HEADER_BYTES:
        raise TableReadError(
            f"{Path(name).name!r} has {header_bytes / 2**20:,.1f} MB of column names, more than the "
            f"{MAX_HEADER_BYTES // 2**20} MB allowed: shorten the header row's names."
        )
    return frame


def _check_columns(columns: int, name: str, limits: ReadLimits) -> None:
    if columns > limits.max_columns:
        raise TableReadError(
            f"{Path(name).name!r} has {columns:,} columns, more than the {limits.max_columns:,} allowed "
            "(MAX_COLUMNS): keep the columns you need, or split the table into several files."
        )


def _check_cells(cells: int, name: str, limits: ReadLimits, what: str = "cells") -> None:
    if cells > limits.max_cells:
        raise TableReadError(
            f"{Path(name).name!r} has more than {limits.max_cells:,} {what} (MAX_CELLS): split it into smaller "
            "files, or keep only the rows and columns you need."
        )


@contextmanager
def _binary(source: Source) -> Iterator[BinaryIO]:
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


class _Utf8Stream(io.RawIOBase):
    """A CSV's bytes as UTF-8, decoded line by line: a line that is not UTF-8 is read as Windows-1252.

    Exports often mix the two (a UTF-8 file with lines pasted from an old system); a spreadsheet tool opens
    them, so the reader does too and counts the lines it decoded otherwise (``legacy_lines``). A block that is
    valid UTF-8 as a whole, the common case, passes through untouched. UTF-16 with a BOM is transcoded whole.
    """

    def __init__(self, raw: BinaryIO, utf16: bool) -> None:
        super().__init__()
        self.legacy_lines = 0
        self._raw = raw
        self._utf16 = codecs.getincrementaldecoder("utf-16")() if utf16 else None
        self._pending = b""
        self._decoded = bytearray()
        self._started = False
        self._exhausted = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._decoded and not self._exhausted:
            self._decode_next_block()
        size = min(len(buffer), len(self._decoded))
        buffer[:size] = self._decoded[:size]
        del self._decoded[:size]
        return size

    def _decode_next_block(self) -> None:
        block = self._raw.read(_DECODE_BLOCK_BYTES)
        self._exhausted = not block
        if self._utf16 is not None:
            self._decoded += self._utf16.decode(block, final=self._exhausted).encode("utf-8", "surrogatepass")
            return
        data = self._pending + block
        if not self._started:
            self._started = True
            data = data.removeprefix(codecs.BOM_UTF8)
        # Whole lines only: a line end never falls inside a multi-byte character of UTF-8 or Windows-1252.
        cut = len(data) if self._exhausted else max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
        if cut == 0:
            self._pending = data
            return
        lines, self._pending = data[:cut], data[cut:]
        try:
            lines.decode("utf-8")
            self._decoded += lines
        except UnicodeDecodeError:
            for line in lines.splitlines(keepends=True):
                try:
                    line.decode("utf-8")
                    self._decoded += line
                except UnicodeDecodeError:
                    self.legacy_lines += 1
                    self._decoded += _legacy_text(line).encode("utf-8")


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _legacy_text(line: bytes) -> str:
    try:
        return line.decode("cp1252")
    except UnicodeDecodeError:  # the five bytes Windows-1252 leaves undefined
        return line.decode("latin-1")


@dataclass(frozen=True)
class CsvFormat:
    """How a CSV file is laid out: what it takes to parse any run of its rows the way the whole file is read.

    ``skip_lines`` physical lines (a ``sep=`` line, title lines, blank lines) come before the header row; they
    make ``skip_bytes`` bytes of the file decoded to UTF-8 (its byte-order mark removed).
    """

    utf16: bool
    delimiter: str
    skip_lines: int
    skip_bytes: int
    columns: int
    notes: list[str]

    @property
    def encoding(self) -> str:
        """The file's encoding family, as its bytes are laid out: ``utf-16``, else ``utf-8`` (lines that are not
        UTF-8 are read as Windows-1252, one line at a time)."""
        return "utf-16" if self.utf16 else "utf-8"


def csv_format(handle: BinaryIO, name: str, limits: ReadLimits = DEFAULT_LIMITS) -> CsvFormat:
    """Where the CSV's header starts, its delimiter and its column count, from its first 64 KB and header row."""
    head = handle.read(_SNIFF_BYTES)
    handle.seek(0)
    if not head.strip():
        raise TableReadError(f"{Path(name).name!r} is empty: upload a file with a header row and data rows.")
    utf16 = head.startswith(_UTF16_BOMS)
    if not utf16 and b"\x00" in head:
        raise TableReadError(f"{Path(name).name!r} is not a text CSV file: export the table as CSV and upload it.")
    sample_bytes = io.BufferedReader(_Utf8Stream(handle, utf16)).read(_SNIFF_BYTES)
    handle.seek(0)
    lines = _PHYSICAL_LINE.findall(sample_bytes.decode("utf-8", errors="ignore"))
    if len(sample_bytes) == _SNIFF_BYTES and len(lines) > 1:
        lines = lines[:-1]  # the last line may be cut off
    notes: list[str] = []
    skip_lines = 0
    directive = _SEP_DIRECTIVE.match(lines[0]) if lines else None
    if directive:
        delimiter, skip_lines = directive.group(1), 1
        notes.append(f"delimiter {delimiter!r} taken from the file's first line ('sep={delimiter}')")
    else:
        delimiter = _delimiter(lines)
    rows, line_ends = _sample_rows(lines[skip_lines:], delimiter)
    header = _header_position(rows)
    if header:
        titles = sum(1 for row in rows[:header] if any(row))
        notes.append(
            f"skipped {_plural(titles, 'title line') if titles else _plural(header, 'empty line')} above the header"
        )
    skip_lines += line_ends[header - 1] if header else 0
    skip_bytes = len("".join(lines[:skip_lines]).encode("utf-8"))
    stream = io.BufferedReader(_Utf8Stream(handle, utf16))
    stream.read(skip_bytes)
    header_fields = next(csv.reader(io.TextIOWrapper(stream, "utf-8", newline=""), delimiter=delimiter), [])
    handle.seek(0)
    _check_columns(len(header_fields), name, limits)
    return CsvFormat(utf16, delimiter, skip_lines, skip_bytes, len(header_fields), notes)


def _read_csv_options(layout: CsvFormat) -> dict[str, Any]:
    # The stream is UTF-8 by then (_Utf8Stream); a space after a delimiter is skipped, so `, "6,000,000"` is one
    # quoted field, as spreadsheet tools read it.
    return {"sep": layout.delimiter, "encoding": "utf-8", "skipinitialspace": True}


def parse_csv(content: bytes, name: str, layout: CsvFormat) -> pd.DataFrame:
    """Parse CSV ``content``: the file's beginning up to and with its header row, then any run of its rows.

    It reads them as ``read_table`` reads the whole file (same decoding, same layout), so a file's rows can be
    cut into runs parsed apart; unlike ``read_table`` it accepts a header without rows, and it refuses a first
    row longer than the header, which ``read_csv`` would silently turn into an index.
    """
    stream = io.BufferedReader(_Utf8Stream(io.BytesIO(content), utf16=layout.utf16), buffer_size=_DECODE_BLOCK_BYTES)
    stream.read(layout.skip_bytes)
    frame = _parse_csv(lambda: pd.read_csv(stream, **_read_csv_options(layout)), name)
    if not frame.index.equals(pd.RangeIndex(len(frame))):
        raise TableReadError(
            f"{Path(name).name!r} could not be parsed as CSV (its rows have more fields than its header): "
            "check its rows."
        )
    return _clean_columns(frame)


def _sample_rows(lines: Sequence[str], delimiter: str) -> tuple[list[list[bool]], list[int]]:
    """The sample's first rows as which fields are filled, and after how many lines each row ends."""
    reader = csv.reader(lines, delimiter=delimiter, skipinitialspace=True)
    rows: list[list[bool]] = []
    ends: list[int] = []
    try:
        for fields in reader:
            rows.append([bool(field.strip()) for field in fields])
            ends.append(reader.line_num)
            if len(rows) >= _HEADER_SEARCH_ROWS:
                break
    except csv.Error:
        pass  # a sample cut inside a quoted field: the rows before it are enough
    return rows, ends


def _delimiter(lines: Sequence[str]) -> str:
    """The delimiter that splits the sample's rows into the most consistent number of fields (more than one);
    when none splits the rows, the one that splits the first row (a header over one-column rows)."""
    best, best_score = ",", (False, 0.0, 0, 0)
    for candidate in _DELIMITERS:
        widths = [len(row) for row in _sample_rows(lines, candidate)[0] if any(row)]
        if not widths:
            continue
        width, count = Counter(widths).most_common(1)[0]
        score = (width > 1, count / len(widths) if width > 1 else 0.0, width, widths[0])
        if score > best_score:
            best, best_score = candidate, score
    return best


def _header_position(rows: Sequence[Sequence[bool]]) -> int:
    """The index of the header among ``rows`` (which fields are filled): the first row filled at least half as
    well as the table's typical row (two fields or more), and as wide as the table or as filled as its rows.
    Rows above it are titles, notes or rules."""
    nonblank = [row for row in rows if any(row)]
    if len(nonblank) < 2:
        return 0
    width = Counter(len(row) for row in nonblank).most_common(1)[0][0]
    filled = sorted(sum(row) for row in nonblank if len(row) == width)
    typical = filled[len(filled) // 2]
    needed = max(min(2, width), math.ceil(typical / 2))
    return next(
        (
            position
            for position, row in enumerate(rows)
            if sum(row) >= needed and (len(row) >= width or sum(row) >= typical)
        ),
        0,
    )


def _parse_csv(parse: Any, name: str) -> Any:
    try:
        return parse()
    except pd.errors.EmptyDataError as error:
        raise TableReadError(f"{Path(name).name!r} has no columns: the first row must be the column names.") from error
    except (pd.errors.ParserError, ValueError) as error:
        raise TableReadError(f"{Path(name).name!r} could not be parsed as CSV ({error}): check its rows.") from error


@dataclass
class _SheetCost:
    cells: int = 0
    rows: int = 0
    columns: int = 0
    text_bytes: int = 0


def _check_workbook(handle: BinaryIO, name: str, limits: ReadLimits) -> None:
    """Refuse an .xlsx that would cost more than ``limits`` to read, reading only its zip and its XML.

    The zip directory first (a decompression bomb is refused before anything is inflated), then the shared
    strings' sizes and each sheet's cells, used range and shared-string references, streamed a block at a
    time: a sheet of 2,000 cells that all point at one 400 KB string is 800 MB of text to a reader that
    gives every cell its own copy. Not a zip at all is left to the parser.
    """
    try:
        archive = zipfile.ZipFile(handle)
    except (zipfile.BadZipFile, OSError):
        handle.seek(0)
        return
    display = Path(name).name
    with archive:
        entries = archive.infolist()
        packed = max(1, sum(entry.compress_size for entry in entries))
        unpacked = sum(entry.file_size for entry in entries)
        if unpacked > MAX_UNPACKED_BYTES or (
            unpacked > SUSPICIOUS_UNPACKED_BYTES and unpacked / packed > MAX_PACKING_RATIO
        ):
            raise TableReadError(
                f"{display!r} would expand to {unpacked / 2**20:,.0f} MB from {packed / 2**20:,.1f} MB "
                "(a compressed archive this dense is not a normal workbook): export the sheet as CSV and upload that."
            )
        try:
            lengths = _shared_string_lengths(archive, entries, name, limits)
            for entry in entries:
                if entry.filename.lower().endswith(".xml") and not entry.is_dir():
                    _check_sheet(archive, entry, lengths, name, limits)
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError):
            pass  # a damaged entry: the parser says what is wrong with it
    handle.seek(0)


def _xml_blocks(archive: zipfile.ZipFile, entry: zipfile.ZipInfo, boundary: re.Pattern[bytes]) -> Iterator[bytes]:
    """An entry's XML a few MB at a time, each block cut before the last match of ``boundary`` in its tail."""
    carry = b""
    with archive.open(entry) as stream:
        while block := stream.read(_SCAN_BLOCK_BYTES):
            data = carry + block
            tail_start = max(0, len(data) - 64 * 1024)
            starts = [match.start() for match in boundary.finditer(data, tail_start)]
            cut = starts[-1] if starts and starts[-1] > 0 else len(data)
            yield data[:cut]
            carry = data[cut:]
    if carry:
        yield carry


def _shared_string_lengths(
    archive: zipfile.ZipFile, entries: Sequence[zipfile.ZipInfo], name: str, limits: ReadLimits
) -> np.ndarray:
    """The size in bytes of each shared string (its XML item, markup included: an upper bound)."""
    starts: list[int] = []
    end = 0
    for entry in entries:
        if entry.filename.replace("\\", "/").rsplit("/", 1)[-1].lower() == "sharedstrings.xml":
            offset = 0
            for block in _xml_blocks(archive, entry, _SHARED_STRING_ITEM):
                starts.extend(offset + match.start() for match in _SHARED_STRING_ITEM.finditer(block))
                offset += len(block)
                _check_cells(len(starts), name, limits, "shared strings")
            end = offset
            break
    if not starts:
        return np.zeros(0, dtype=np.int64)
    return np.diff(np.asarray([*starts, end], dtype=np.int64))


def _check_sheet(
    archive: zipfile.ZipFile, entry: zipfile.ZipInfo, shared_lengths: np.ndarray, name: str, limits: ReadLimits
) -> None:
    """Refuse one sheet's XML past ``limits`` as soon as a block shows it: cells with content, the used range
    (from cell references: calamine allocates it whole) and the text its shared-string cells expand to."""
    cost = _SheetCost()
    last_row = last_column = 0
    first_row = first_column = sys.maxsize
    for block in _xml_blocks(archive, entry, _CELL_OR_ROW_START):
        attributes = _CONTENT_CELL.findall(block)
        if not attributes:
            continue
        cost.cells += len(attributes)
        references = _CELL_REFERENCE.findall(b" ".join(attributes))
        if references:
            rows = {int(row) for _, row in references}
            columns = {_column_number(letters) for letters in {letters for letters, _ in references}}
            last_row, first_row = max(last_row, max(rows)), min(first_row, min(rows))
            last_column, first_column = max(last_column, max(columns)), min(first_column, min(columns))
            cost.rows, cost.columns = last_row - first_row + 1, last_column - first_column + 1
        indexes = np.asarray([int(index) for index in _SHARED_STRING_CELL.findall(block)], dtype=np.int64)
        cost.text_bytes += int(shared_lengths[indexes[indexes < len(shared_lengths)]].sum())
        _check_columns(cost.columns, name, limits)
        _check_cells(cost.cells, name, limits)
        _check_cells(cost.rows * cost.columns, name, limits, "cells in its used range")
        if cost.text_bytes > limits.max_text_bytes:
            raise TableReadError(
                f"{Path(name).name!r} holds text that would expand to more than {limits.max_text_bytes // 2**20:,} MB "
                "in memory (MAX_TEXT_MB: its cells repeat long shared strings): export the sheet as CSV, or "
                "shorten the repeated text."
            )


def _column_number(letters: bytes) -> int:
    number = 0
    for letter in letters:
        number = number * 26 + letter - 64
    return number


def _read_excel(source: Source, name: str, limits: ReadLimits, notes: list[str]) -> pd.DataFrame:
    """The first sheet with data, its header found below any title rows, within ``limits``."""
    with _binary(source) as handle:
        _check_workbook(handle, name, limits)
        # From a path, calamine tells why it cannot read a file (a password, say); from a stream it cannot.
        workbook: Any = source if isinstance(source, str | Path) else handle
        try:
            sheets = python_calamine.CalamineWorkbook.from_object(workbook).sheet_names
        except Exception as error:  # calamine raises its own error types for every kind of broken workbook
            raise _unreadable_workbook(name, error) from error
        failure: Exception | None = None
        for sheet in sheets:
            try:
                frame = _read_sheet(workbook, handle, sheet)
            except Exception as error:  # a chart sheet, a damaged sheet: the next one may hold the table
                failure = failure or error
                continue
            if frame.shape[1] > 0 and frame.notna().to_numpy().any():
                break
        else:
            if failure is not None:
                raise _unreadable_workbook(name, failure) from failure
            return pd.DataFrame()
        _check_columns(frame.shape[1], name, limits)
        _check_cells(frame.size, name, limits)
        header = _header_position(_filled_rows(frame))
        if header:
            frame = _read_sheet(workbook, handle, sheet, header)
            notes.append(f"skipped {_plural(header, 'title row')} above the header")
    if sheet != sheets[0]:
        notes.append(f"read sheet {sheet!r}, the first with data")
    return frame


def _read_sheet(workbook: Any, handle: BinaryIO, sheet: str, header: int = 0) -> pd.DataFrame:
    handle.seek(0)
    return pd.read_excel(workbook, engine="calamine", sheet_name=sheet, header=header)


def _unreadable_workbook(name: str, error: Exception) -> TableReadError:
    if "password" in str(error).lower():
        return TableReadError(
            f"{Path(name).name!r} is protected by a password: save a copy without the password and upload that."
        )
    return TableReadError(
        f"{Path(name).name!r} could not be read as an Excel workbook ({error}): "
        f"save it again as .xlsx or export it as CSV."
    )


def _filled_rows(frame: pd.DataFrame) -> list[list[bool]]:
    """Which cells are filled in the header row (pandas' placeholder names are not) and the first data rows."""
    header = [not _UNNAMED.match(str(column)) for column in frame.columns]
    head = frame.head(_HEADER_SEARCH_ROWS - 1)
    filled = head.map(lambda value: not (pd.isna(value) or (isinstance(value, str) and not value.strip())))
    return [header, *filled.to_numpy(dtype=bool).tolist()]
