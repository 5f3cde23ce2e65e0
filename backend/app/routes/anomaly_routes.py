"""Datasets and their anomaly analyses: upload, analyze, poll the status, read the anomalies and results.

An analysis is queued here (the model chosen from ``app.services.model_registry``) and run by a job worker
(``python -m app.worker``), so analyze answers 202 at once and status stays fast. Routes call services and map
the services' views to the response bodies (``app.schemas``), nothing more.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Body, Path, Query, Response, status
from fastapi.responses import StreamingResponse

from app.api import errors
from app.api.deps import CurrentUser, DatabaseDep, ExportSlotDep, ModelsDep, OwnedDataset, ParsersDep, SettingsDep
from app.api.upload_body import OPENAPI_REQUEST_BODY, ReceivedUpload
from app.core.errors import (
    AmbiguousModelError,
    AnalysisNotReadyError,
    AuthenticationError,
    ExportTooLargeError,
    LabelRequestError,
    ModelUnavailableError,
    NotFoundError,
    QuotaExceededError,
    TooManyExportsError,
    TooManyRequestsError,
    UnknownModelError,
    UploadNotStoredError,
    UploadTooLargeError,
)
from app.crud.labels import Label
from app.schemas.anomaly import (
    AnalyzeRequest,
    AnalyzeResponse,
    AnomalyPageOut,
    DatasetOut,
    DriftOut,
    FeedbackOut,
    LabelOut,
    LabelRequest,
    ScoreHistogramOut,
    StatusOut,
)
from app.services import analysis, datasets, feedback
from app.services.analysis import ExportFormat, HistogramScale
from app.services.datasets import DatasetView
from app.services.feedback import LabelFilter
from app.utils.anomaly_detector import ColumnMismatchError
from app.utils.table_reader import TableReadError, UnsupportedFileTypeError

# Offsets past this are refused (422) rather than passed to the database, whose integers are 64-bit.
MAX_OFFSET = 1_000_000_000

router = APIRouter(prefix="/api/anomaly", tags=["anomaly"], responses=errors.responses(AuthenticationError))


@router.post(
    "/datasets/upload",
    status_code=status.HTTP_201_CREATED,
    responses=errors.responses(
        TableReadError,
        UploadTooLargeError,
        UnsupportedFileTypeError,
        QuotaExceededError,
        TooManyRequestsError,
        UploadNotStoredError,
    ),
    openapi_extra=OPENAPI_REQUEST_BODY,
)
async def upload_dataset(
    received: ReceivedUpload, user: CurrentUser, database: DatabaseDep, settings: SettingsDep, parsers: ParsersDep
) -> DatasetOut:
    """Store an uploaded table (multipart field ``file``; in GridFS, before answering) and describe it, with
    ``notes`` on what was skipped to read it. The body is read only once the token is checked."""
    return _dataset_out(await datasets.upload(database, settings, parsers, user, received))


@router.get("/datasets")
async def list_datasets(
    user: CurrentUser,
    database: DatabaseDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> list[DatasetOut]:
    """The caller's datasets, newest first."""
    return [_dataset_out(view) for view in await datasets.list_owned(database, user, limit, offset)]


@router.get("/datasets/{dataset_id}", responses=errors.responses(NotFoundError))
async def get_dataset(dataset: OwnedDataset, database: DatabaseDep) -> DatasetOut:
    """One of the caller's datasets."""
    return _dataset_out(await datasets.view(database, dataset))


@router.delete(
    "/datasets/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT, responses=errors.responses(NotFoundError)
)
async def delete_dataset(dataset: OwnedDataset, database: DatabaseDep) -> Response:
    """Delete a dataset with its file and its results."""
    await datasets.delete(database, dataset)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/datasets/{dataset_id}/analyze",
    status_code=status.HTTP_202_ACCEPTED,
    responses=errors.responses(
        NotFoundError,
        ColumnMismatchError,
        UnknownModelError,
        AmbiguousModelError,
        ModelUnavailableError,
        TooManyRequestsError,
    ),
)
async def analyze_dataset(
    dataset: OwnedDataset,
    database: DatabaseDep,
    registry: ModelsDep,
    settings: SettingsDep,
    body: Annotated[AnalyzeRequest | None, Body()] = None,
) -> AnalyzeResponse:
    """Start an analysis in the background (or reuse an equal one); poll ``/status`` for its progress.

    Without ``model``, the default model is used if the dataset has its columns, else the one model that fits.
    """
    options = body or AnalyzeRequest()
    ticket = await analysis.request_analysis(
        database,
        registry,
        settings,
        dataset,
        threshold_percentile=options.threshold_percentile,
        model_name=options.model,
        force=options.force,
    )
    return AnalyzeResponse.model_validate(ticket, from_attributes=True)


