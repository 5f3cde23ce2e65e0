"""The results file, written chunk by chunk: same rows in the same order, result columns added, text that can
never run as a formula (whatever control characters hide in front of it), and a stop within one chunk."""

from __future__ import annotations

import io
import os
import tempfile
import threading
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
import pytest

from app.services.results_export import (
    ExportCancelledError,
    RowResults,
    csv_blocks,
    spreadsheet_text,
    xlsx_blocks,
)
from app.services.table_snapshot import TableSnapshot, encode_table

ROWS = 23
CHUNK_ROWS = 5  # several chunks, the last one short
# Text a spreadsheet would run, each hidden behind control characters the file formats cannot hold: removed
# first, then escaped, never the other way round.
FORMULA_BYPASSES = [
    '\x01=HYPERLINK("http://evil.example","click")',
    "\x02=1+1",
    "\x00\x1f+SUM(A1:A9)",
    "\x0b-2+3",
    "\x0c@cmd",
    "\x08\t=1",
    "\x1e\r=1",
]


def _table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    table = pd.DataFrame(
        {
            "amount": rng.normal(100, 10, ROWS).round(2),
            "count": rng.integers(-5, 5, ROWS),
            "when": pd.date_range("2025-01-01", periods=ROWS, freq="h"),
            "note": [f"row {index}" for index in range(ROWS)],
        }
    )
    table.loc[0, "amount"] = -12.5
    table.loc[1, "amount"] = np.nan
    table.loc[2, "note"] = "=1+2"
    table.loc[3, "note"] = "+cmd|' /C calc'!A0"
    table.loc[4, "note"] = "-x"
    table.loc[5, "note"] = "@SUM(A1:A2)"
    table.loc[6, "note"] = "-5"
    table.loc[7, "note"] = None
    return table


def _stored(table: pd.DataFrame) -> TableSnapshot:
    """The table as an analysis reads it back: from its stored snapshot."""
    return TableSnapshot(encode_table(table))


def _results(table: pd.DataFrame, feature_names: list[str] | None = None) -> RowResults:
    scores = np.linspace(0.5, 3.0, len(table))
    top_columns = np.where(np.arange(len(table)) % 3 == 0, -1, np.arange(len(table)) % 2).astype(np.int32)
    return RowResults(scores, 2.0, top_columns, feature_names or ["amount", "=count"], {1: "anomaly", 4: "normal"})


def _csv_bytes(table: pd.DataFrame, results: RowResults) -> bytes:
    return b"".join(csv_blocks(_stored(table), results, threading.Event(), chunk_rows=CHUNK_ROWS))


def _csv(table: pd.DataFrame, results: RowResults) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(_csv_bytes(table, results)), keep_default_na=False, na_values=[""], dtype=str)


def _xlsx_bytes(table: pd.DataFrame, results: RowResults) -> bytes:
    return b"".join(xlsx_blocks(_stored(table), results, threading.Event(), chunk_rows=CHUNK_ROWS))


def _sheet(table: pd.DataFrame, results: RowResults) -> list[list[openpyxl.cell.cell.Cell]]:
    """The exported workbook's cells, row by row, as openpyxl reads them (types and formulas included)."""
    sheet = openpyxl.load_workbook(io.BytesIO(_xlsx_bytes(table, results))).active
    return [list(row) for row in sheet.iter_rows()]


def test_csv_has_every_row_in_order_with_the_result_columns() -> None:
    table, results = _table(), _results(_table())
    exported = pd.read_csv(io.BytesIO(_csv_bytes(table, results)), keep_default_na=False, na_values=[""])
    assert list(exported.columns) == [
        "amount", "count", "when", "note", "anomaly_score", "is_anomaly", "top_feature", "label"
    ]  # fmt: skip
    assert len(exported) == ROWS
    assert exported["label"][1] == "anomaly" and exported["label"][4] == "normal"
    assert exported["label"].isna().sum() == ROWS - 2
    assert exported["count"].tolist() == table["count"].tolist()
    assert exported["anomaly_score"].tolist() == results.scores.tolist()  # exact: is_anomaly never flips
    assert exported["is_anomaly"].tolist() == (results.scores > 2.0).tolist()
    assert exported["top_feature"].isna().tolist() == (np.arange(ROWS) % 3 == 0).tolist()
    assert set(exported["top_feature"].dropna()) == {"amount", "'=count"}


