"""The files a batch run scores, cut into partitions that workers read on their own.

Inputs are CSV or Parquet files named by path, folder, glob or fsspec URL (``file://`` always; ``s3://``,
``gs://``... when that filesystem's package is installed). A partition is at most ``partition_rows`` rows of
one file, and reading it never needs more of the file than those rows:

- Parquet: whole row groups joined while they fit, and a larger row group split into even slices read by
  record batches (the batches before a slice are decoded and dropped: Parquet has no way to seek to a row);
- CSV: byte ranges between records (see ``csv_layout``), each parsed with the file's header and format.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, BinaryIO, Literal

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from app.batch.csv_layout import TooManySlicesError, scan_csv
from app.batch.errors import BatchInputError
from app.utils.table_reader import CsvFormat, TableReadError, csv_format, parse_csv

InputKind = Literal["csv", "parquet"]
SUFFIXES: dict[str, InputKind] = {".csv": "csv", ".parquet": "parquet", ".parq": "parquet", ".pq": "parquet"}
MAX_INPUT_FILES = 10_000
DEFAULT_PARTITION_ROWS = 250_000
MAX_PARTITION_ROWS = 1_000_000
MAX_PARTITIONS = 100_000  # per run: each is a task, a part and a line of the summary
# Rows decoded at a time when a partition is a slice of a larger Parquet row group.
PARQUET_BATCH_ROWS = 65_536


@dataclass(frozen=True)
class InputFile:
    """One file to score: where workers open it (an absolute path, or an fsspec URL) and how to parse it."""

    url: str
    kind: InputKind


@dataclass(frozen=True)
class CsvRange:
    """Where a CSV partition's rows are: its file's header is bytes ``[0, header_stop)``, the rows ``[start, stop)``."""

    csv_format: CsvFormat
    header_stop: int
    start: int
    stop: int


@dataclass(frozen=True)
class Partition:
    """At most ``partition_rows`` rows of one file; ``index`` orders the output parts like the inputs."""

    index: int
    source: InputFile
    first_row: int  # the 0-based data row of the file this partition starts at
    rows: int  # CSV: rows counted by the layout scan (what pandas reads, blank lines left out)
    csv_range: CsvRange | None = None

    @property
    def description(self) -> str:
        """The partition as a user would look for it: the file and its rows (1-based, inclusive)."""
        return f"{self.source.url} (rows {self.first_row + 1:,}-{self.first_row + self.rows:,})"


@dataclass(frozen=True)
class FilePlan:
    """What planning learnt about one file: its columns and its partitions (their ``index`` still 0)."""

    source: InputFile
    columns: list[str]
    rows: int
    partitions: list[Partition]


def find_inputs(patterns: list[str]) -> list[InputFile]:
    """The files ``patterns`` name, in order and each once; ``BatchInputError`` for one that names none.

    A pattern is a file, a folder (its ``.csv`` and ``.parquet`` files, not those starting with ``_`` or
    ``.``) or a glob, as a local path or an fsspec URL.
    """
    found: dict[str, InputFile] = {}
    for pattern in patterns:
        fs, path = _filesystem(pattern)
        if any(character in path for character in "*?["):
            paths = sorted(name for name, info in fs.glob(path, detail=True).items() if info["type"] == "file")
            if not paths:
                raise BatchInputError(
                    f"No file matches {pattern!r}: check the pattern (quote it, so that this command expands it "
                    "rather than the shell)."
                )
        elif fs.isdir(path):
            paths = sorted(
                info["name"]
                for info in fs.ls(path, detail=True)
                if info["type"] == "file"
                and PurePosixPath(info["name"]).suffix.lower() in SUFFIXES
                and not PurePosixPath(info["name"]).name.startswith(("_", "."))
            )
            if not paths:
                raise BatchInputError(f"The folder {pattern!r} holds no .csv or .parquet file: check the path.")
        elif fs.isfile(path):
            paths = [path]
        else:
            raise BatchInputError(f"No such file or folder: {pattern!r}: check the path.")
        for name in paths:
            url = name if _is_local(fs) else fs.unstrip_protocol(name)
            found.setdefault(url, InputFile(url, _kind(url)))
        if len(found) > MAX_INPUT_FILES:
            raise BatchInputError(
                f"The inputs name more than {MAX_INPUT_FILES:,} files: score them in several runs, or join "
                "small files into larger ones."
            )
    return list(found.values())


def _filesystem(pattern: str) -> tuple[Any, str]:
    try:
        return fsspec.core.url_to_fs(pattern)
    except (ImportError, ValueError) as error:
        raise BatchInputError(
            f"Cannot open {pattern!r} ({error}): install the fsspec filesystem package for that URL, or use a "
            "local path."
        ) from error


def _is_local(fs: Any) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def _kind(url: str) -> InputKind:
    suffix = PurePosixPath(url).suffix.lower()
    if suffix not in SUFFIXES:
        raise BatchInputError(
            f"{url} is not a .csv or .parquet file: give only those (a workbook can be exported as CSV), or "
            "narrow the pattern (e.g. 'data/*.parquet')."
        )
    return SUFFIXES[suffix]


def open_input(url: str) -> BinaryIO:
    """Open an input file for reading, wherever it is."""
    fs, path = fsspec.core.url_to_fs(url)
    handle: BinaryIO = fs.open(path, "rb")
    return handle


def plan_file(source: InputFile, partition_rows: int) -> FilePlan:
    """Read ``source``'s columns and cut its rows into partitions (a Dask task: CSV is read once, whole).

    ``BatchInputError`` when the file cannot be read, or makes more than ``MAX_PARTITIONS`` partitions.
    """
    try:
        if source.kind == "parquet":
            return _plan_parquet(source, partition_rows)
        return _plan_csv(source, partition_rows)
    except TooManySlicesError as error:
        raise too_many_partitions(f"{source.url} makes", partition_rows) from error
    except TableReadError as error:
        raise BatchInputError(f"{source.url}: {error}") from error
    except (OSError, pa.ArrowException, ValueError) as error:
        raise BatchInputError(
            f"{source.url} could not be read as {source.kind.upper()} ({error}): check the file, or leave it out."
        ) from error


def too_many_partitions(subject: str, partition_rows: int) -> BatchInputError:
    """The error for inputs that would make more than ``MAX_PARTITIONS`` partitions (``subject``: "X makes")."""
    return BatchInputError(
        f"{subject} more than {MAX_PARTITIONS:,} partitions of {partition_rows:,} rows: raise "
        f"--partition-rows (at most {MAX_PARTITION_ROWS:,}), or score the files in several runs."
    )


def _plan_parquet(source: InputFile, partition_rows: int) -> FilePlan:
    with open_input(source.url) as handle:
        metadata = pq.ParquetFile(handle).metadata
        columns = metadata.schema.to_arrow_schema().names
        group_rows = [metadata.row_group(group).num_rows for group in range(metadata.num_row_groups)]
    if math.ceil(sum(group_rows) / partition_rows) > MAX_PARTITIONS:  # before listing them all
        raise too_many_partitions(f"{source.url} makes", partition_rows)
    partitions = [
        Partition(0, source, first_row, rows) for first_row, rows in parquet_ranges(group_rows, partition_rows)
    ]
    if len(partitions) > MAX_PARTITIONS:
        raise too_many_partitions(f"{source.url} makes", partition_rows)
    return FilePlan(source, columns, sum(group_rows), partitions)


def parquet_ranges(group_rows: list[int], partition_rows: int) -> list[tuple[int, int]]:
    """``(first_row, rows)`` of each partition of a Parquet file with row groups of ``group_rows`` rows.

    Consecutive row groups are joined while they fit in ``partition_rows``; a larger one is split into the
    fewest even slices that fit.
    """
    ranges: list[tuple[int, int]] = []
    start = pending_start = pending_rows = 0
    for rows in group_rows:
        if pending_rows and (pending_rows + rows > partition_rows or rows > partition_rows):
            ranges.append((pending_start, pending_rows))
            pending_rows = 0
        if rows > partition_rows:
            pieces = math.ceil(rows / partition_rows)
            offset = start
            for piece in range(pieces):
                size = rows // pieces + (1 if piece < rows % pieces else 0)
                ranges.append((offset, size))
                offset += size
        elif rows:
            if not pending_rows:
                pending_start = start
            pending_rows += rows
        start += rows
    if pending_rows:
        ranges.append((pending_start, pending_rows))
    return ranges


def _plan_csv(source: InputFile, partition_rows: int) -> FilePlan:
    with open_input(source.url) as handle:
        file_format = csv_format(handle, source.url)
        handle.seek(0)
        layout = scan_csv(handle, file_format, partition_rows, max_slices=MAX_PARTITIONS)
        handle.seek(0)
        header = handle.read(layout.header_stop)
    columns = [str(name) for name in parse_csv(header, source.url, file_format).columns]
    partitions = []
    first_row = 0
    for part in layout.slices:
        csv_range = CsvRange(file_format, layout.header_stop, part.start, part.stop)
        partitions.append(Partition(0, source, first_row, part.rows, csv_range))
        first_row += part.rows
    return FilePlan(source, columns, layout.rows, partitions)


def read_partition(partition: Partition) -> tuple[pd.DataFrame, pa.Table]:
    """The partition's rows as the DataFrame the detector scores and the Arrow table the output keeps.

    Parquet keeps its columns' types as they are; CSV reads as the API reads an upload.
    ``BatchInputError`` names the file and the rows when they cannot be read.
    """
    try:
        if partition.csv_range is not None:
            frame = _read_csv_range(partition.source.url, partition.csv_range)
            return frame, pa.Table.from_pandas(frame, preserve_index=False)
        table = _read_parquet_rows(partition.source.url, partition.first_row, partition.rows)
        return table.to_pandas(), table
    except TableReadError as error:
        raise BatchInputError(f"{partition.description}: {error}") from error
    except (OSError, pa.ArrowException, ValueError) as error:
        raise BatchInputError(
            f"{partition.description} could not be read ({error}): check the file, or leave it out."
        ) from error


def _read_csv_range(url: str, csv_range: CsvRange) -> pd.DataFrame:
    with open_input(url) as handle:
        header = handle.read(csv_range.header_stop)
        handle.seek(csv_range.start)
        rows = handle.read(csv_range.stop - csv_range.start)
    return parse_csv(header + rows, url, csv_range.csv_format)


def _read_parquet_rows(url: str, first_row: int, rows: int) -> pa.Table:
    """Rows ``[first_row, first_row + rows)`` of a Parquet file, reading only the row groups that hold them."""
    with open_input(url) as handle:
        parquet = pq.ParquetFile(handle)
        metadata = parquet.metadata
        groups: list[int] = []
        skip = group_start = 0
        for group in range(metadata.num_row_groups):
            group_rows = metadata.row_group(group).num_rows
            if group_start + group_rows > first_row and group_start < first_row + rows:
                if not groups:
                    skip = first_row - group_start
                groups.append(group)
            group_start += group_rows
        batches: list[pa.RecordBatch] = []
        wanted = rows
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, row_groups=groups):
            if skip >= batch.num_rows:
                skip -= batch.num_rows
                continue
            batch = batch.slice(skip, wanted)
            skip = 0
            batches.append(batch)
            wanted -= batch.num_rows
            if not wanted:
                break
        return pa.Table.from_batches(batches, schema=parquet.schema_arrow)
