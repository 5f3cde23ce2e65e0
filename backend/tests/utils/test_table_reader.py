"""One reader for every entry point: CSV dialects and encodings, title lines, Excel through calamine, budgets
checked before anything is materialised, clear refusals."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import openpyxl
import pandas as pd
import pytest
import xlwt

from app.utils.table_reader import (
    ReadLimits,
    TableChunks,
    TableReadError,
    UnsupportedFileTypeError,
    iter_table,
    read_table,
)

EXPECTED = pd.DataFrame({"name": ["Zoë", "Ånge"], "amount": [1.5, 2.25], "count": [3, 4]})


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("name,amount,count\nZoë,1.5,3\nÅnge,2.25,4\n", "utf-8"),
        ("name;amount;count\nZoë;1.5;3\nÅnge;2.25;4\n", "utf-8-sig"),
        ("name\tamount\tcount\nZoë\t1.5\t3\nÅnge\t2.25\t4\n", "latin-1"),
        ("name|amount|count\nZoë|1.5|3\nÅnge|2.25|4\n", "utf-16"),
    ],
    ids=["comma-utf8", "semicolon-utf8-bom", "tab-latin1", "pipe-utf16"],
)
def test_csv_delimiters_and_encodings_are_detected(text: str, encoding: str):
    frame = read_table(text.encode(encoding), "export.csv")

    pd.testing.assert_frame_equal(frame, EXPECTED)


def test_xlsx_is_read_from_a_path(tmp_path: Path):
    path = tmp_path / "sheet.xlsx"
    EXPECTED.to_excel(path, index=False)

    pd.testing.assert_frame_equal(read_table(path), EXPECTED)


def test_legacy_xls_is_read(tmp_path: Path):
    workbook = xlwt.Workbook()
    sheet = workbook.add_sheet("data")
    for column, name in enumerate(EXPECTED.columns):
        sheet.write(0, column, name)
        for row, value in enumerate(EXPECTED[name], start=1):
            sheet.write(row, column, value.item() if hasattr(value, "item") else value)
    path = tmp_path / "legacy.xls"
    workbook.save(str(path))

    frame = read_table(path)

    assert frame["name"].tolist() == ["Zoë", "Ånge"]
    assert frame["amount"].tolist() == [1.5, 2.25]


def test_the_first_non_empty_sheet_is_read():
    buffer = io.BytesIO()
    with pd.ExcelWriter(buffer) as writer:
        pd.DataFrame().to_excel(writer, sheet_name="cover", index=False)
        EXPECTED.to_excel(writer, sheet_name="data", index=False)

    pd.testing.assert_frame_equal(read_table(buffer.getvalue(), "book.xlsx"), EXPECTED)


def test_unsupported_extensions_are_refused_with_what_to_do():
    with pytest.raises(UnsupportedFileTypeError, match=r"upload a \.csv, \.xlsx or \.xls file"):
        read_table(b"{}", "data.json")


@pytest.mark.parametrize(
    ("content", "filename", "message"),
    [
        (b"", "empty.csv", "is empty"),
        (b"a,b,c\n", "header.csv", "has no data rows"),
        (b"\x00\x01\x02binary\x00", "binary.csv", "not a text CSV file"),
        (b"PK\x03\x04 not really a zip", "broken.xlsx", "could not be read as an Excel workbook"),
    ],
)
def test_unreadable_tables_are_refused_with_a_clear_message(content: bytes, filename: str, message: str):
    with pytest.raises(TableReadError, match=message):
        read_table(content, filename)


def test_a_missing_file_is_named(tmp_path: Path):
    with pytest.raises(TableReadError, match="File not found"):
        read_table(tmp_path / "nope.csv")


def test_csv_is_read_in_chunks_that_add_up_to_the_whole_table(tmp_path: Path):
    frame = pd.DataFrame({"a": range(2_500), "b": [f"x{i % 7}" for i in range(2_500)]})
    path = tmp_path / "big.csv"
    frame.to_csv(path, index=False, sep=";")

    chunks = list(iter_table(path, chunk_rows=1_000))

    assert [len(chunk) for chunk in chunks] == [1_000, 1_000, 500]
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), frame)


def test_a_workbook_is_sliced_into_chunks(tmp_path: Path):
    path = tmp_path / "sheet.xlsx"
    EXPECTED.to_excel(path, index=False)

    chunks = list(iter_table(path, chunk_rows=1))

    assert [chunk["name"].item() for chunk in chunks] == ["Zoë", "Ånge"]


def test_chunked_reading_refuses_a_header_only_file():
    with pytest.raises(TableReadError, match="has no data rows"):
        list(iter_table(b"a,b\n", "header.csv"))


def test_a_file_object_is_read_from_its_start():
    handle = io.BytesIO(b"a,b\n1,2\n")
    handle.read(3)

    assert read_table(handle, "upload.csv").to_dict("list") == {"a": [1], "b": [2]}


def _zip_bomb(unpacked_mb: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        with archive.open("xl/worksheets/sheet1.xml", "w") as sheet:
            block = b"0" * 2**20
            for _ in range(unpacked_mb):
                sheet.write(block)
    return buffer.getvalue()


def test_a_decompression_bomb_is_refused_before_parsing():
    bomb = _zip_bomb(unpacked_mb=300)

    assert len(bomb) < 2 * 2**20
    with pytest.raises(TableReadError, match="would expand to 300 MB"):
        read_table(bomb, "innocent.xlsx")


def test_a_zip_that_is_not_a_workbook_is_refused():
    with pytest.raises(TableReadError, match="could not be read as an Excel workbook"):
        read_table(_zip_bomb(unpacked_mb=1), "archive.xlsx")


def test_headers_equal_once_stripped_get_pandas_suffixes():
    frame = read_table(b"v,v ,w\n1,2,3\n", "spaced.csv")

    assert list(frame.columns) == ["v", "v.1", "w"]
    assert frame.iloc[0].tolist() == [1, 2, 3]


def test_a_quoted_field_after_a_space_is_one_field():
    frame = read_table(b'date, temperature, place\n2011-01-03, "6,000,000",Galway\n', "spaced.csv")

    assert list(frame.columns) == ["date", "temperature", "place"]
    assert frame.iloc[0].tolist() == ["2011-01-03", "6,000,000", "Galway"]


def test_lines_that_are_not_utf8_are_read_as_windows_1252_and_counted():
    content = "name,city\nZoë,Zürich\n".encode() + "Anaïs,Besançon\n€uro,Köln\n".encode("cp1252")
    reading = TableChunks(content, "mixed.csv")

    frame = pd.concat(list(reading))

    assert frame["city"].tolist() == ["Zürich", "Besançon", "Köln"]
    assert frame["name"].tolist() == ["Zoë", "Anaïs", "€uro"]
    assert reading.notes == ["2 lines decoded as Windows-1252 (Latin-1): not UTF-8"]


def test_title_lines_and_a_rule_above_the_header_are_skipped_and_noted():
    content = (
        b"Physicians by speciality (count). Source: statistics office\n"
        b"****************************************\n"
        b"\n"
        b"Region:;Germany\n"
        b";;;\n"
        b"speciality;1985;1993;2000\n"
        b"surgery;379;575;686\n"
        b"paediatrics;135;123;100\n"
    )
    reading = TableChunks(content, "statistics.csv")

    frame = pd.concat(list(reading))

    assert list(frame.columns) == ["speciality", "1985", "1993", "2000"]
    assert frame["1993"].tolist() == [575, 123]
    assert reading.notes == ["skipped 3 title lines above the header"]


def test_a_sep_line_names_the_delimiter():
    reading = TableChunks(b"sep=;\na;b\n1,5;2\n", "excel.csv")

    frame = pd.concat(list(reading))

    assert frame.to_dict("list") == {"a": ["1,5"], "b": [2]}
    assert reading.notes == ["delimiter ';' taken from the file's first line ('sep=;')"]


def test_title_rows_above_a_sheets_header_are_skipped_and_noted():
    buffer = io.BytesIO()
    with pd.ExcelWriter(buffer) as writer:
        pd.DataFrame([["Report for January"], [None]]).to_excel(writer, index=False, header=False)
        EXPECTED.to_excel(writer, index=False, startrow=3)
    reading = TableChunks(buffer.getvalue(), "report.xlsx")

    frame = pd.concat(list(reading))

    pd.testing.assert_frame_equal(frame, EXPECTED)
    assert reading.notes == ["skipped 3 title rows above the header"]


SMALL = ReadLimits(max_columns=5, max_cells=100, max_text_bytes=10_000)


def test_a_header_wider_than_max_columns_is_refused_before_any_row_is_parsed():
    header = b",".join(b"c%d" % index for index in range(6))

    with pytest.raises(TableReadError, match=r"has 6 columns, more than the 5 allowed \(MAX_COLUMNS\)"):
        read_table(header + b"\n" + b"x\n" * 10, "wide.csv", limits=SMALL)


def test_a_table_over_max_cells_is_refused_with_what_to_do():
    content = b"a,b\n" + b"1,2\n" * 51

    with pytest.raises(TableReadError, match=r"more than 100 cells \(MAX_CELLS\): split it"):
        list(iter_table(content, "long.csv", chunk_rows=10, limits=SMALL))
    assert len(read_table(b"a,b\n" + b"1,2\n" * 50, "fits.csv", limits=SMALL)) == 50


def _workbook(sheet: bytes, shared_strings: bytes | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        if shared_strings is not None:
            archive.writestr("xl/sharedStrings.xml", shared_strings)
        archive.writestr("xl/worksheets/sheet1.xml", b"<worksheet><sheetData>" + sheet + b"</sheetData></worksheet>")
    return buffer.getvalue()


def test_cells_repeating_a_long_shared_string_are_refused_before_calamine_reads_them():
    shared = b"<sst><si><t>" + b"x" * 1_000 + b"</t></si><si><t>y</t></si></sst>"
    sheet = b'<row><c t="s"><v>0</v></c><c t="s"><v>1</v></c></row>' * 11

    with pytest.raises(TableReadError, match=r"more than 0 MB in memory \(MAX_TEXT_MB"):
        read_table(_workbook(sheet, shared), "strings.xlsx", limits=SMALL)


def test_two_far_apart_cells_are_refused_by_their_used_range():
    sheet = b'<row r="1"><c r="A1"><v>1</v></c></row><row r="1048576"><c r="E1048576"><v>2</v></c></row>'

    with pytest.raises(TableReadError, match=r"more than 100 cells in its used range \(MAX_CELLS\)"):
        read_table(_workbook(sheet), "sparse.xlsx", limits=SMALL)


def test_cells_without_content_do_not_count(tmp_path: Path):
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet["A1"], sheet["A2"] = "a", 7
    sheet["XFD1"].font = openpyxl.styles.Font(bold=True)  # a styled cell without a value, 16,384 columns out
    workbook.save(tmp_path / "styled.xlsx")

    assert read_table(tmp_path / "styled.xlsx", limits=SMALL).to_dict("list") == {"a": [7]}


def test_a_wide_table_is_read_in_fewer_rows_at_a_time():
    columns = 50_000
    content = (
        b",".join(b"c%d" % index for index in range(columns)) + b"\n" + (b",".join([b"1"] * columns) + b"\n") * 100
    )

    chunks = list(iter_table(content, "wide.csv", limits=ReadLimits(max_columns=columns)))

    assert [len(chunk) for chunk in chunks] == [40, 40, 20]
