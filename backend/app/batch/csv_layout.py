"""Where a CSV file's records end, found in one pass over its bytes without parsing it.

A large CSV is scored in parallel by cutting its rows into slices that workers read independently: each reads
the file's header record and one byte range, and parses them together with the file's own format (encoding,
delimiter), so every slice's rows read exactly as in the whole file. A cut must fall between two records, never
inside a quoted field that holds a line break, so the scan follows pandas' tokenizer as the reader runs it (the
C parser, skipping a space after a delimiter): a ``"`` opens a quoted field only at the start of a field (after
any spaces), ``""`` inside one is a literal quote, and a record ends at ``\\n``, ``\\r\\n`` or a lone ``\\r``
outside quotes. A quote anywhere else is literal text.

The file is read in blocks; only the quotes go through a Python loop, so a file without quotes is scanned at
NumPy speed. UTF-16 files are scanned by 16-bit code units (every character this scan looks for is one unit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from app.utils.table_reader import CsvFormat

QUOTE, LF, CR, SPACE, TAB = ord('"'), ord("\n"), ord("\r"), ord(" "), ord("\t")
SCAN_BLOCK_BYTES = 16 * 2**20
# Records starting with a blank character that are checked one by one; past this many in a block, at once.
_RECORDS_CHECKED_ONE_BY_ONE = 256
_UTF16_LE_BOM, _UTF16_BE_BOM = b"\xff\xfe", b"\xfe\xff"


@dataclass(frozen=True)
class CsvSlice:
    """Consecutive rows of a CSV file: its bytes from ``start`` to ``stop``, holding ``rows`` rows."""

    start: int
    stop: int
    rows: int


@dataclass(frozen=True)
class CsvLayout:
    """A CSV file's format, where its header record ends, and its rows cut into slices."""

    csv_format: CsvFormat
    header_stop: int  # the header is the file's bytes before this offset (a byte-order mark included)
    slices: tuple[CsvSlice, ...]

    @property
    def rows(self) -> int:
        """The rows after the header (blank lines are not rows, as in pandas)."""
        return sum(part.rows for part in self.slices)


class TooManySlicesError(ValueError):
    """The file's rows make more slices than asked for at most (the scan stops there)."""


def scan_csv(
    handle: BinaryIO,
    csv_format: CsvFormat,
    slice_rows: int,
    *,
    max_slices: int | None = None,
    block_bytes: int = SCAN_BLOCK_BYTES,
) -> CsvLayout:
    """Read ``handle`` from its start; cut the rows after the header into slices of at most ``slice_rows``.

    ``TooManySlicesError`` as soon as there are more than ``max_slices`` (a bound on what the layout holds).
    """
    if slice_rows < 1:
        raise ValueError("slice_rows must be at least 1")
    head = handle.read(2)
    width, dtype, origin = 1, "u1", 0
    if csv_format.encoding == "utf-16" and head in (_UTF16_LE_BOM, _UTF16_BE_BOM):
        width, dtype, origin = 2, "<u2" if head == _UTF16_LE_BOM else ">u2", 2
    scanner = _RecordScanner(ord(csv_format.delimiter))
    builder = _SliceBuilder(slice_rows, max_slices, skip_records=csv_format.skip_lines)
    carry = head[origin:]
    size = max(width, block_bytes - block_bytes % width)
    while True:
        block = handle.read(size)
        final = not block
        content = carry + block
        usable = len(content) - len(content) % width
        carry = content[usable:]
        ends, blank = scanner.feed(np.frombuffer(content[:usable], dtype=dtype), final)
        builder.add(origin + ends * width, blank)
        if final:
            return builder.layout(csv_format)


