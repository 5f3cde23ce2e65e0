"""Analyses as users see them: starting one (or reusing an equal one), its status, anomalies and results.

The work itself runs in the job workers (``app.jobs``); this module validates, queues and reads.

The queue is bounded and fair: each user has at most ``MAX_ANALYSES_IN_PROGRESS_PER_USER`` analyses queued or
running (past it, 429 with ``Retry-After``); a new request for a dataset cancels that dataset's queued analyses
it supersedes; and claims are ordered by each owner's position in their own queue, so one user's many analyses
never hold back another user's one.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePath
from typing import Any, Literal

import numpy as np

from app.core.config import Settings
from app.core.errors import ExportTooLargeError, TooManyRequestsError
from app.core.states import AnalysisStatus, DatasetStatus, ModelKind
from app.crud import analyses, anomaly_pages, datasets, job_signals, labels
from app.crud.analyses import Analysis
from app.crud.datasets import Dataset
from app.db.collections import Database
from app.services import analysis_results, feedback, models, results_export
from app.services import datasets as dataset_service
from app.services.export_pool import ExportSlot
from app.services.feedback import LabelFilter
from app.services.model_registry import ModelRegistry
from app.utils.drift import DriftReport

# Equal requests racing each other settle within a couple of rounds; more means something is wrong.
QUEUE_ATTEMPTS = 5
# What a user past their limit on analyses in progress is asked to wait (an analysis takes seconds).
QUEUE_RETRY_AFTER_SECONDS = 10
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
    """The analysis that answers a request, and whether it already existed."""

    session_id: str
    reused: bool
    status: AnalysisStatus


@dataclass(frozen=True)
class AnalysisStatusView:
    """Where a dataset's latest analysis is, as users read it."""

    dataset_id: str
    session_id: str | None
    status: DatasetStatus
    progress: int
    anomaly_count: int | None
    row_count: int
    threshold: float | None
    threshold_percentile: float | None
    model: str | None
    model_version: str | None
    model_version_number: int | None
    attempts: int
    timings: dict[str, float]
    error: str | None
    drift: dict[str, Any] | None
    requested_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class AnomalyPage:
    """A page of a dataset's anomalies, highest score first."""

    session_id: str
    total: int
    threshold: float
    offset: int
    limit: int
    items: list[dict[str, Any]]


@dataclass(frozen=True)
class ScoreHistogram:
    """How the scores of all rows of an analysis are distributed: ``len(edges) == len(counts) + 1``."""

    session_id: str
    edges: list[float]
    counts: list[int]
    scale: HistogramScale
    threshold: float
    row_count: int
    anomaly_count: int


@dataclass(frozen=True)
class ExportedResults:
    """The results file, to stream: every uploaded row with ``anomaly_score``, ``is_anomaly``, ``top_feature``."""

    blocks: AsyncIterator[bytes]
    filename: str
    media_type: str


async def request_analysis(
    database: Database,
    registry: ModelRegistry,
    settings: Settings,
    dataset: Dataset,
    *,
    threshold_percentile: float | None,
    model_name: str | None,
    force: bool,
) -> AnalysisTicket:
    """Queue an analysis of ``dataset``, or return the live one with the same model and settings.

    Everything that can be checked without reading the data is checked here, before the request is answered:
    which model fits the dataset's columns, or that the named one does (``ModelRegistry.select``). A percentile
    is re-thresholded against the model's stored training scores, no retraining; the analysis key holds the model
    version and the percentile, so other settings are another analysis. ``force`` always starts a new one.
    """
    own_models = await models.candidates(database, dataset.owner_id)
    selection = registry.select(
        model_name, dataset.columns, user_models=own_models, threshold_percentile=threshold_percentile
    )
    active_key = f"{dataset.id}|{selection.choice.version}|{selection.threshold_percentile!r}"
    ticket: AnalysisTicket | None = None
    # The unique active_key settles races between equal requests: one inserts, the others find and reuse it.
    for _ in range(QUEUE_ATTEMPTS):
        existing = None if force else await analyses.find_live(database, active_key)
        if existing is not None:
            ticket = AnalysisTicket(existing.id, reused=True, status=existing.status)
            break
        if force:
            await analyses.retire(database, active_key)
        created = await _queue_within_limit(
            database, settings, dataset, selection.choice, selection.threshold_percentile, active_key
        )
        if created is not None:
            ticket = AnalysisTicket(created.id, reused=False, status=created.status)
            break
    if ticket is None:
        raise RuntimeError(f"Could not queue an analysis of dataset {dataset.id} after {QUEUE_ATTEMPTS} attempts")
    await datasets.set_latest_session(database, dataset.id, ticket.session_id)
    await analyses.cancel_queued_for_dataset(database, dataset_id=dataset.id, newer_id=ticket.session_id)
    if not ticket.reused:
        await job_signals.send(database, "analysis")
    return ticket


