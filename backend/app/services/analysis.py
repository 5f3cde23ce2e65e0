"""Analyses as users see them: starting one (or reusing an equal one), its status, anomalies and results.

The work itself runs in ``app.services.analysis_runner``; this module only validates, queues and reads.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, Literal

import numpy as np

from app.core.errors import AnalysisNotReadyError, ExportTooLargeError
from app.crud import anomaly_pages, datasets, files, sessions
from app.crud.datasets import Dataset
from app.crud.sessions import AnalysisSession, SessionStatus
from app.db.collections import RESULTS_BUCKET, Database
from app.services import datasets as dataset_service
from app.services import results_export
from app.services.analysis_runner import SCORES_DTYPE, TOP_COLUMNS_DTYPE, AnalysisRunner
from app.services.export_pool import ExportSlot
from app.services.models import FALLBACK_VERSION, ModelRegistry

# The fallback path trains a detector with its default percentile unless the request sets one.
FALLBACK_PERCENTILE = 95.0
# Equal requests racing each other settle within a couple of rounds; more means something is wrong.
QUEUE_ATTEMPTS = 5
EXCEL_MAX_ROWS = 1_048_575  # one row of an Excel sheet is the header
ExportFormat = Literal["csv", "xlsx"]
# Log-spaced bins show the bulk of normal scores and the far tail of anomalies in one picture.
HistogramScale = Literal["linear", "log"]
_MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


@dataclass(frozen=True)
class AnalysisTicket:
    """The session that answers an analysis request, and whether it already existed."""

    session: AnalysisSession
    reused: bool


@dataclass(frozen=True)
class AnalysisStatus:
    """A dataset's analysis status: its latest session, or ``uploaded`` before any."""

    dataset: Dataset
    session: AnalysisSession | None


@dataclass(frozen=True)
class AnomalyPage:
    """A page of a dataset's anomalies, highest score first."""

    session: AnalysisSession
    offset: int
    limit: int
    items: list[dict[str, Any]]


@dataclass(frozen=True)
class ScoreHistogram:
    """How the scores of all rows of an analysis are distributed: ``len(edges) == len(counts) + 1``."""

    session: AnalysisSession
    edges: list[float]
    counts: list[int]
    scale: HistogramScale


@dataclass(frozen=True)
class ExportedResults:
    """The results file, to stream: every uploaded row with ``anomaly_score``, ``is_anomaly``, ``top_feature``."""

    blocks: AsyncIterator[bytes]
    filename: str
    media_type: str


async def request_analysis(
    database: Database,
    models: ModelRegistry,
    runner: AnalysisRunner,
    dataset: Dataset,
    *,
    threshold_percentile: float | None,
    model_name: str | None,
    force: bool,
) -> AnalysisTicket:
    """Queue an analysis of ``dataset``, or return the live one with the same model and settings.

    Everything that can be checked without reading the data is checked here, before the request is
    answered: which model fits the dataset's columns, or that the named one does (``ModelRegistry.select``).
    A percentile is re-thresholded against the model's stored training scores, no retraining; the session
    key holds the model version and the percentile, so other settings are another session. ``force`` always
    starts a new session.
    """
    model = models.select(model_name, dataset.columns)
    if model is not None:
        percentile = model.detector.threshold_percentile if threshold_percentile is None else threshold_percentile
        version = model.version
    else:
        percentile = FALLBACK_PERCENTILE if threshold_percentile is None else threshold_percentile
        version = FALLBACK_VERSION
    active_key = f"{dataset.id}|{version}|{float(percentile)!r}"
    ticket: AnalysisTicket | None = None
    # The unique active_key settles races between equal requests: one inserts, the others find and reuse it.
    for _ in range(QUEUE_ATTEMPTS):
        existing = None if force else await sessions.find_live(database, active_key)
        if existing is not None:
            ticket = AnalysisTicket(existing, reused=True)
            break
        if force:
            await sessions.retire(database, active_key)
        created = await sessions.insert(
            database,
            dataset_id=dataset.id,
            owner_id=dataset.owner_id,
            model=model.name if model else None,
            model_version=version,
            fallback_train=model is None,
            threshold_percentile=float(percentile),
            active_key=active_key,
        )
        if created is not None:
            ticket = AnalysisTicket(created, reused=False)
            break
    if ticket is None:
        raise RuntimeError(f"Could not queue an analysis of dataset {dataset.id} after {QUEUE_ATTEMPTS} attempts")
    await datasets.set_latest_session(database, dataset.id, ticket.session.id)
    if not ticket.reused:
        runner.wake()
    return ticket


