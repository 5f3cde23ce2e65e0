"""The stored form of an upload: written a chunk at a time, read back a range of rows at a time, unchanged."""

from __future__ import annotations

import numpy as np
import pandas as pd

from app.services.table_snapshot import TableSnapshot, TableSnapshotWriter, encode_table


def _mixed_table(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "amount": rng.normal(size=rows),
            "count": rng.integers(0, 100, rows),
            "region": rng.choice(["north", "south", "east"], rows),
            "when": pd.date_range("2025-01-01", periods=rows, freq="h"),
        }
    )


def test_a_table_written_in_chunks_reads_back_as_written_whole():
    table = _mixed_table(1_000)
    writer = TableSnapshotWriter()
    for start in range(0, len(table), 300):
        writer.add(table.iloc[start : start + 300])

    snapshot = TableSnapshot(writer.finish().read())

    assert (snapshot.row_count, snapshot.columns) == (1_000, list(table.columns))
    pd.testing.assert_frame_equal(snapshot.rows(), TableSnapshot(encode_table(table)).rows())
    pd.testing.assert_frame_equal(snapshot.rows(), table, check_dtype=False)


def test_a_range_of_rows_keeps_its_row_numbers():
    table = _mixed_table(50)

    rows = TableSnapshot(encode_table(table)).rows(10, 20)

    assert list(rows.index) == list(range(10, 20))
    assert rows["region"].tolist() == table["region"].iloc[10:20].tolist()


def test_chunks_cover_every_row_once_in_order():
    snapshot = TableSnapshot(encode_table(_mixed_table(25)))

    chunks = list(snapshot.chunks(10))

    assert [len(chunk) for chunk in chunks] == [10, 10, 5]
    assert [row for chunk in chunks for row in chunk.index] == list(range(25))


def test_a_column_that_turns_to_text_in_a_later_chunk_keeps_every_value():
    writer = TableSnapshotWriter()
    writer.add(pd.DataFrame({"code": [1, 2], "ratio": [1, 2]}))
    writer.add(pd.DataFrame({"code": ["A7", None], "ratio": [0.5, np.nan]}))

    rows = TableSnapshot(writer.finish().read()).rows()

    assert rows["code"].tolist() == [1, 2, "A7", None]
    assert rows["ratio"].tolist()[:3] == [1.0, 2.0, 0.5] and np.isnan(rows["ratio"].iloc[3])


def test_booleans_and_numbers_in_one_column_keep_their_types():
    column = pd.Series([1.0, True, "x", 0, False], dtype=object)

    rows = TableSnapshot(encode_table(pd.DataFrame({"mixed": column}))).rows()

    assert [(type(value), value) for value in rows["mixed"]] == [(type(value), value) for value in column]