async def _queue_within_limit(
    database: Database,
    settings: Settings,
    dataset: Dataset,
    choice: analyses.ModelChoice,
    threshold_percentile: float,
    active_key: str,
) -> Analysis | None:
    """Insert the analysis unless its owner already has the most in progress allowed.

    Counted again after the insert, so parallel requests can never pass the limit together: one that finds
    itself past it takes its analysis back.
    """
    limit = settings.max_analyses_in_progress_per_user
    in_progress = await analyses.count_in_progress_for_owner(database, dataset.owner_id)
    if in_progress < limit:
        created = await analyses.insert(
            database,
            dataset_id=dataset.id,
            owner_id=dataset.owner_id,
            model=choice,
            threshold_percentile=threshold_percentile,
            active_key=active_key,
            queue_rank=in_progress,
        )
        if created is None or await analyses.count_in_progress_for_owner(database, dataset.owner_id) <= limit:
            return created
        await analyses.delete_queued(database, created.id)
    raise TooManyRequestsError(
        f"You have {limit} analyses queued or running, the most allowed at once: wait for them to finish "
        f"(GET /api/anomaly/datasets/{{id}}/status) and try again.",
        QUEUE_RETRY_AFTER_SECONDS,
    )


async def status(database: Database, dataset: Dataset) -> AnalysisStatusView:
    """The dataset's latest analysis, as its status (``uploaded`` before any)."""
    analysis = await dataset_service.latest_analysis(database, dataset)
    if analysis is None:
        return AnalysisStatusView(
            dataset_id=dataset.id, session_id=None, status=DatasetStatus.UPLOADED, progress=0, anomaly_count=None,
            row_count=dataset.row_count, threshold=None, threshold_percentile=None, model=None, model_version=None,
            model_version_number=None, attempts=0, timings={}, error=None, drift=None, requested_at=None,
            started_at=None, finished_at=None,
        )  # fmt: skip
    fallback = analysis.model.kind == ModelKind.FALLBACK
    return AnalysisStatusView(
        dataset_id=dataset.id,
        session_id=analysis.id,
        status=DatasetStatus.of(analysis.status),
        progress=analysis.progress,
        anomaly_count=analysis.anomaly_count,
        row_count=analysis.row_count if analysis.row_count is not None else dataset.row_count,
        threshold=analysis.threshold,
        threshold_percentile=analysis.threshold_percentile,
        model=analysis.model.name,
        model_version=None if fallback else analysis.model.version,
        model_version_number=analysis.model.number,
        attempts=analysis.attempts,
        timings=analysis.timings,
        error=analysis.error,
        drift=analysis.drift,
        requested_at=analysis.created_at,
        started_at=analysis.started_at,
        finished_at=analysis.finished_at,
    )


async def anomalies(
    database: Database, dataset: Dataset, *, limit: int, offset: int, label_filter: LabelFilter | None = None
) -> AnomalyPage:
    """A page of the anomalies found by the dataset's latest analysis, each with its row's label; only those whose
    rows are ``unlabelled``, or labelled ``anomaly`` or ``normal``, when ``label_filter`` says so."""
    analysis = await dataset_service.analysed(database, dataset)
    if label_filter is None:
        total = analysis.anomaly_count or 0
        items = await anomaly_pages.read_range(database, analysis.id, analysis.results_attempt, offset, limit)
    else:
        total, items = await feedback.labelled_page(
            database, analysis, label_filter=label_filter, offset=offset, limit=limit
        )
    row_labels = await labels.for_rows(database, dataset.id, [item["row"] for item in items])
    return AnomalyPage(
        session_id=analysis.id,
        total=total,
        threshold=analysis.threshold or 0.0,
        offset=offset,
        limit=limit,
        items=feedback.with_labels(items, row_labels),
    )