def test_csv_escapes_formula_text_and_leaves_numbers_alone() -> None:
    exported = _csv(_table(), _results(_table()))
    assert exported["note"][2:7].tolist() == ["'=1+2", "'+cmd|' /C calc'!A0", "'-x", "'@SUM(A1:A2)", "-5"]
    assert pd.isna(exported["note"][7])
    assert exported["amount"][0] == "-12.5" and pd.isna(exported["amount"][1])


def test_csv_keeps_a_cell_with_line_breaks_in_its_row() -> None:
    table = pd.DataFrame({"note": ["carriage\rreturn", "line\nfeed", "both\r\nends"], "x": [1, 2, 3]})
    exported = _csv(table, RowResults(np.ones(3), 0.5, None, []))
    assert exported["note"].tolist() == table["note"].tolist()
    assert exported["x"].tolist() == ["1", "2", "3"]


def test_xlsx_has_every_row_in_order_with_typed_cells() -> None:
    table, results = _table(), _results(_table())
    content = _xlsx_bytes(table, results)
    exported = pd.read_excel(io.BytesIO(content), engine="calamine")
    assert list(exported.columns) == [
        "amount", "count", "when", "note", "anomaly_score", "is_anomaly", "top_feature", "label"
    ]  # fmt: skip
    assert len(exported) == ROWS
    assert exported["label"][1] == "anomaly" and exported["label"][4] == "normal"
    assert exported["label"].isna().sum() == ROWS - 2
    assert exported["count"].tolist() == table["count"].tolist()
    # 16 significant digits are written (Excel shows 15); is_anomaly is decided before rounding.
    assert exported["anomaly_score"].tolist() == pytest.approx(results.scores.tolist(), rel=1e-15)
    assert exported["is_anomaly"].tolist() == (results.scores > 2.0).tolist()
    assert exported["when"].tolist() == table["when"].tolist()
    rows = _sheet(table, results)
    notes = [row[3] for row in rows[1:]]
    assert [cell.value for cell in notes[2:7]] == ["'=1+2", "'+cmd|' /C calc'!A0", "'-x", "'@SUM(A1:A2)", "-5"]
    assert all(cell.data_type == "s" for cell in notes if cell.value is not None)
    assert rows[1][0].value == -12.5 and rows[2][0].value is None
    assert rows[1][5].data_type == "b"


def test_xlsx_writes_zoned_dates_durations_infinities_and_control_characters() -> None:
    table = pd.DataFrame(
        {
            "when": pd.date_range("2025-01-01 08:30", periods=3, freq="D", tz="Europe/Paris"),
            "ratio": [1.5, np.inf, -np.inf],
            "text": ["bell\x07", "ok", "tab\tinside"],
            "took": pd.to_timedelta([90, 3600, None], unit="s"),
        }
    )
    rows = _sheet(table, RowResults(np.array([1.0, 2.0, 3.0]), 2.5, None, []))[1:]
    assert [row[0].value for row in rows] == [pd.Timestamp(f"2025-01-0{day} 08:30") for day in (1, 2, 3)]
    assert [row[1].value for row in rows] == [1.5, None, None]
    assert [row[2].value for row in rows] == ["bell", "ok", "tab\tinside"]
    assert [row[3].value for row in rows] == [pd.Timedelta(seconds=90), pd.Timedelta(hours=1), None]
    assert [row[6].value for row in rows] == [None, None, None]  # no top feature stored


def test_an_uploaded_column_named_like_a_result_column_is_kept() -> None:
    table = pd.DataFrame({"anomaly_score": [7, 8], "x": [1, 2]})
    exported = pd.read_csv(io.BytesIO(_csv_bytes(table, RowResults(np.array([0.1, 0.2]), 0.15, None, []))))
    assert exported.columns.tolist() == ["anomaly_score", "x", "anomaly_score.1", "is_anomaly", "top_feature", "label"]
    assert exported["anomaly_score"].tolist() == [7, 8]


