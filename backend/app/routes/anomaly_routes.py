"""Datasets and their anomaly analyses: upload, analyze, poll the status, read the anomalies and results.

The detector is loaded once at startup (``app.services.models``); an analysis is queued here and run in the
background by ``app.services.analysis_runner``, so analyze answers 202 at once and status stays fast.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, File, Query, Response, UploadFile, status
from fastapi.responses import StreamingResponse

from app.api import errors
from app.api.deps import CurrentUser, DatabaseDep, ExportSlotDep, ModelsDep, OwnedDataset, RunnerDep, SettingsDep
from app.core.errors import (
    AmbiguousModelError,
    AnalysisNotReadyError,
    AuthenticationError,
    ExportTooLargeError,
    ModelUnavailableError,
    NotFoundError,
    TooManyExportsError,
    UnknownModelError,
    UploadNotStoredError,
    UploadTooLargeError,
)
from app.schemas.anomaly import (
    AnalyzeRequest,
    AnalyzeResponse,
    AnomalyPageOut,
    DatasetOut,
    ModelOut,
    ScoreHistogramOut,
    StatusOut,
)
from app.services import analysis, datasets
from app.services.analysis import ExportFormat, HistogramScale
from app.utils.anomaly_detector import ColumnMismatchError
from app.utils.table_reader import TableReadError, UnsupportedFileTypeError

# Offsets past this are refused (422) rather than passed to the database, whose integers are 64-bit.
MAX_OFFSET = 1_000_000_000

router = APIRouter(prefix="/api/anomaly", tags=["anomaly"], responses=errors.responses(AuthenticationError))


@router.post(
    "/datasets/upload",
    status_code=status.HTTP_201_CREATED,
    responses=errors.responses(TableReadError, UploadTooLargeError, UnsupportedFileTypeError, UploadNotStoredError),
)
async def upload_dataset(
    file: Annotated[UploadFile, File(description="A .csv, .xlsx or .xls table with a header row.")],
    user: CurrentUser,
    database: DatabaseDep,
    settings: SettingsDep,
) -> DatasetOut:
    """Store an uploaded table (in GridFS, before answering) and describe it."""
    view = await datasets.upload(database, settings, user, file.filename, file.content_type, file.size, file.file)
    return DatasetOut.from_view(view)


@router.get("/datasets")
async def list_datasets(
    user: CurrentUser,
    database: DatabaseDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> list[DatasetOut]:
    """The caller's datasets, newest first."""
    return [DatasetOut.from_view(view) for view in await datasets.list_owned(database, user, limit, offset)]


@router.get("/datasets/{dataset_id}", responses=errors.responses(NotFoundError))
async def get_dataset(dataset: OwnedDataset, database: DatabaseDep) -> DatasetOut:
    """One of the caller's datasets."""
    return DatasetOut.from_view(await datasets.view(database, dataset))


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
        NotFoundError, ColumnMismatchError, UnknownModelError, AmbiguousModelError, ModelUnavailableError
    ),
)
async def analyze_dataset(
    dataset: OwnedDataset,
    database: DatabaseDep,
    models: ModelsDep,
    runner: RunnerDep,
    body: Annotated[AnalyzeRequest | None, Body()] = None,
) -> AnalyzeResponse:
    """Start an analysis in the background (or reuse an equal one); poll ``/status`` for its progress.

    Without ``model``, the default model is used if the dataset has its columns, else the one model that fits.
    """
    options = body or AnalyzeRequest()
    ticket = await analysis.request_analysis(
        database,
        models,
        runner,
        dataset,
        threshold_percentile=options.threshold_percentile,
        model_name=options.model,
        force=options.force,
    )
    return AnalyzeResponse.from_ticket(ticket)


@router.get("/datasets/{dataset_id}/status", responses=errors.responses(NotFoundError))
async def dataset_status(dataset: OwnedDataset, database: DatabaseDep) -> StatusOut:
    """The status of the dataset's latest analysis: progress, then anomaly count, threshold and timings."""
    return StatusOut.from_status(await analysis.status(database, dataset))


@router.get("/datasets/{dataset_id}/anomalies", responses=errors.responses(NotFoundError, AnalysisNotReadyError))
async def list_anomalies(
    dataset: OwnedDataset,
    database: DatabaseDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> AnomalyPageOut:
    """The anomalous rows, highest score first, with their values and the columns that explain them."""
    return AnomalyPageOut.from_page(await analysis.anomalies(database, dataset, limit, offset))


@router.get("/datasets/{dataset_id}/scores/histogram", responses=errors.responses(NotFoundError, AnalysisNotReadyError))
async def score_histogram(
    dataset: OwnedDataset,
    database: DatabaseDep,
    bins: Annotated[int, Query(ge=5, le=200, description="How many bins.")] = 40,
    scale: Annotated[HistogramScale, Query(description="Spacing of the bin edges.")] = "linear",
) -> ScoreHistogramOut:
    """How the scores of all rows are distributed, with the threshold: bin edges and a row count per bin."""
    return ScoreHistogramOut.from_histogram(await analysis.score_histogram(database, dataset, bins, scale))


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


@router.get("/models")
async def list_models(user: CurrentUser, models: ModelsDep) -> list[ModelOut]:
    """The loaded models: name, features, threshold, training date and version (a switched model shows its new
    version within a few seconds, without a restart)."""
    return [ModelOut.from_model(model) for model in models.models]