async def status(database: Database, dataset: Dataset) -> AnalysisStatus:
    """The dataset's latest analysis, as its status."""
    session = await dataset_service.latest_session(database, dataset)
    return AnalysisStatus(dataset, session)


async def anomalies(database: Database, dataset: Dataset, limit: int, offset: int) -> AnomalyPage:
    """A page of the anomalies found by the dataset's latest analysis."""
    session = await _analysed_session(database, dataset)
    items = await anomaly_pages.read_range(database, session.id, offset, limit)
    return AnomalyPage(session, offset, limit, items)


async def export_results(
    database: Database, dataset: Dataset, export_format: ExportFormat, slot: ExportSlot
) -> ExportedResults:
    """The uploaded rows with their scores and labels, as CSV or an Excel workbook, made in ``slot``'s thread
    as the client reads them (stopped at the next chunk if the download is cancelled)."""
    session = await _analysed_session(database, dataset)
    if export_format == "xlsx" and dataset.row_count > EXCEL_MAX_ROWS:
        raise ExportTooLargeError(
            f"{dataset.row_count:,} rows do not fit an Excel sheet ({EXCEL_MAX_ROWS:,} at most): use format=csv."
        )
    assert session.threshold is not None
    table = await dataset_service.load_snapshot(database, dataset)
    top_columns = None
    if session.top_columns_file_id is not None:
        stored = await files.read(database, RESULTS_BUCKET, session.top_columns_file_id)
        top_columns = np.frombuffer(stored, dtype=TOP_COLUMNS_DTYPE)
    scores = await _stored_scores(database, session)
    results = results_export.RowResults(scores, session.threshold, top_columns, session.feature_names)
    write = results_export.csv_blocks if export_format == "csv" else results_export.xlsx_blocks
    blocks = slot.stream(write(table, results, slot.cancelled))
    # An ASCII name keeps the Content-Disposition header valid whatever the upload was called.
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", PurePath(dataset.filename).stem).strip("._") or "dataset"
    return ExportedResults(blocks, f"{stem}_results.{export_format}", _MEDIA_TYPES[export_format])


async def score_histogram(database: Database, dataset: Dataset, bins: int, scale: HistogramScale) -> ScoreHistogram:
    """The histogram of every row's score in the dataset's latest analysis, with the threshold inside its range.

    ``log`` bins need a positive lower edge: scores at or below zero (the detector gives none) are counted in
    the first bin, and without any positive score or threshold the bins are linear.
    """
    session = await _analysed_session(database, dataset)
    assert session.threshold is not None
    scores = await _stored_scores(database, session)
    counts, edges, used_scale = await asyncio.to_thread(_histogram, scores, session.threshold, bins, scale)
    return ScoreHistogram(session, edges.tolist(), counts.tolist(), used_scale)


def _histogram(
    scores: np.ndarray, threshold: float, bins: int, scale: HistogramScale
) -> tuple[np.ndarray, np.ndarray, HistogramScale]:
    low, high = min(float(scores.min()), threshold), max(float(scores.max()), threshold)
    if scale == "log":
        positive = np.append(scores, threshold)
        positive = positive[positive > 0]
        if positive.size:
            low = float(positive.min())
            edges = np.geomspace(low, max(high, low * 1.01), bins + 1)
            counts, _ = np.histogram(np.clip(scores, low, None), bins=edges)
            return counts, edges, "log"
    if high <= low:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, bins + 1)
    counts, _ = np.histogram(scores, bins=edges)
    return counts, edges, "linear"


async def _stored_scores(database: Database, session: AnalysisSession) -> np.ndarray:
    assert session.scores_file_id is not None
    return np.frombuffer(await files.read(database, RESULTS_BUCKET, session.scores_file_id), dtype=SCORES_DTYPE)


async def _analysed_session(database: Database, dataset: Dataset) -> AnalysisSession:
    session = await dataset_service.latest_session(database, dataset)
    if session is None or session.status != SessionStatus.ANALYZED:
        state = session.status.value if session else dataset_service.UPLOADED
        raise AnalysisNotReadyError(
            f"The dataset is not analysed yet (status: {state}): start an analysis with "
            f"POST /api/anomaly/datasets/{dataset.id}/analyze and wait until its status is 'analyzed'."
        )
    return session
