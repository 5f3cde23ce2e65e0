"""Users' own models and their trainings."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.core.states import TrainingStatus
from app.schemas.anomaly import ModelOut

# A model's name: it becomes a folder name when downloaded (Model/NAME), so no path characters and no leading dot.
MODEL_NAME_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$"
MAX_EXCLUDED_COLUMNS = 10_000


class TrainModelRequest(BaseModel):
    """Train a model of your own from one of your datasets (its rows are taken as normal)."""

    model_config = ConfigDict(extra="forbid")

    dataset_id: str = Field(description="One of your datasets (24-hex id from its upload).")
    name: str = Field(
        pattern=MODEL_NAME_PATTERN,
        description="1-64 characters from A-Z, a-z, 0-9, '_', '.', '-' (not starting with '.'). Training again "
        "under an existing name makes a new version.",
    )
    epochs: int = Field(default=50, ge=1, le=200, description="Maximum epochs (early stopping may end sooner).")
    encoding_dim: int = Field(default=8, ge=1, le=64, description="Width of the autoencoder's bottleneck.")
    threshold_percentile: float = Field(
        default=95.0, gt=0, lt=100, description="Rows scoring above this percentile of held-out rows are anomalies."
    )
    exclude_columns: list[str] = Field(
        default_factory=list, max_length=MAX_EXCLUDED_COLUMNS, description="Columns of the dataset to leave out."
    )
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1, description="Makes the training reproducible.")


class TrainingOut(BaseModel):
    """A training of one of your models."""

    training_id: str
    name: str
    dataset_id: str
    status: TrainingStatus
    progress: dict[str, Any] = Field(
        description="percent, and once epochs run: epoch, epochs, loss and val_loss (one per epoch so far)."
    )
    parameters: dict[str, Any]
    exclude_columns: list[str]
    attempts: int
    timings: dict[str, float] = Field(description="Seconds queued, loading, training, storing, in total.")
    result: dict[str, Any] | None = Field(
        description="Once trained: model, version, model_version, threshold, features, dropped_columns, rows_used, "
        "validation (the share of training rows flagged, with the seed's 1-10% verdict)."
    )
    error: str | None
    requested_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class ActivateRequest(BaseModel):
    """Which version analyses of the model use."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, description="A version number from GET /api/anomaly/models/{name}.")


class ModelVersionOut(BaseModel):
    """One version of your model, with where it came from."""

    version: int
    content_hash: str
    active: bool
    created_at: datetime
    features: list[str]
    threshold: float
    threshold_percentile: float
    dropped_columns: dict[str, str]
    lineage: dict[str, Any] = Field(
        description="dataset_id, filename, sha256, rows_used, trained_by, trained_at, parameters, validation, timings."
    )


class ModelDetailOut(BaseModel):
    """A model and its versions."""

    name: str
    kind: Literal["deployment", "user"]
    default: bool
    active_version: int | None
    versions: list[ModelVersionOut] = Field(description="Your model's versions, oldest first.")
    deployment: ModelOut | None = Field(description="For a deployment model: its one version.")