def _bypass_table() -> tuple[pd.DataFrame, RowResults]:
    """Every bypass as a cell, as a column name, and as a model's feature name (the top_feature column)."""
    table = pd.DataFrame(
        {"note": FORMULA_BYPASSES, **{name: range(len(FORMULA_BYPASSES)) for name in FORMULA_BYPASSES}}
    )
    top_columns = np.arange(len(FORMULA_BYPASSES), dtype=np.int32)
    return table, RowResults(np.ones(len(table)), 0.5, top_columns, FORMULA_BYPASSES)


def _is_escaped(text: str) -> bool:
    return text.startswith("'") and not any(ord(character) < 32 and character not in "\t\r" for character in text)


def test_control_characters_cannot_hide_a_formula_in_csv() -> None:
    table, results = _bypass_table()
    exported = _csv(table, results)
    header = exported.columns.tolist()
    assert [_is_escaped(name) for name in header[1 : 1 + len(FORMULA_BYPASSES)]] == [True] * len(FORMULA_BYPASSES)
    assert [_is_escaped(cell) for cell in exported["note"]] == [True] * len(FORMULA_BYPASSES)
    assert [_is_escaped(cell) for cell in exported["top_feature"]] == [True] * len(FORMULA_BYPASSES)
    assert exported["note"][0] == '\'=HYPERLINK("http://evil.example","click")'


def test_control_characters_cannot_hide_a_formula_in_xlsx() -> None:
    table, results = _bypass_table()
    header, *rows = _sheet(table, results)
    cells = [*header, *(cell for row in rows for cell in row)]
    assert all(cell.data_type != "f" for cell in cells), [cell.value for cell in cells if cell.data_type == "f"]
    text = [header[1 : 1 + len(FORMULA_BYPASSES)], [row[0] for row in rows], [row[-2] for row in rows]]
    for column in text:
        assert [(cell.data_type, _is_escaped(cell.value)) for cell in column] == [("s", True)] * len(column)
    assert rows[0][0].value == '\'=HYPERLINK("http://evil.example","click")'


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+1+1", "'+1+1"),
        ("-1+1", "'-1+1"),
        ("@A1", "'@A1"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("\x01=1+1", "'=1+1"),
        ("\x00\x07\x1f@A1", "'@A1"),
        ("-5", "-5"),
        ("+3.25", "+3.25"),
        ("-1e5", "-1e5"),
        ("-inf", "'-inf"),  # not a plain number: a spreadsheet would read it as a formula
        ("-1_000", "'-1_000"),
        ("plain\x0btext", "plaintext"),
        ("line\nbreak", "line\nbreak"),
        ("plain", "plain"),
        ("", ""),
    ],
)
def test_spreadsheet_text(value: str, escaped: str) -> None:
    assert spreadsheet_text(value) == escaped


class _CancelledAfter(threading.Event):
    """A cancel flag that turns set after its first ``checks`` looks: a client hanging up part-way."""

    def __init__(self, checks: int) -> None:
        super().__init__()
        self.checks = checks

    def is_set(self) -> bool:
        self.checks -= 1
        return self.checks < 0


def test_a_cancelled_csv_export_stops_at_its_next_chunk() -> None:
    table = _table()
    cancelled = threading.Event()
    blocks = csv_blocks(_stored(table), _results(table), cancelled, chunk_rows=CHUNK_ROWS)
    first = next(blocks)
    cancelled.set()
    with pytest.raises(ExportCancelledError):
        next(blocks)
    assert first.count(b"\n") == 1 + CHUNK_ROWS  # the header and one chunk, nothing after the flag


def test_a_cancelled_xlsx_export_stops_at_its_next_chunk_and_leaves_no_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    table = _table()
    with caplog.at_level("INFO", logger="app.services.results_export"), pytest.raises(ExportCancelledError):
        next(xlsx_blocks(_stored(table), _results(table), _CancelledAfter(2), chunk_rows=CHUNK_ROWS))
    assert f"stopped after {2 * CHUNK_ROWS} of {ROWS} rows" in caplog.text
    assert os.listdir(tmp_path) == []
