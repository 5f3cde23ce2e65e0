"""Trainings of users' own models from their datasets, as users start, follow and cancel them.

A training is a durable job (``crud.trainings``) run by a job worker (``app.jobs.training_job``); this module
checks a request against everything the dataset's document already says (its size, its columns, the caller's
limits), queues it and reports on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.core.config import Settings
from app.core.errors import (
    NotFoundError,
    QuotaExceededError,
    TooManyRequestsError,
    TrainingConflictError,
    TrainingRequestError,
)
from app.core.states import TrainingStatus
from app.crud import job_signals, trainings, user_models
from app.crud.trainings import Training
from app.crud.users import User
from app.db.collections import Database
from app.services import datasets as dataset_service
from app.services.model_registry import ModelRegistry
from app.utils.anomaly_detector import MIN_TRAINING_ROWS
from app.utils.training import TrainingParameters, too_few_rows_message

# What a user past their limit on trainings in progress is asked to wait (a training takes a minute or so).
TRAINING_RETRY_AFTER_SECONDS = 60
CANCELLED_BY_OWNER = "Cancelled by its owner: nothing of it was kept."


@dataclass(frozen=True)
class TrainingRequest:
    """What a user asks a training for (already checked against its bounds by the request body)."""

    dataset_id: str
    name: str
    epochs: int
    encoding_dim: int
    threshold_percentile: float
    exclude_columns: list[str]
    seed: int | None


@dataclass(frozen=True)
class TrainingView:
    """A training as users follow it."""

    training_id: str
    name: str
    dataset_id: str
    status: TrainingStatus
    progress: dict[str, Any]
    parameters: dict[str, Any]
    exclude_columns: list[str]
    attempts: int
    timings: dict[str, float]
    result: dict[str, Any] | None
    error: str | None
    requested_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


async def request_training(
    database: Database, registry: ModelRegistry, settings: Settings, owner: User, request: TrainingRequest
) -> TrainingView:
    """Queue a training of ``request.name`` from the dataset's rows, once everything that can be checked is."""
    dataset = await dataset_service.owned(database, owner, request.dataset_id)
    if request.name in registry.names():
        raise TrainingRequestError(
            f"{request.name!r} is the name of one of the deployment's models: choose another name for your model."
        )
    unknown = [column for column in request.exclude_columns if column not in dataset.columns]
    if unknown:
        raise TrainingRequestError(
            f"exclude_columns names columns the dataset does not have: {', '.join(unknown)}. Its columns are: "
            f"{', '.join(dataset.columns)}."
        )
    if dataset.row_count < MIN_TRAINING_ROWS:
        raise TrainingRequestError(too_few_rows_message(f"The dataset {dataset.filename!r}", dataset.row_count))
    if set(dataset.columns) <= set(request.exclude_columns):
        raise TrainingRequestError(
            "No usable feature column: exclude_columns leaves none of the dataset's columns to learn from."
        )
    await _check_limits(database, settings, owner, request.name)
    parameters = TrainingParameters(
        encoding_dim=request.encoding_dim,
        threshold_percentile=request.threshold_percentile,
        epochs=request.epochs,
        seed=request.seed,
    )
    training = await trainings.insert(
        database,
        owner_id=owner.id,
        dataset_id=dataset.id,
        name=request.name,
        parameters=parameters.to_dict(),
        exclude_columns=request.exclude_columns,
    )
    await job_signals.send(database, "training")
    return view(training)


async def _check_limits(database: Database, settings: Settings, owner: User, name: str) -> None:
    in_progress = await trainings.count_in_progress(database, owner_id=owner.id)
    if in_progress >= settings.max_trainings_in_progress_per_user:
        raise TooManyRequestsError(
            f"You have {in_progress} trainings queued or running, the most allowed at once: wait for one to finish "
            "(GET /api/anomaly/trainings/{id}) or cancel one (DELETE /api/anomaly/trainings/{id}).",
            TRAINING_RETRY_AFTER_SECONDS,
        )
    existing = {model.name for model in await user_models.list_models(database, owner.id)}
    coming = await trainings.in_progress_names(database, owner.id)
    if name not in existing | coming and len(existing | coming) >= settings.max_models_per_user:
        raise QuotaExceededError(
            f"You have {len(existing | coming)} models, the most allowed ({settings.max_models_per_user}): delete one "
            "you no longer need with DELETE /api/anomaly/models/{name}, or train a new version of an existing one."
        )
    versions = len(await user_models.versions(database, owner_id=owner.id, name=name))
    versions += await trainings.count_in_progress(database, owner_id=owner.id, name=name)
    if versions >= settings.max_versions_per_model:
        raise QuotaExceededError(
            f"Your model {name!r} has {versions} versions (or trainings under way), the most allowed "
            f"({settings.max_versions_per_model}): delete an old one with "
            f"DELETE /api/anomaly/models/{name}/versions/{{version}}."
        )


async def owned(database: Database, owner: User, training_id: str) -> Training:
    """The caller's training with this id; another user's is as not-found as a missing one."""
    training = await trainings.find(database, training_id, owner_id=owner.id)
    if training is None:
        raise NotFoundError(
            f"No training {training_id!r} among yours: check the id from POST /api/anomaly/models's answer."
        )
    return training


async def cancel(database: Database, training: Training) -> TrainingView:
    """Cancel a training: a queued one never starts; a running one stops at its next epoch and keeps nothing."""
    if training.status not in trainings.IN_PROGRESS_STATUSES:
        raise TrainingConflictError(
            f"The training has already ended ({training.status.value}): there is nothing to cancel. To remove the "
            "version it made, use DELETE /api/anomaly/models/{name}/versions/{version}."
        )
    cancelled = await trainings.cancel(database, training, CANCELLED_BY_OWNER)
    return view(cancelled or training)


def view(training: Training) -> TrainingView:
    """How a training reads to its owner."""
    return TrainingView(
        training_id=training.id,
        name=training.name,
        dataset_id=training.dataset_id,
        status=training.status,
        progress=training.progress,
        parameters=training.parameters,
        exclude_columns=training.exclude_columns,
        attempts=training.attempts,
        timings=training.timings,
        result=training.result,
        error=training.error,
        requested_at=training.created_at,
        started_at=training.started_at,
        finished_at=training.finished_at,
    )
