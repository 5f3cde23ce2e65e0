"""The results file, written chunk by chunk: same rows in the same order, result columns added, formulas escaped."""

from __future__ import annotations

import io

import numpy as np
import openpyxl
import pandas as pd
import pytest

from app.services.results_export import RowResults, csv_blocks, escape_formula, file_blocks, write_xlsx
from app.services.table_snapshot import TableSnapshot, encode_table

ROWS = 23
CHUNK_ROWS = 5  # several chunks, the last one short


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


def _results(table: pd.DataFrame) -> RowResults:
    scores = np.linspace(0.5, 3.0, len(table))
    top_columns = np.where(np.arange(len(table)) % 3 == 0, -1, np.arange(len(table)) % 2).astype(np.int32)
    return RowResults(scores, threshold=2.0, top_columns=top_columns, feature_names=["amount", "=count"])


def _csv(table: pd.DataFrame, results: RowResults) -> pd.DataFrame:
    content = b"".join(csv_blocks(_stored(table), results, chunk_rows=CHUNK_ROWS))
    return pd.read_csv(io.BytesIO(content), keep_default_na=False, na_values=[""])


def test_csv_has_every_row_in_order_with_the_result_columns() -> None:
    table, results = _table(), _results(_table())
    exported = _csv(table, results)
    assert list(exported.columns) == ["amount", "count", "when", "note", "anomaly_score", "is_anomaly", "top_feature"]
    assert len(exported) == ROWS
    assert exported["count"].tolist() == table["count"].tolist()
    assert exported["anomaly_score"].tolist() == results.scores.tolist()  # exact: is_anomaly never flips
    assert exported["is_anomaly"].tolist() == (results.scores > 2.0).tolist()
    assert exported["top_feature"].isna().tolist() == (np.arange(ROWS) % 3 == 0).tolist()
    assert set(exported["top_feature"].dropna()) == {"amount", "'=count"}


def test_csv_escapes_formula_text_and_leaves_numbers_alone() -> None:
    exported = _csv(_table(), _results(_table()))
    assert exported["note"][2:8].tolist()[:5] == ["'=1+2", "'+cmd|' /C calc'!A0", "'-x", "'@SUM(A1:A2)", "-5"]
    assert pd.isna(exported["note"][7])
    assert exported["amount"][0] == -12.5 and pd.isna(exported["amount"][1])


def test_xlsx_has_every_row_in_order_with_text_never_a_formula() -> None:
    table, results = _table(), _results(_table())
    content = b"".join(file_blocks(write_xlsx(_stored(table), results, chunk_rows=CHUNK_ROWS)))
    exported = pd.read_excel(io.BytesIO(content), engine="calamine")
    assert len(exported) == ROWS
    assert exported["count"].tolist() == table["count"].tolist()
    # openpyxl writes 16 significant digits (Excel shows 15); is_anomaly is decided before rounding.
    assert exported["anomaly_score"].tolist() == pytest.approx(results.scores.tolist(), rel=1e-15)
    assert exported["is_anomaly"].tolist() == (results.scores > 2.0).tolist()
    assert exported["when"].tolist() == table["when"].tolist()
    sheet = openpyxl.load_workbook(io.BytesIO(content)).active
    notes = [sheet.cell(row=row, column=4) for row in range(2, 2 + ROWS)]
    assert all(cell.data_type != "f" for cell in notes)
    assert [cell.value for cell in notes[2:7]] == ["'=1+2", "'+cmd|' /C calc'!A0", "'-x", "'@SUM(A1:A2)", "-5"]
    assert sheet.cell(row=2, column=1).value == -12.5 and sheet.cell(row=3, column=1).value is None


def test_xlsx_writes_zoned_dates_infinities_and_control_characters() -> None:
    table = pd.DataFrame(
        {
            "when": pd.date_range("2025-01-01", periods=3, freq="D", tz="Europe/Paris"),
            "ratio": [1.5, np.inf, -np.inf],
            "text": ["bell\x07", "ok", "tab\tinside"],
        }
    )
    results = RowResults(np.array([1.0, 2.0, 3.0]), 2.5, None, [])
    content = b"".join(file_blocks(write_xlsx(_stored(table), results)))
    sheet = openpyxl.load_workbook(io.BytesIO(content)).active
    assert sheet.cell(row=2, column=1).value == pd.Timestamp("2025-01-01 00:00")
    assert [sheet.cell(row=row, column=2).value for row in (2, 3, 4)] == [1.5, None, None]
    assert [sheet.cell(row=row, column=3).value for row in (2, 3, 4)] == ["bell", "ok", "tab\tinside"]
    assert [sheet.cell(row=row, column=6).value for row in (2, 3, 4)] == [None, None, None]


def test_an_uploaded_column_named_like_a_result_column_is_kept() -> None:
    table = pd.DataFrame({"anomaly_score": [7, 8], "x": [1, 2]})
    exported = _csv(table, RowResults(np.array([0.1, 0.2]), 0.15, None, []))
    assert exported.columns.tolist() == ["anomaly_score", "x", "anomaly_score.1", "is_anomaly", "top_feature"]
    assert exported["anomaly_score"].tolist() == [7, 8]


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+1+1", "'+1+1"),
        ("-1+1", "'-1+1"),
        ("@A1", "'@A1"),
        ("\t=1", "'\t=1"),
        ("-5", "-5"),
        ("+3.25", "+3.25"),
        ("plain", "plain"),
        (-5, -5),
        (None, None),
    ],
)
def test_escape_formula(value: object, escaped: object) -> None:
    assert escape_formula(value) == escaped
