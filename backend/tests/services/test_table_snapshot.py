"""The stored form of an upload: written a chunk at a time, read back a range of rows at a time, unchanged;
mostly-distinct text kept as free text, whatever its cardinality."""

from __future__ import annotations

import io
import json

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


def _values(rows: int) -> list[object]:
    return [None if i % 7 == 0 else 3.5 if i % 11 == 0 else f"note {i} ünïcode" for i in range(rows)]


def test_a_column_past_the_cardinality_cap_is_stored_as_free_text_with_the_same_values():
    table = pd.DataFrame({"note": pd.Series(_values(1_000), dtype=object), "region": ["north", "south"] * 500})
    writer = TableSnapshotWriter(max_coded_values=100)
    for start in range(0, len(table), 300):
        writer.add(table.iloc[start : start + 300])

    archive = writer.finish().read()
    snapshot = TableSnapshot(archive)

    assert snapshot.rows()["note"].tolist() == table["note"].tolist()
    assert snapshot.rows(401, 403)["note"].tolist() == table["note"].iloc[401:403].tolist()
    assert snapshot.rows()["region"].tolist() == table["region"].tolist()
    assert _encodings(archive) == {"note": "text", "region": "codes"}


def test_the_table_wide_cap_turns_the_column_that_passes_it_into_free_text():
    table = pd.DataFrame({"a": [f"a{i % 60}" for i in range(200)], "b": [f"b{i % 60}" for i in range(200)]})
    writer = TableSnapshotWriter(max_coded_values=1_000, max_coded_values_total=100)
    writer.add(table)

    archive = writer.finish().read()

    assert _encodings(archive) == {"a": "codes", "b": "text"}
    snapshot = TableSnapshot(archive)
    pd.testing.assert_frame_equal(snapshot.rows(), table, check_dtype=False)


def test_a_free_text_column_costs_its_bytes_not_a_list_of_its_values():
    table = pd.DataFrame({"key": [f"{i:08x}" for i in range(100_000)]})
    writer = TableSnapshotWriter()
    writer.add(table)

    archive = writer.finish().read()

    assert len(archive) < 100_000 * (8 + 8 + 1) + 10_000  # the text, a length and a kind a row
    assert TableSnapshot(archive).rows(99_998)["key"].tolist() == ["0001869e", "0001869f"]


def test_a_snapshot_written_in_the_first_format_still_reads():
    writer = TableSnapshotWriter()
    writer.add(pd.DataFrame({"amount": [1.5, 2.5], "region": ["north", None]}))
    archive = dict(np.load(writer.finish(), allow_pickle=False))
    manifest = json.loads(archive["manifest"].tobytes())
    archive["manifest"] = np.frombuffer(json.dumps({**manifest, "format": 1}).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **archive)

    rows = TableSnapshot(buffer.getvalue()).rows()

    assert rows["amount"].tolist() == [1.5, 2.5] and rows["region"].tolist()[0] == "north"


def _encodings(archive: bytes) -> dict[str, str]:
    manifest = json.loads(np.load(io.BytesIO(archive), allow_pickle=False)["manifest"].tobytes())
    return {column["name"]: column["encoding"] for column in manifest["columns"]}
