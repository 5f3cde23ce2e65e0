"""Finding the input files and cutting them into partitions (pure functions: no cluster, no model)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from app.batch.errors import BatchInputError
from app.batch.inputs import MAX_PARTITIONS, InputFile, find_inputs, parquet_ranges, plan_file, read_partition
from tests.batch.support import transactions


@pytest.fixture
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    frame = transactions(300, seed=5)
    frame.to_csv(folder / "b.csv", index=False)
    frame.to_parquet(folder / "a.parquet", row_group_size=100)
    (folder / "notes.txt").write_text("not a table")
    (folder / "_SUCCESS").write_text("")
    return folder


def test_globs_folders_and_urls_name_each_file_once_in_order(data: Path) -> None:
    found = find_inputs([str(data / "*.csv"), f"file://{data}/a.parquet", str(data), str(data / "b.csv")])
    assert found == [InputFile(str(data / "b.csv"), "csv"), InputFile(str(data / "a.parquet"), "parquet")]


@pytest.mark.parametrize(
    ("pattern", "words"),
    [
        ("missing.parquet", "No such file or folder: '{data}/missing.parquet'"),
        ("*.xlsx", "No file matches '{data}/*.xlsx'"),
        ("notes.*", "{data}/notes.txt is not a .csv or .parquet file"),
        ("empty-folder", "The folder '{data}/empty-folder' holds no .csv or .parquet file"),
    ],
)
def test_a_pattern_that_names_no_table_is_refused_naming_it(data: Path, pattern: str, words: str) -> None:
    (data / "empty-folder").mkdir()
    with pytest.raises(BatchInputError, match=re.escape(words.format(data=data))):
        find_inputs([str(data / "b.csv"), str(data / pattern)])


def test_an_url_without_its_filesystem_package_says_what_to_install() -> None:
    with pytest.raises(BatchInputError, match="install the fsspec filesystem package"):
        find_inputs(["nosuchprotocol://bucket/data.parquet"])


@pytest.mark.parametrize(
    ("group_rows", "partition_rows", "expected"),
    [
        ([100, 100, 100], 250, [(0, 200), (200, 100)]),  # small row groups are joined while they fit
        ([1000], 300, [(0, 250), (250, 250), (500, 250), (750, 250)]),  # a large one is cut into even slices
        ([50, 1001, 0, 50], 500, [(0, 50), (50, 334), (384, 334), (718, 333), (1051, 50)]),
        ([0, 0], 10, []),
    ],
)
def test_parquet_partitions_follow_row_groups_and_never_exceed_partition_rows(
    group_rows: list[int], partition_rows: int, expected: list[tuple[int, int]]
) -> None:
    assert parquet_ranges(group_rows, partition_rows) == expected


@pytest.mark.parametrize("name", ["a.parquet", "b.csv"])
def test_partitions_read_back_every_row_of_the_file_once_in_order(data: Path, name: str) -> None:
    source = find_inputs([str(data / name)])[0]
    plan = plan_file(source, partition_rows=70)
    assert plan.rows == 300
    assert all(part.rows <= 70 for part in plan.partitions)
    frames = [read_partition(part)[0] for part in plan.partitions]
    assert [len(frame) for frame in frames] == [part.rows for part in plan.partitions]
    expected = pd.read_parquet(data / "a.parquet") if name.endswith("parquet") else pd.read_csv(data / name)
    assert pd.concat(frames, ignore_index=True).equals(expected)


def test_a_slice_of_a_parquet_row_group_is_those_rows_with_the_files_column_types(data: Path) -> None:
    plan = plan_file(InputFile(str(data / "a.parquet"), "parquet"), partition_rows=40)
    middle = plan.partitions[4]  # row groups of 100 rows are cut into 34 + 33 + 33
    assert (middle.first_row, middle.rows) == (134, 33)
    _, table = read_partition(middle)
    assert table.equals(pq.read_table(data / "a.parquet").slice(134, 33))


def test_a_file_that_is_not_what_its_name_says_is_refused_naming_it(data: Path) -> None:
    (data / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(BatchInputError, match=f"{data}/broken.parquet could not be read as PARQUET"):
        plan_file(InputFile(str(data / "broken.parquet"), "parquet"), partition_rows=100)
    (data / "empty.csv").write_bytes(b"")
    with pytest.raises(BatchInputError, match=f"{data}/empty.csv: 'empty.csv' is empty"):
        plan_file(InputFile(str(data / "empty.csv"), "csv"), partition_rows=100)


def test_a_row_that_cannot_be_parsed_names_the_file_and_the_rows_of_its_partition(data: Path) -> None:
    lines = (data / "b.csv").read_text().splitlines()
    lines[150] += ",1,2,3"  # more fields than the header
    (data / "ragged.csv").write_text("\n".join(lines) + "\n")
    plan = plan_file(InputFile(str(data / "ragged.csv"), "csv"), partition_rows=100)
    read_partition(plan.partitions[0])
    words = f"{data}/ragged.csv (rows 101-200): 'ragged.csv' could not be parsed"
    with pytest.raises(BatchInputError, match=re.escape(words)):
        read_partition(plan.partitions[1])


@pytest.mark.parametrize("name", ["many.parquet", "many.csv"])
def test_a_file_that_would_make_too_many_partitions_says_to_raise_partition_rows(tmp_path: Path, name: str) -> None:
    frame = pd.DataFrame({"n": range(MAX_PARTITIONS + 1)})
    if name.endswith(".csv"):
        frame.to_csv(tmp_path / name, index=False)
    else:
        frame.to_parquet(tmp_path / name, row_group_size=1000)
    source = find_inputs([str(tmp_path / name)])[0]
    assert len(plan_file(source, partition_rows=2).partitions) == MAX_PARTITIONS // 2 + 1
    words = f"{tmp_path / name} makes more than 100,000 partitions of 1 rows: raise --partition-rows"
    with pytest.raises(BatchInputError, match=re.escape(words)):
        plan_file(source, partition_rows=1)
