"""The output folder: never clobbered by accident, never half-written, one schema across its parts.

A run writes into a temporary folder beside the output (``.NAME.tmp-...``) and swaps it into place at the
end (``model_store.write_atomically``, as the training CLI does), so a failed or interrupted run leaves no
output and any earlier one as it was. A folder holding ``_summary.json`` is a complete result: it is replaced
only with ``--overwrite``. Workers write the parts, so the folder must be on a filesystem they all reach.

Each part is written with its partition's own column types; CSV type inference can differ from one partition
to the next (a column of integers with a gap in one partition reads as floats), and inputs may differ in their
columns. Before the swap, parts whose schema is not the common one are rewritten in it, so the folder reads as
one table (``pandas.read_parquet(folder)``, ``pyarrow.dataset``, Spark, DuckDB).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from app.batch.errors import BatchInputError
from app.services.results_export import SCORE_COLUMNS

SUMMARY_FILENAME = "_summary.json"
_LOCAL_PREFIX = "file://"


def check_output(output: str, *, overwrite: bool) -> Path:
    """The output folder as an absolute path, once it is clear a result may go there.

    A complete result is replaced only with ``overwrite``; a file, or a folder holding anything other than a
    result, is never replaced.
    """
    if "://" in output and not output.startswith(_LOCAL_PREFIX):
        raise BatchInputError(
            f"The output {output!r} must be a local folder (or a file:// URL) that every worker can write to, "
            "such as a shared filesystem's."
        )
    path = Path(output.removeprefix(_LOCAL_PREFIX)).expanduser().absolute()
    if path.is_dir():
        if (path / SUMMARY_FILENAME).is_file():
            if not overwrite:
                raise BatchInputError(
                    f"{path} already holds a complete result ({SUMMARY_FILENAME}): pass --overwrite to replace "
                    "it, or choose another folder."
                )
        elif any(path.iterdir()):
            raise BatchInputError(
                f"{path} holds other files, not a scoring result: choose a new or empty folder for the output."
            )
    elif path.exists() or path.is_symlink():
        raise BatchInputError(f"{path} is a file, not a folder: choose a folder for the output.")
    return path


def unified_schema(schemas: list[pa.Schema]) -> pa.Schema:
    """The schema every part is written in: every input column, in the order first seen, then the results.

    A column whose type differs between parts gets a type that holds each: integers widen to int64,
    integers and floats to float64, timestamps to the finest unit; anything else is written as text.
    """
    types: dict[str, list[pa.DataType]] = {}
    for schema in schemas:
        for field in schema:
            types.setdefault(field.name, []).append(field.type)
    names = [name for name in types if name not in SCORE_COLUMNS] + [name for name in SCORE_COLUMNS if name in types]
    return pa.schema([pa.field(name, _common_type(types[name])) for name in names])


def _common_type(types: list[pa.DataType]) -> pa.DataType:
    distinct = list(dict.fromkeys(kind for kind in types if not pa.types.is_null(kind)))
    if not distinct:
        return pa.null()
    if len(distinct) == 1:
        return distinct[0]
    if all(pa.types.is_integer(kind) for kind in distinct) and pa.uint64() not in distinct:
        return pa.int64()
    if all(pa.types.is_integer(kind) or pa.types.is_floating(kind) for kind in distinct):
        return pa.float64()
    if all(pa.types.is_timestamp(kind) for kind in distinct) and len({kind.tz for kind in distinct}) == 1:
        finest = max(distinct, key=lambda kind: ("s", "ms", "us", "ns").index(kind.unit))
        return pa.timestamp(finest.unit, distinct[0].tz)
    return pa.large_string()


def conform_part(path: str, schema: pa.Schema) -> None:
    """Rewrite the part at ``path`` in ``schema`` (a Dask task): columns cast, missing ones all null.

    A part holds one partition, so it is read whole.
    """
    table = pq.read_table(path)
    columns = []
    for field in schema:
        if field.name not in table.column_names:
            columns.append(pa.nulls(len(table), field.type))
            continue
        column = table.column(field.name)
        try:
            columns.append(column.cast(field.type, safe=False))
        except pa.ArrowException as error:
            raise BatchInputError(
                f"Column {field.name!r} is {column.type} in some inputs and {field.type} in others, and cannot be "
                f"written as one column ({error}): make its type agree across the inputs."
            ) from error
    temporary = Path(path).with_name(f".{Path(path).name}.tmp")
    pq.write_table(pa.Table.from_arrays(columns, schema=schema), temporary)
    os.replace(temporary, path)


def make_readable(folder: Path) -> None:
    """Give the (temporary, hence private) output folder the permissions any folder the user creates gets."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)


def write_summary(folder: Path, summary: dict[str, Any]) -> None:
    """Write the run's summary beside its parts: its presence marks the folder as a complete result.

    Hidden files left by a worker that died mid-write (its task was run again elsewhere) are removed first.
    """
    for leftover in folder.glob(".*"):
        leftover.unlink()
    (folder / SUMMARY_FILENAME).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