@router.get("/datasets/{dataset_id}/status", responses=errors.responses(NotFoundError))
async def dataset_status(dataset: OwnedDataset, database: DatabaseDep) -> StatusOut:
    """The status of the dataset's latest analysis: progress, then anomaly count, threshold and timings."""
    return StatusOut.model_validate(await analysis.status(database, dataset), from_attributes=True)


@router.get("/datasets/{dataset_id}/anomalies", responses=errors.responses(NotFoundError, AnalysisNotReadyError))
async def list_anomalies(
    dataset: OwnedDataset,
    database: DatabaseDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    label: Annotated[LabelFilter | None, Query(description="Only anomalies whose rows are labelled so.")] = None,
) -> AnomalyPageOut:
    """The anomalous rows, highest score first, with their values, the columns that explain them and their labels."""
    page = await analysis.anomalies(database, dataset, limit=limit, offset=offset, label_filter=label)
    return AnomalyPageOut.model_validate(page, from_attributes=True)


@router.put(
    "/datasets/{dataset_id}/rows/{row}/label",
    responses=errors.responses(NotFoundError, LabelRequestError, QuotaExceededError),
)
async def label_row(
    dataset: OwnedDataset,
    row: Annotated[int, Path(ge=0, le=MAX_OFFSET, description="The row's number, as the anomalies listing gives it.")],
    body: LabelRequest,
    database: DatabaseDep,
    settings: SettingsDep,
) -> LabelOut:
    """Say what a row is: a real anomaly, or expected (normal); null clears it. Labels survive re-analysis."""
    label = Label(body.label) if body.label else None
    view = await feedback.set_label(database, settings, dataset, row=row, label=label, note=body.note)
    return LabelOut.model_validate(view, from_attributes=True)


@router.get("/datasets/{dataset_id}/feedback", responses=errors.responses(NotFoundError, AnalysisNotReadyError))
async def dataset_feedback(dataset: OwnedDataset, database: DatabaseDep) -> FeedbackOut:
    """The labels' counts, the precision of the flagged rows among them and the threshold percentile they suggest."""
    return FeedbackOut.model_validate(await feedback.summary(database, dataset), from_attributes=True)


@router.get("/datasets/{dataset_id}/scores/histogram", responses=errors.responses(NotFoundError, AnalysisNotReadyError))
async def score_histogram(
    dataset: OwnedDataset,
    database: DatabaseDep,
    bins: Annotated[int, Query(ge=5, le=200, description="How many bins.")] = 40,
    scale: Annotated[HistogramScale, Query(description="Spacing of the bin edges.")] = "linear",
) -> ScoreHistogramOut:
    """How the scores of all rows are distributed, with the threshold: bin edges and a row count per bin."""
    histogram = await analysis.score_histogram(database, dataset, bins, scale)
    return ScoreHistogramOut.model_validate(histogram, from_attributes=True)


@router.get("/datasets/{dataset_id}/drift", responses=errors.responses(NotFoundError, AnalysisNotReadyError))
async def dataset_drift(
    dataset: OwnedDataset,
    database: DatabaseDep,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> DriftOut:
    """Whether the rows still fit the model's training data: the verdict, and per column the PSI, the share of
    values never seen in training and the change in missing rate, with bars for a chart (shifted columns first)."""
    report = await analysis.drift_report(database, dataset, limit=limit, offset=offset)
    return DriftOut.model_validate(report, from_attributes=True)


@router.get(
    "/datasets/{dataset_id}/results",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The results file",
            "content": {
                "text/csv": {},
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {},
            },
        },
        **errors.responses(NotFoundError, AnalysisNotReadyError, ExportTooLargeError, TooManyExportsError),
    },
)
async def download_results(
    dataset: OwnedDataset,
    database: DatabaseDep,
    slot: ExportSlotDep,
    export_format: Annotated[ExportFormat, Query(alias="format")] = "csv",
) -> Response:
    """Every uploaded row in its order with ``anomaly_score``, ``is_anomaly`` and ``top_feature`` added, streamed.

    Text cells a spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@``...) are prefixed with ``'``, control
    characters removed. A server prepares MAX_CONCURRENT_EXPORTS downloads at once; past that, 429 with Retry-After.
    """
    results = await analysis.export_results(database, dataset, export_format, slot)
    return StreamingResponse(
        results.blocks,
        media_type=results.media_type,
        headers={"Content-Disposition": f'attachment; filename="{results.filename}"'},
    )


def _dataset_out(view: DatasetView) -> DatasetOut:
    return DatasetOut.model_validate({**asdict(view.dataset), "status": view.status})
