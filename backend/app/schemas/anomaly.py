"""Datasets, analyses, anomalies and models."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.crud.sessions import AnalysisSession
from app.services.analysis import AnalysisStatus, AnalysisTicket, AnomalyPage, ScoreHistogram
from app.services.datasets import UPLOADED, DatasetView
from app.services.models import LoadedModel


class DatasetOut(BaseModel):
    """An uploaded dataset and the status of its latest analysis."""

    id: str = Field(description="24-hex ObjectId.", examples=["6911fbc59f5fd0ac0f1fe677"])
    filename: str
    content_type: str | None
    size: int = Field(description="Bytes.")
    sha256: str
    row_count: int
    column_count: int
    columns: list[str]
    uploaded_at: datetime
    status: str = Field(description="uploaded, queued, analyzing, analyzed or failed.")
    notes: list[str] = Field(
        default_factory=list,
        description="What the reader did to read the file: title lines skipped, lines decoded as Windows-1252.",
        examples=[["skipped 3 title lines above the header", "12 lines decoded as Windows-1252 (Latin-1): not UTF-8"]],
    )

    @classmethod
    def from_view(cls, view: DatasetView) -> DatasetOut:
        """The API's view of a dataset."""
        dataset = view.dataset
        return cls(
            id=dataset.id,
            filename=dataset.filename,
            content_type=dataset.content_type,
            size=dataset.size,
            sha256=dataset.sha256,
            row_count=dataset.row_count,
            column_count=dataset.column_count,
            columns=dataset.columns,
            uploaded_at=dataset.uploaded_at,
            status=view.status,
            notes=dataset.notes,
        )


class AnalyzeRequest(BaseModel):
    """Optional settings of an analysis; the defaults are the model's."""

    model_config = ConfigDict(protected_namespaces=())

    threshold_percentile: float | None = Field(
        default=None, gt=0, lt=100, description="Percentile of normal training scores used as the threshold."
    )
    model: str | None = Field(default=None, description="A model name from GET /api/anomaly/models.")
    force: bool = Field(default=False, description="Start a new analysis even if an equal one exists.")


class AnalyzeResponse(BaseModel):
    """The session that will (or did) analyse the dataset."""

    session_id: str
    reused: bool = Field(description="True when an equal analysis was already done or under way.")
    status: str

    @classmethod
    def from_ticket(cls, ticket: AnalysisTicket) -> AnalyzeResponse:
        """The answer to an analysis request."""
        return cls(session_id=ticket.session.id, reused=ticket.reused, status=ticket.session.status.value)


class StatusOut(BaseModel):
    """Where a dataset's latest analysis is."""

    model_config = ConfigDict(protected_namespaces=())

    dataset_id: str
    session_id: str | None
    status: str = Field(description="uploaded, queued, analyzing, analyzed or failed.")
    progress: int = Field(ge=0, le=100)
    anomaly_count: int | None
    row_count: int
    threshold: float | None
    threshold_percentile: float | None
    model: str | None = Field(description="The model's name; null when the analysis trained on the dataset.")
    model_version: str | None
    attempts: int = Field(description="How many times a server process took the analysis up.")
    timings: dict[str, float] = Field(description="Seconds spent queued, loading, scoring, storing, in total.")
    error: str | None
    requested_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_status(cls, status: AnalysisStatus) -> StatusOut:
        """The API's view of an analysis status."""
        session: AnalysisSession | None = status.session
        if session is None:
            return cls(
                dataset_id=status.dataset.id, session_id=None, status=UPLOADED, progress=0, anomaly_count=None,
                row_count=status.dataset.row_count, threshold=None, threshold_percentile=None, model=None,
                model_version=None, attempts=0, timings={}, error=None, requested_at=None, started_at=None,
                finished_at=None,
            )  # fmt: skip
        return cls(
            dataset_id=status.dataset.id,
            session_id=session.id,
            status=session.status.value,
            progress=session.progress,
            anomaly_count=session.anomaly_count,
            row_count=session.row_count if session.row_count is not None else status.dataset.row_count,
            threshold=session.threshold,
            threshold_percentile=session.threshold_percentile,
            model=session.model,
            model_version=session.model_version if not session.fallback_train else None,
            attempts=session.attempts,
            timings=session.timings,
            error=session.error,
            requested_at=session.created_at,
            started_at=session.started_at,
            finished_at=session.finished_at,
        )


