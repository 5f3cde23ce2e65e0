"""Scoring one partition on a worker: read its rows, score them, write its part of the output.

The result columns are the API's (``anomaly_score``, ``is_anomaly``, ``top_feature``), computed the same
way, so a row scores the same here as in an uploaded file's results.
"""

from __future__ import annotations

import os
import resource
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from distributed import get_worker

from app.batch.inputs import Partition, read_partition
from app.batch.model import ModelPlugin, worker_model
from app.services.results_export import SCORE_COLUMNS


@dataclass(frozen=True)
class PartitionResult:
    """What scoring one partition did, for the progress line and the summary."""

    index: int
    rows: int
    anomalies: int
    part: str | None  # the part's file name in the output folder (None: the partition had no rows)
    schema: pa.Schema | None
    worker: str
    model_version: str


def part_name(index: int) -> str:
    """The output part of partition ``index``: names sort in input order."""
    return f"part-{index:06d}.parquet"


def score_partition(partition: Partition, *, plugin_name: str, threshold: float, staging: str) -> PartitionResult:
    """Score ``partition`` and write its rows with the result columns to ``staging`` (a Dask task).

    The part is written under a hidden temporary name and renamed, so a worker that dies mid-write (and the
    task run again elsewhere) never leaves half a part under a part's name.
    """
    detector = worker_model(plugin_name).detector()
    frame, table = read_partition(partition)
    name: str | None = None
    anomalies = 0
    if len(frame):
        details = detector.score_details(frame)
        scores = np.asarray(details.scores, dtype=np.float64)
        flagged = scores > threshold
        anomalies = int(flagged.sum())
        table = with_results(table, scores, flagged, top_features(details.column_errors, detector.feature_names))
        name = part_name(partition.index)
        temporary = Path(staging) / f".{name}.tmp"
        pq.write_table(table, temporary)
        os.replace(temporary, Path(staging) / name)
    return PartitionResult(
        index=partition.index,
        rows=len(frame),
        anomalies=anomalies,
        part=name,
        schema=table.schema if name else None,
        worker=get_worker().address,
        model_version=str(detector.model_info["version"]),
    )


def top_features(column_errors: np.ndarray, feature_names: list[str]) -> np.ndarray:
    """Per row, the column contributing most to its reconstruction error; ``None`` where the error is 0."""
    names = np.asarray([*feature_names, None], dtype=object)
    return names[np.where(column_errors.sum(axis=1) > 0, column_errors.argmax(axis=1), -1)]


def with_results(table: pa.Table, scores: np.ndarray, flagged: np.ndarray, top: np.ndarray) -> pa.Table:
    """``table`` with the result columns appended, without the pandas metadata of the input file (which
    describes the input's index and columns, not the part's)."""
    results = [pa.array(scores, pa.float64()), pa.array(flagged, pa.bool_()), pa.array(top, pa.string())]
    for name, column in zip(SCORE_COLUMNS, results, strict=True):
        table = table.append_column(name, column)
    return table.replace_schema_metadata(None)


def worker_report(plugin_name: str, dask_worker: Any) -> dict[str, float]:
    """What a worker says at the end of a run (through ``Client.run``): its loads of the run's model and its
    process's peak resident memory so far, in MB."""
    plugin = dask_worker.plugins.get(plugin_name)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "model_loads": plugin.loads if isinstance(plugin, ModelPlugin) else 0,
        "peak_memory_mb": round(peak / 2**20 if sys.platform == "darwin" else peak / 1024, 1),
    }
