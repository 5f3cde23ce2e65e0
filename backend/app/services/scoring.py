"""Scoring and ranking a stored table: pure functions of a detector and a table, no database.

An analysis first scores every row, a chunk at a time, keeping only one score and one top column per row
(``score_rows``); then it explains the anomalies in rank order, a batch at a time (``anomaly_items``), so its
memory is bounded by the chunk and batch sizes whatever the number of rows or anomalies.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.services.table_snapshot import TableSnapshot, json_value
from app.utils.anomaly_detector import TabularAnomalyDetector
from app.utils.drift import DriftReport

logger = logging.getLogger(__name__)

# Rows scored at a time: bounds the detector's per-chunk arrays (per-column errors, reconstruction).
SCORING_CHUNK_ROWS = 20_000
# Anomalies explained (and stored) at a time.
ANOMALY_BATCH_ROWS = 5_000
# The columns named in an anomaly's top_features.
TOP_FEATURES = 3
# Shifted columns an analysis's status names (the drift report has them all).
DRIFT_SUMMARY_COLUMNS = 20
# The model's training-score distribution an analysis keeps: its value at every 0.1 percentile.
QUANTILE_STEPS = 1000
# Text longer than this is cut in an anomaly's stored ``values`` (the download still has it whole), so no row,
# however wide or long its cells, can make a stored document near MongoDB's 16 MB limit.
MAX_STORED_CELL_CHARS = 500


@dataclass(frozen=True)
class ScoredRows:
    """Every row's score and top column, the anomalous rows ranked, and how the rows drifted from training."""

    scores: np.ndarray  # float64, one per row: the detector's anomaly score
    top_columns: np.ndarray  # int32, one per row: index into feature_names of the top column; -1 for none
    ranking: np.ndarray  # int64 row numbers of the anomalies, highest score first, equal scores in row order
    feature_names: list[str]
    drift: DriftReport


def score_rows(
    detector: TabularAnomalyDetector,
    table: TableSnapshot,
    threshold: float,
    *,
    on_progress: Callable[[float], None] | None = None,
) -> ScoredRows:
    """Score every row of ``table``, rank those above ``threshold`` and report the drift from the training rows.

    ``on_progress`` is told the share of rows scored so far (0 to 1) after each chunk, and may raise to stop the
    work. The drift is counted from the same parse as the scores; a report that cannot be made says why instead
    of failing the analysis.
    """
    scores = np.empty(table.row_count, dtype=np.float64)
    top_columns = np.empty(table.row_count, dtype=np.int32)
    drift = detector.drift_accumulator()
    for chunk in table.chunks(SCORING_CHUNK_ROWS):
        start = chunk.index.start
        details = detector.score_details(chunk, drift=drift)
        stop = start + len(details.scores)
        scores[start:stop] = details.scores
        column_errors = details.column_errors
        top_columns[start:stop] = np.where(column_errors.sum(axis=1) > 0, column_errors.argmax(axis=1), -1)
        if on_progress is not None:
            on_progress(stop / table.row_count)
    try:
        report = drift.report()
    except Exception as error:  # drift describes the data; it must never cost the user the analysis
        logger.exception("The drift report could not be made")
        report = DriftReport.unavailable(f"the drift report could not be computed ({type(error).__name__})")
    return ScoredRows(scores, top_columns, rank_anomalies(scores, threshold), detector.feature_names, report)


def drift_summary(report: DriftReport) -> dict[str, Any]:
    """What an analysis's status says of its drift: the verdict, the shifted columns (the first few) and advice."""
    return {
        "available": report.available,
        "verdict": report.verdict,
        "reason": report.reason,
        "advice": report.advice,
        "summary": report.summary,
        "shifted_columns": report.flagged_columns[:DRIFT_SUMMARY_COLUMNS],
        "shifted_count": len(report.flagged_columns),
    }


def rank_anomalies(scores: np.ndarray, threshold: float) -> np.ndarray:
    """The rows scoring above ``threshold``, highest score first; equal scores keep the rows' order."""
    anomalous = np.flatnonzero(scores > threshold)
    return anomalous[np.argsort(-scores[anomalous], kind="stable")]


def ranked_batches(ranking: np.ndarray, batch_rows: int = ANOMALY_BATCH_ROWS) -> Iterator[tuple[int, np.ndarray]]:
    """The ranking in consecutive batches, each with the rank of its first anomaly."""
    for first_rank in range(0, len(ranking), batch_rows):
        yield first_rank, ranking[first_rank : first_rank + batch_rows]


def anomaly_items(
    detector: TabularAnomalyDetector, table: TableSnapshot, rows: np.ndarray, scores: np.ndarray
) -> list[dict[str, Any]]:
    """The anomalies at ``rows`` (in rank order) as users read them: the row as uploaded, its score and the
    columns that explain it (the detector scores just these rows again to say why)."""
    if len(rows) == 0:
        return []
    frame = table.take(rows)
    explanations = detector.explain(detector.score_details(frame), np.arange(len(rows)), TOP_FEATURES)
    names = table.columns
    cells = frame.to_numpy(dtype=object)
    return [
        {
            "row": int(row),
            "score": float(scores[row]),
            "values": {name: stored_value(value) for name, value in zip(names, cells[position], strict=True)},
            "top_features": [
                {
                    "column": feature["column"],
                    "share": round(feature["share"], 4),
                    "expected": json_value(feature["expected"]),
                }
                for feature in explanations[position]
            ],
        }
        for position, row in enumerate(rows)
    ]


def stored_value(value: Any) -> Any:
    """A cell as an anomaly's ``values`` holds it: JSON-ready, text cut past ``MAX_STORED_CELL_CHARS``."""
    cell = json_value(value)
    if isinstance(cell, str) and len(cell) > MAX_STORED_CELL_CHARS:
        return (
            f"{cell[:MAX_STORED_CELL_CHARS]}… [cut: {len(cell):,} characters in all; the results download has it whole]"
        )
    return cell


def training_score_quantiles(detector: TabularAnomalyDetector) -> list[float]:
    """The detector's held-out training scores at percentiles 0, 0.1, ..., 100 (to turn scores into percentiles)."""
    scores = detector.training_scores_
    if scores is None:
        raise RuntimeError("The detector is not trained: call train() or load() first.")
    return np.percentile(scores, np.linspace(0, 100, QUANTILE_STEPS + 1)).tolist()