class TopFeature(BaseModel):
    """A column that explains an anomaly, with its share of the row's reconstruction error."""

    column: str
    share: float = Field(ge=0, le=1, description="The column's share of the row's reconstruction error.")
    expected: float | str | None = Field(
        default=None,
        description="The value the model expected in this column (a number, or the likeliest text); null for "
        "dates and when no single value fits.",
    )


class AnomalyOut(BaseModel):
    """One anomalous row."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "row": 17,
                "score": 41.7,
                "values": {"id": 18, "timestamp": "2025-03-04T13:00:00", "region": "north", "value3": 5512.0},
                "top_features": [
                    {"column": "value3", "share": 0.93, "expected": 118.4},
                    {"column": "value2", "share": 0.02, "expected": 52.1},
                ],
            }
        }
    )

    row: int = Field(description="0-based data row of the uploaded file.")
    score: float = Field(description="Anomaly score; higher is more anomalous.")
    values: dict[str, Any] = Field(
        description="The row as uploaded: numbers, text, dates as ISO 8601 text, missing cells as null."
    )
    top_features: list[TopFeature] = Field(description="The columns that contributed most, largest share first.")


class AnomalyPageOut(BaseModel):
    """A page of anomalies, highest score first."""

    total: int
    limit: int
    offset: int
    threshold: float
    session_id: str
    items: list[AnomalyOut]

    @classmethod
    def from_page(cls, page: AnomalyPage) -> AnomalyPageOut:
        """The API's view of a page of anomalies."""
        return cls(
            total=page.session.anomaly_count or 0,
            limit=page.limit,
            offset=page.offset,
            threshold=page.session.threshold or 0.0,
            session_id=page.session.id,
            items=[AnomalyOut.model_validate(item) for item in page.items],
        )


class ScoreHistogramOut(BaseModel):
    """The scores of all rows of the latest analysis, binned; the threshold lies within the bins' range."""

    edges: list[float] = Field(description="Bin edges, ascending: one more than counts.")
    counts: list[int] = Field(description="Rows per bin; the last bin includes its upper edge.")
    scale: str = Field(description="linear or log: how the edges are spaced.")
    threshold: float = Field(description="Rows scoring above it are anomalies.")
    row_count: int
    anomaly_count: int
    session_id: str

    @classmethod
    def from_histogram(cls, histogram: ScoreHistogram) -> ScoreHistogramOut:
        """The API's view of a score histogram."""
        session = histogram.session
        return cls(
            edges=histogram.edges,
            counts=histogram.counts,
            scale=histogram.scale,
            threshold=session.threshold or 0.0,
            row_count=sum(histogram.counts),
            anomaly_count=session.anomaly_count or 0,
            session_id=session.id,
        )


class ModelOut(BaseModel):
    """A loaded model."""

    name: str
    default: bool
    features: list[str]
    threshold: float
    threshold_percentile: float
    trained_at: str | None
    version: str
    training_rows: int | None
    dropped_columns: dict[str, str]

    @classmethod
    def from_model(cls, model: LoadedModel) -> ModelOut:
        """The API's view of a loaded model."""
        info = model.info
        return cls(
            name=model.name,
            default=model.is_default,
            features=list(info["feature_names"]),
            threshold=info["threshold"],
            threshold_percentile=info["threshold_percentile"],
            trained_at=info.get("trained_at"),
            version=model.version,
            training_rows=info.get("training_rows"),
            dropped_columns=dict(info.get("dropped_columns") or {}),
        )
