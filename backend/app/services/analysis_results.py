"""The stored results of analyses: per-row arrays and the drift report in GridFS, and the one path that deletes
results.

Each analysed row has a float64 score and an int32 top column (the column that contributed most, as an index
into the analysis's ``feature_names``; -1 for none), stored as two little-endian GridFS files per analysis; the
drift report (every column of the model, which can be thousands) is a JSON file beside them. The job worker
writes them (tagged with its attempt), the results API reads them, and ``delete`` removes an analysis's results
wherever they are: files and anomaly pages, of every attempt.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.crud import anomaly_pages, files
from app.crud.analyses import Analysis
from app.db.collections import RESULTS_BUCKET, Database

# Scores are stored as little-endian float64, one per row: exact, so is_anomaly never flips on export.
SCORES_DTYPE = "<f8"
TOP_COLUMNS_DTYPE = "<i4"
# The GridFS metadata keys that tie a result file to its analysis and attempt (the orphan sweep reads them).
ANALYSIS_KEY = "session_id"
ATTEMPT_KEY = "attempt"


@dataclass(frozen=True)
class StoredArrays:
    """The GridFS files holding one attempt's per-row arrays."""

    scores_file_id: str
    top_columns_file_id: str


async def write_arrays(
    database: Database, analysis_id: str, *, attempt: int, scores: np.ndarray, top_columns: np.ndarray
) -> StoredArrays:
    """Store an attempt's per-row scores and top columns; a failure removes what was written."""
    metadata = {ANALYSIS_KEY: analysis_id, ATTEMPT_KEY: attempt}
    scores_file_id = await files.store(
        database, RESULTS_BUCKET, f"{analysis_id}.scores", scores.astype(SCORES_DTYPE).tobytes(), metadata
    )
    try:
        top_columns_file_id = await files.store(
            database,
            RESULTS_BUCKET,
            f"{analysis_id}.top_columns",
            top_columns.astype(TOP_COLUMNS_DTYPE).tobytes(),
            metadata,
        )
    except BaseException:
        await files.delete(database, RESULTS_BUCKET, [scores_file_id])
        raise
    return StoredArrays(scores_file_id, top_columns_file_id)


async def write_drift(database: Database, analysis_id: str, *, attempt: int, report: dict[str, Any]) -> str:
    """Store an attempt's full drift report (JSON); the file's id."""
    content = json.dumps(report, separators=(",", ":")).encode("utf-8")
    metadata = {ANALYSIS_KEY: analysis_id, ATTEMPT_KEY: attempt}
    return await files.store(database, RESULTS_BUCKET, f"{analysis_id}.drift.json", content, metadata)


async def read_drift(database: Database, analysis: Analysis) -> dict[str, Any] | None:
    """The analysis's full drift report, if it has one (analyses stored before drift reports have none)."""
    if analysis.drift_file_id is None:
        return None
    report: dict[str, Any] = json.loads(await files.read(database, RESULTS_BUCKET, analysis.drift_file_id))
    return report


async def read_scores(database: Database, analysis: Analysis) -> np.ndarray:
    """Every row's score, in the table's row order."""
    if analysis.scores_file_id is None:
        raise ValueError(f"Analysis {analysis.id} has no stored scores")
    stored = await files.read(database, RESULTS_BUCKET, analysis.scores_file_id)
    return np.frombuffer(stored, dtype=SCORES_DTYPE)


async def read_top_columns(database: Database, analysis: Analysis) -> np.ndarray | None:
    """Every row's top column (index into ``feature_names``, -1 for none); ``None`` if none were stored."""
    if analysis.top_columns_file_id is None:
        return None
    stored = await files.read(database, RESULTS_BUCKET, analysis.top_columns_file_id)
    return np.frombuffer(stored, dtype=TOP_COLUMNS_DTYPE)


async def delete_attempt(database: Database, analysis_id: str, *, attempt: int) -> None:
    """Remove what one attempt wrote: it lost its lease, or stopped part-way."""
    await anomaly_pages.delete_attempt(database, analysis_id, attempt=attempt)
    await files.delete_where(database, RESULTS_BUCKET, {ANALYSIS_KEY: analysis_id, ATTEMPT_KEY: attempt})


async def delete_other_attempts(database: Database, analysis: Analysis) -> None:
    """Remove what attempts other than the completed one left behind (they were interrupted mid-store)."""
    attempt = analysis.results_attempt
    if attempt is None:
        return
    await anomaly_pages.delete_other_attempts(database, analysis.id, kept_attempt=attempt)
    await files.delete_where(database, RESULTS_BUCKET, {ANALYSIS_KEY: analysis.id, ATTEMPT_KEY: {"$ne": attempt}})


async def delete(database: Database, analyses: Iterable[Analysis]) -> None:
    """Remove every result of these analyses: files (by reference and by tag) and pages."""
    doomed = list(analyses)
    ids = [analysis.id for analysis in doomed]
    if not ids:
        return
    await anomaly_pages.delete_for_analyses(database, ids)
    await files.delete(database, RESULTS_BUCKET, [file_id for analysis in doomed for file_id in analysis.file_ids])
    await files.delete_where(database, RESULTS_BUCKET, {ANALYSIS_KEY: {"$in": ids}})