class _RecordScanner:
    """Finds record ends block by block, carrying the tokenizer's state (inside quotes or not) across blocks.

    The last unit of a block is held back until the next block arrives, so every unit examined has the unit
    after it at hand (``""`` and ``\\r\\n`` are decided by it).
    """

    def __init__(self, delimiter: int) -> None:
        self.delimiter = delimiter
        self.position = 0  # absolute index of the first unit not examined yet
        self.previous = LF  # the unit before ``position``: the file's start counts as a line start
        self.previous_content = LF  # the last unit before ``position`` that is not a space
        self.record_start = 0  # absolute index where the current record began
        self.inside = False
        self.skip_quote = False  # the next unit is the second quote of a ``""`` seen at the end of the last block
        self.pending: np.ndarray = np.empty(0, dtype=np.uint8)
        self.open_content = False  # whether the record not yet ended holds anything but blanks
        self.eat_next = False  # whether pandas drops the delimiter the next record may begin with (see _blank)
        self.blank_units = [unit for unit in (SPACE, TAB, CR, LF) if unit != delimiter]

    def feed(self, block: np.ndarray, final: bool) -> tuple[np.ndarray, np.ndarray]:
        """The absolute ends (exclusive) of the records ``block`` completes, and which of them are blank."""
        units = np.concatenate([self.pending.astype(block.dtype), block]) if len(self.pending) else block
        limit = len(units) if final else max(len(units) - 1, 0)
        examined = units[:limit]
        terminators = np.flatnonzero(examined == LF)
        carriages = np.flatnonzero(examined == CR)
        if len(carriages):
            after = carriages + 1
            lone = (after >= len(units)) | (units[np.minimum(after, len(units) - 1)] != LF)
            terminators = np.union1d(terminators, carriages[lone])
        opens, closes = self._quoted_spans(units, limit)
        if len(opens):
            span = np.searchsorted(opens, terminators, side="right") - 1
            quoted = (span >= 0) & (terminators < closes[np.maximum(span, 0)])
            terminators = terminators[~quoted]
        ends = terminators + 1
        if final and limit + self.position > self.record_start and (not len(ends) or ends[-1] != limit):
            ends = np.append(ends, limit)  # the last record has no line break after it
        blank = self._blank(units, ends, limit)
        if limit:
            self.previous = int(units[limit - 1])
            content = np.flatnonzero(units[:limit] != SPACE)
            if len(content):
                self.previous_content = int(units[content[-1]])
        self.pending = units[limit:].copy()
        absolute = ends.astype(np.int64, copy=False) + self.position
        if len(absolute):
            self.record_start = int(absolute[-1])
        self.position += limit
        return absolute, blank

    def _only_blanks(self, units: np.ndarray) -> bool:
        return bool(np.isin(units, self.blank_units).all())

    def _blank(self, units: np.ndarray, ends: np.ndarray, limit: int) -> np.ndarray:
        """Whether each record ending at ``ends`` (indices into ``units``) is blank, as pandas sees it.

        A blank record holds nothing but spaces and tabs (unless the tab is the delimiter) before its line break;
        pandas skips it. After a blank record ended by a lone ``\\r``, pandas' tokenizer also drops the next
        record's leading delimiter, which can make that record blank too: followed here record by record.
        Only records that begin with a blank unit (or began in an earlier block) are looked at unit by unit.
        """
        first_start = self.record_start - self.position  # negative: the record began in an earlier block
        starts = np.concatenate([[first_start], ends[:-1]]).astype(np.int64, copy=False)[: len(ends)]
        blank = np.zeros(len(ends), dtype=bool)
        maybe = np.flatnonzero(np.isin(units[np.maximum(starts, 0)], self.blank_units) | (starts < 0))
        if len(maybe) > _RECORDS_CHECKED_ONE_BY_ONE:  # rows padded with spaces: count blanks over the block
            content = np.concatenate([[0], np.cumsum(~np.isin(units[:limit], self.blank_units), dtype=np.int64)])
            blank[maybe] = content[ends[maybe]] == content[np.maximum(starts[maybe], 0)]
        else:
            for record in maybe.tolist():
                blank[record] = self._only_blanks(units[max(starts[record], 0) : ends[record]])
        if len(ends) and first_start < 0 and self.open_content:
            blank[0] = False
        lone_cr = units[np.maximum(ends - 1, 0)] == CR
        eating = [0] if len(ends) and self.eat_next and first_start == 0 else []
        eating += (np.flatnonzero(blank[:-1] & lone_cr[:-1]) + 1).tolist()
        checked: set[int] = set()
        while eating:
            record = eating.pop(0)
            if record in checked:
                continue
            checked.add(record)
            if units[starts[record]] == self.delimiter:
                blank[record] = self._only_blanks(units[starts[record] + 1 : ends[record]])
                if blank[record] and lone_cr[record] and record + 1 < len(ends):
                    eating.insert(0, record + 1)
        if len(ends):
            open_start, open_eats, earlier_content = int(ends[-1]), bool(blank[-1] and lone_cr[-1]), False
        else:
            open_start, open_eats, earlier_content = first_start, self.eat_next, self.open_content
        if open_start < limit:
            skip = int(open_eats and open_start >= 0 and units[open_start] == self.delimiter)
            self.open_content = earlier_content or not self._only_blanks(units[max(open_start, 0) + skip : limit])
            self.eat_next = False
        else:
            self.open_content, self.eat_next = False, open_eats
        return blank

    def _quoted_spans(self, units: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
        """The (open, close) indices of the quoted stretches in ``units[:limit]``, sorted.

        A stretch already open when the block starts opens at -1; one still open at its end closes at
        ``len(units)``. Well-formed quoting (every field-opening quote at a field's start) is paired up at
        NumPy speed; anything else goes through the tokenizer's rules quote by quote.
        """
        quotes = np.flatnonzero(units[:limit] == QUOTE)
        if self.skip_quote and len(quotes) and quotes[0] == 0:
            quotes = quotes[1:]  # the second quote of a ``""`` that straddled the blocks: a literal quote
        self.skip_quote = False
        if not len(quotes):
            if self.inside:
                return np.array([-1]), np.array([len(units)])
            return quotes, quotes
        spans = self._paired_spans(units, limit, quotes)
        return spans if spans is not None else self._tokenized_spans(units, limit, quotes)

    def _at_field_start(self, units: np.ndarray, quotes: np.ndarray) -> np.ndarray:
        """Whether each quote opens a field: it follows a delimiter or a line break (or the file's start), with
        nothing but spaces between (the reader skips a space before a quoted field, as spreadsheet tools do)."""
        content = np.maximum.accumulate(np.where(units != SPACE, np.arange(len(units)), -1))
        prior = np.where(quotes > 0, content[np.maximum(quotes - 1, 0)], -1)
        before = np.where(prior >= 0, units[np.maximum(prior, 0)], self.previous_content)
        return (before == self.delimiter) | (before == LF) | (before == CR)

    def _paired_spans(self, units: np.ndarray, limit: int, quotes: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Quotes taken in pairs, if that is what the tokenizer does with them; else ``None``.

        Pairing is right when every quote that would open a field is at a field's start or is the second
        quote of a ``""`` (whose two halves then close and reopen the field: no line break lies between them).
        """
        first_open = int(self.inside)  # inside a field already, the first quote closes it
        opens, closes = quotes[first_open::2], quotes[1 - first_open :: 2]
        previous_quote = np.concatenate([[-2], quotes[:-1]])[first_open::2]
        if not np.all(self._at_field_start(units, opens) | (opens - 1 == previous_quote)):
            return None
        if self.inside:
            opens = np.concatenate([[-1], opens])
        self.inside = len(opens) > len(closes)
        if not self.inside and closes[-1] == limit - 1 and limit < len(units) and units[limit] == QUOTE:
            # The last quote is the first of a ``""``: the field goes on into the next block.
            self.inside, self.skip_quote = True, True
            closes = closes[:-1]
        if self.inside:
            closes = np.append(closes, len(units))
        return opens.astype(np.int64, copy=False), closes.astype(np.int64, copy=False)

    def _tokenized_spans(self, units: np.ndarray, limit: int, quotes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The tokenizer's rules, quote by quote: outside a field's start a quote is literal text."""
        after = quotes + 1
        doubled = ((after < len(units)) & (units[np.minimum(after, len(units) - 1)] == QUOTE)).tolist()
        starts_field = self._at_field_start(units, quotes).tolist()
        opens: list[int] = [-1] if self.inside else []
        closes: list[int] = []
        inside, skip = self.inside, False
        for index, quote in enumerate(quotes.tolist()):
            if skip:
                skip = False
            elif not inside:
                if starts_field[index]:
                    inside = True
                    opens.append(quote)
            elif doubled[index]:
                skip = True
                self.skip_quote = quote + 1 == limit
            else:
                inside = False
                closes.append(quote)
        if inside:
            closes.append(len(units))
        self.inside = inside
        return np.asarray(opens, dtype=np.int64), np.asarray(closes, dtype=np.int64)


class _SliceBuilder:
    """Turns record ends into slices, keeping only the cuts (a file may have billions of records)."""

    def __init__(self, slice_rows: int, max_slices: int | None, skip_records: int = 0) -> None:
        self.slice_rows = slice_rows
        self.max_slices = max_slices
        # Lines before the header the reader leaves out (a sep= line, title lines): one record each.
        self.skip_records = skip_records
        self.header_stop: int | None = None
        self.cuts: list[int] = []
        self.rows_in_slice: list[int] = []
        self.open_rows = 0  # rows after the last cut
        self.last_end = 0

    def add(self, ends: np.ndarray, blank: np.ndarray) -> None:
        if self.skip_records:
            skipped = min(self.skip_records, len(ends))
            self.skip_records -= skipped
            ends, blank = ends[skipped:], blank[skipped:]
        if self.header_stop is None:
            content = np.flatnonzero(~blank)
            if not len(content):
                return  # blank lines before the header
            self.header_stop = int(ends[content[0]])
            ends, blank = ends[content[0] + 1 :], blank[content[0] + 1 :]
        row_ends = ends[~blank]
        if not len(row_ends):
            return
        # Positions (1-based) of these rows within the open slice and the ones after it.
        numbers = self.open_rows + np.arange(1, len(row_ends) + 1)
        closing = row_ends[numbers % self.slice_rows == 0]
        self.cuts.extend(closing.tolist())
        if self.max_slices is not None and len(self.cuts) > self.max_slices:
            raise TooManySlicesError(f"more than {self.max_slices:,} slices of {self.slice_rows:,} rows")
        self.rows_in_slice.extend([self.slice_rows] * len(closing))
        self.open_rows = int(numbers[-1] % self.slice_rows)
        self.last_end = int(row_ends[-1])

    def layout(self, csv_format: CsvFormat) -> CsvLayout:
        if self.header_stop is None:
            raise ValueError("no header record")
        cuts, rows = list(self.cuts), list(self.rows_in_slice)
        if self.open_rows:
            cuts.append(self.last_end)
            rows.append(self.open_rows)
        if not cuts:
            return CsvLayout(csv_format, header_stop=self.header_stop, slices=())
        starts = [self.header_stop, *cuts[:-1]]
        slices = tuple(CsvSlice(start, stop, count) for start, stop, count in zip(starts, cuts, rows, strict=True))
        return CsvLayout(csv_format, header_stop=self.header_stop, slices=slices)
