"""Datasets, analyses, anomalies and models."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.core.states import AnalysisStatus, DatasetStatus


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
    status: DatasetStatus = Field(description="The status of the dataset's latest analysis.")
    notes: list[str] = Field(
        default_factory=list,
        description="What the reader did to read the file: title lines skipped, lines decoded as Windows-1252.",
        examples=[["skipped 3 title lines above the header", "12 lines decoded as Windows-1252 (Latin-1): not UTF-8"]],
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
    status: AnalysisStatus


class StatusOut(BaseModel):
    """Where a dataset's latest analysis is."""

    model_config = ConfigDict(protected_namespaces=())

    dataset_id: str
    session_id: str | None
    status: DatasetStatus
    progress: int = Field(ge=0, le=100)
    anomaly_count: int | None
    row_count: int
    threshold: float | None
    threshold_percentile: float | None
    model: str | None = Field(description="The model's name; null when the analysis trained on the dataset.")
    model_version: str | None = Field(description="The model version's content hash.")
    model_version_number: int | None = Field(description="For a user's own model: the version number (1, 2, ...).")
    attempts: int = Field(description="How many times a worker took the analysis up.")
    timings: dict[str, float] = Field(description="Seconds spent queued, loading, scoring, storing, in total.")
    error: str | None
    drift: dict[str, Any] | None = Field(
        description="Once analysed: whether the data still fits the model's training data (verdict, shifted columns)."
    )
    requested_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None


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
    label: Literal["anomaly", "normal"] | None = Field(
        default=None, description="What an analyst said of the row: a real anomaly, or expected (normal)."
    )
    note: str | None = Field(default=None, description="The analyst's note on the row.")


class AnomalyPageOut(BaseModel):
    """A page of anomalies, highest score first."""

    total: int
    limit: int
    offset: int
    threshold: float
    session_id: str
    items: list[AnomalyOut]


class ScoreHistogramOut(BaseModel):
    """The scores of all rows of the latest analysis, binned; the threshold lies within the bins' range."""

    edges: list[float] = Field(description="Bin edges, ascending: one more than counts.")
    counts: list[int] = Field(description="Rows per bin; the last bin includes its upper edge.")
    scale: str = Field(description="linear or log: how the edges are spaced.")
    threshold: float = Field(description="Rows scoring above it are anomalies.")
    row_count: int
    anomaly_count: int
    session_id: str


class ModelOut(BaseModel):
    """A model analyses can use: the deployment's (read-only, shared) or one of the caller's own."""

    name: str
    kind: Literal["deployment", "user"] = Field(description="deployment: MODELS_DIR, shared; user: the caller's own.")
    default: bool
    features: list[str]
    threshold: float
    threshold_percentile: float
    trained_at: str | None
    version: str = Field(description="Content hash of the (active) version's files.")
    training_rows: int | None
    dropped_columns: dict[str, str]
    active_version: int | None = Field(description="For the caller's own models: the version analyses use.")
    versions: list[int] = Field(description="For the caller's own models: every version number.")


class LabelRequest(BaseModel):
    """What an analyst says of a row: a real ``anomaly``, ``normal`` (expected), or ``null`` to clear the label."""

    model_config = ConfigDict(extra="forbid")

    label: Literal["anomaly", "normal"] | None
    note: str | None = Field(default=None, max_length=1000)


class LabelOut(BaseModel):
    """A row's label."""

    row: int
    label: Literal["anomaly", "normal"] | None
    note: str | None
    updated_at: datetime | None


class SuggestionOut(BaseModel):
    """The threshold percentile the labels suggest, and what an analysis at it would flag."""

    threshold_percentile: float
    threshold: float
    labelled_anomalies_flagged: int
    labelled_normals_flagged: int
    rows_flagged: int
    misclassified_now: int = Field(description="Labelled rows the current threshold gets wrong.")
    misclassified_then: int = Field(description="Labelled rows the suggested threshold gets wrong.")


class FeedbackOut(BaseModel):
    """What analysts' labels say of the latest analysis."""

    session_id: str
    threshold: float
    threshold_percentile: float
    labelled_anomalies: int
    labelled_normals: int
    flagged_anomalies: int = Field(description="Rows labelled anomaly that the analysis flagged.")
    flagged_normals: int = Field(description="Rows labelled normal that the analysis flagged.")
    precision: float | None = Field(description="Of the flagged rows that are labelled, the share labelled anomaly.")
    suggestion: SuggestionOut | None
    advice: str


class DriftBinOut(BaseModel):
    """One bar of a column's drift chart: a bin's share of the training rows and of the analysed rows."""

    histogram: str = Field(description="values, hour of day or weekday (a date column has both), or missing.")
    label: str
    reference_share: float
    observed_share: float


class ColumnDriftOut(BaseModel):
    """How one column of the analysed rows compares with the training rows."""

    name: str
    kind: str = Field(description="numeric, categorical or datetime.")
    psi: float = Field(description="Population stability index (0.1: moderate shift, 0.25: major).")
    unseen_share: float = Field(description="Share of rows with a value no training row had.")
    missing_rate: float
    reference_missing_rate: float
    missing_rate_change: float
    level: Literal["none", "moderate", "major"]
    flagged: bool = Field(description="Shifted: past the PSI cut-off and unlikely to be chance at this many rows.")
    bins: list[DriftBinOut]


class DriftOut(BaseModel):
    """Whether the analysed data still fits the model's training data: a verdict and every column's figures."""

    session_id: str
    available: bool
    verdict: Literal["fits", "shifted", "unavailable"]
    reason: str | None = Field(description="Why drift is unavailable (a model trained before drift statistics).")
    advice: str | None
    summary: str
    rows: int
    reference_rows: int
    flagged_columns: list[str]
    total_columns: int
    offset: int
    limit: int
    columns: list[ColumnDriftOut] = Field(description="The shifted columns first, then by PSI.")
