"""Cutting a CSV between records: every slice, parsed with the header, reads as the same rows do in the whole file."""

from __future__ import annotations

import csv
import io
import random

import pandas as pd
import pytest

from app.batch.csv_layout import CsvLayout, scan_csv
from app.utils.table_reader import CsvFormat, TableReadError, csv_format, parse_csv, read_table

# A comma-separated UTF-8 file whose header is its first line.
PLAIN = CsvFormat(utf16=False, delimiter=",", skip_lines=0, skip_bytes=0, columns=2, notes=[])
TRICKY_FILES = {
    "plain": b"a,b\n1,x\n2,y\n3,z\n",
    "no line break at the end": b"a,b\n1,x\n2,y\n3,z",
    "CRLF line breaks": b"a,b\r\n1,x\r\n2,y\r\n3,z\r\n",
    "CR line breaks": b"a,b\r1,x\r2,y\r3,z\r",
    "line breaks and quotes inside quoted fields": b'a,b\n1,"x\ny"\n2,"p,""q""\r\nr"\n3,z\n',
    "quotes inside unquoted fields are text": b'a,b\n1,5" screen\n2,x"y\n3,"ok\nfine"\n4,w\n',
    "text after a closing quote": b'a,b\n1,"x"y"z\nw"\n2,k\n',
    "blank and whitespace-only lines": b"\n\na,b\n1,x\n\n2,y\n  \t\r\n3,z\n\n",
    "UTF-8 with BOM, semicolons": "\ufeffa;b\n1;é\n2;ü\n3;ß\n".encode(),
    "UTF-16 with tabs and a quoted line break": 'a\tb\n1\t"x\ny"\n2\tü\n3\tz\n'.encode("utf-16"),
    "a space before a quoted field with a line break": b'a,b\n1, "x\ny, z"\n2, "6,000"\n3,w\n',
    "title lines and a rule above the header": b"Budget 2011\n*****\n\na,b,c\n1,x,2\n2,y,3\n3,z,4\n",
    "a sep= line": b"sep=;\na;b\n1;x\n2;y\n",
    "lines that are not UTF-8": b"a,b\n1,caf\xe9\n2,na\xefve\n3,z\n",
}


def slices_read(content: bytes, layout: CsvLayout) -> list[pd.DataFrame]:
    """Each slice parsed the way a worker parses it: the file's header, then the slice's bytes."""
    header = content[: layout.header_stop]
    return [parse_csv(header + content[part.start : part.stop], "f.csv", layout.csv_format) for part in layout.slices]


def cells(frame: pd.DataFrame) -> pd.DataFrame:
    """Values compared as text, numbers as floats: type inference may differ between a slice and the whole."""

    def cell(value: object) -> str:
        if pd.isna(value):  # type: ignore[call-overload]
            return "missing"
        try:
            return repr(float(str(value)))
        except ValueError:
            return str(value)

    return frame.map(cell).reset_index(drop=True)


@pytest.mark.parametrize("name", TRICKY_FILES)
@pytest.mark.parametrize("block_bytes", [1, 3, 64])
@pytest.mark.parametrize("slice_rows", [1, 2, 100])
def test_slices_read_like_the_whole_file(name: str, block_bytes: int, slice_rows: int) -> None:
    content = TRICKY_FILES[name]
    whole = read_table(content, "f.csv")
    file_format = csv_format(io.BytesIO(content), "f.csv")
    layout = scan_csv(io.BytesIO(content), file_format, slice_rows, block_bytes=block_bytes)
    parts = slices_read(content, layout)
    assert all(len(part) <= slice_rows for part in parts)
    assert [len(part) for part in parts] == [part.rows for part in layout.slices]
    assert layout.rows == len(whole)
    assert pd.concat(parts, ignore_index=True).astype(str).equals(whole.astype(str))


def test_random_files_cut_at_any_block_size_read_like_the_whole_file() -> None:
    # Short random files over the characters that matter to the tokenizer: whatever pandas makes of the whole
    # file, the slices make of its rows, with the same row count.
    rng = random.Random(7)
    alphabet = ["a", "1", ",", '"', '""', "\n", "\r", "\r\n", " ", "\t"]
    compared = 0
    for _ in range(500):
        content = ("h1,h2\n" + "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60)))).encode()
        try:
            whole = parse_csv(content, "f.csv", PLAIN)
        except TableReadError:
            continue  # pandas refuses the whole file: nothing to compare with
        compared += 1
        for block_bytes, slice_rows in ((1, 1), (4, 2), (1 << 16, 3)):
            layout = scan_csv(io.BytesIO(content), PLAIN, slice_rows, block_bytes=block_bytes)
            parts = slices_read(content, layout)
            joined = pd.concat(parts, ignore_index=True) if parts else whole.iloc[:0]
            assert layout.rows == len(whole), content
            assert cells(joined).equals(cells(whole)), content
    assert compared > 150


@pytest.mark.parametrize("quoting", [csv.QUOTE_MINIMAL, csv.QUOTE_ALL])
def test_random_text_quoted_by_pandas_is_cut_only_between_rows(quoting: int) -> None:
    # Well-formed quoting, with quotes, delimiters and line breaks inside fields: the fast path pairs the quotes.
    rng = random.Random(quoting)
    pieces = ["a", "é", ",", '"', "\n", "\r\n", "\r", " ", "1"]
    for _ in range(60):
        rows = rng.randint(1, 12)
        texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 6))) for _ in range(rows)]
        frame = pd.DataFrame({"text": texts, "n": range(rows)})
        content = frame.to_csv(index=False, quoting=quoting, lineterminator=rng.choice(["\n", "\r\n"])).encode()
        whole = read_table(content, "f.csv")
        for block_bytes, slice_rows in ((2, 1), (5, 2), (1 << 16, 4)):
            layout = scan_csv(io.BytesIO(content), PLAIN, slice_rows, block_bytes=block_bytes)
            assert cells(pd.concat(slices_read(content, layout), ignore_index=True)).equals(cells(whole)), content


def test_a_first_row_longer_than_the_header_is_refused_rather_than_read_as_an_index() -> None:
    with pytest.raises(TableReadError, match="more fields than its header"):
        parse_csv(b"a,b\n1,2,3\n4,5\n", "f.csv", PLAIN)


def test_a_file_with_only_a_header_has_no_slices() -> None:
    layout = scan_csv(io.BytesIO(b"a,b\n"), PLAIN, 10)
    assert (layout.header_stop, layout.slices, layout.rows) == (4, (), 0)


def test_slices_of_a_large_file_hold_at_most_slice_rows_and_cover_every_row() -> None:
    frame = pd.DataFrame({"n": range(10_007), "text": ['say "hi"\nthere'] * 10_007})
    content = frame.to_csv(index=False).encode()
    layout = scan_csv(io.BytesIO(content), PLAIN, 1000, block_bytes=4096)
    assert [part.rows for part in layout.slices] == [1000] * 10 + [7]
    assert pd.concat(slices_read(content, layout), ignore_index=True).equals(frame)