async def export_results(
    database: Database, dataset: Dataset, export_format: ExportFormat, slot: ExportSlot
) -> ExportedResults:
    """The uploaded rows with their scores and labels, as CSV or an Excel workbook, made in ``slot``'s thread
    as the client reads them (stopped at the next chunk if the download is cancelled)."""
    analysis = await dataset_service.analysed(database, dataset)
    if export_format == "xlsx" and dataset.row_count > EXCEL_MAX_ROWS:
        raise ExportTooLargeError(
            f"{dataset.row_count:,} rows do not fit an Excel sheet ({EXCEL_MAX_ROWS:,} at most): use format=csv."
        )
    assert analysis.threshold is not None
    table = await dataset_service.load_snapshot(database, dataset)
    top_columns = await analysis_results.read_top_columns(database, analysis)
    scores = await analysis_results.read_scores(database, analysis)
    row_labels = {label.row: label.label.value for label in await labels.for_dataset(database, dataset.id)}
    results = results_export.RowResults(scores, analysis.threshold, top_columns, analysis.feature_names, row_labels)
    write = results_export.csv_blocks if export_format == "csv" else results_export.xlsx_blocks
    blocks = slot.stream(write(table, results, slot.cancelled))
    # An ASCII name keeps the Content-Disposition header valid whatever the upload was called.
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", PurePath(dataset.filename).stem).strip("._") or "dataset"
    return ExportedResults(blocks, f"{stem}_results.{export_format}", _MEDIA_TYPES[export_format])


async def score_histogram(database: Database, dataset: Dataset, bins: int, scale: HistogramScale) -> ScoreHistogram:
    """The histogram of every row's score in the dataset's latest analysis, with the threshold inside its range."""
    analysis = await dataset_service.analysed(database, dataset)
    assert analysis.threshold is not None
    scores = await analysis_results.read_scores(database, analysis)
    counts, edges, used_scale = await asyncio.to_thread(histogram, scores, analysis.threshold, bins, scale)
    return ScoreHistogram(
        session_id=analysis.id,
        edges=edges.tolist(),
        counts=counts.tolist(),
        scale=used_scale,
        threshold=analysis.threshold,
        row_count=int(counts.sum()),
        anomaly_count=analysis.anomaly_count or 0,
    )


@dataclass(frozen=True)
class DriftView:
    """A page of the drift report of the dataset's latest analysis: the shifted columns first."""

    session_id: str
    available: bool
    verdict: str
    reason: str | None
    advice: str | None
    summary: str
    rows: int
    reference_rows: int
    flagged_columns: list[str]
    total_columns: int
    offset: int
    limit: int
    columns: list[dict[str, Any]]


async def drift_report(database: Database, dataset: Dataset, *, limit: int, offset: int) -> DriftView:
    """How the analysed rows compare with the model's training rows, column by column (shifted ones first)."""
    analysis = await dataset_service.analysed(database, dataset)
    report = await analysis_results.read_drift(database, analysis)
    if report is None:
        report = DriftReport.unavailable(
            "this analysis was made before drift reports were computed: analyze the dataset again (force) to get one"
        ).to_dict()
    columns = sorted(report["columns"], key=lambda column: (not column["flagged"], -column["psi"]))
    return DriftView(
        session_id=analysis.id,
        available=report["available"],
        verdict=report["verdict"],
        reason=report["reason"],
        advice=report["advice"],
        summary=report["summary"],
        rows=report["rows"],
        reference_rows=report["reference_rows"],
        flagged_columns=report["flagged_columns"],
        total_columns=len(columns),
        offset=offset,
        limit=limit,
        columns=columns[offset : offset + limit],
    )


def histogram(
    scores: np.ndarray, threshold: float, bins: int, scale: HistogramScale
) -> tuple[np.ndarray, np.ndarray, HistogramScale]:
    """Bin ``scores`` into ``bins`` bins whose range includes ``threshold``: counts, edges and the scale used.

    ``log`` bins need a positive lower edge: scores at or below zero (the detector gives none) are counted in the
    first bin, and without any positive score or threshold the bins are linear.
    """
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
