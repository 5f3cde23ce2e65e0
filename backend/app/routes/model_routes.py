"""Models and their trainings: list the models, train your own from a dataset, follow or cancel the training,
see a model's versions and lineage, roll back or forward, download, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from app.api import errors
from app.api.deps import CurrentUser, DatabaseDep, ModelsDep, OwnedTraining, SettingsDep
from app.core.errors import (
    AuthenticationError,
    ModelInUseError,
    ModelReadOnlyError,
    NotFoundError,
    QuotaExceededError,
    TooManyRequestsError,
    TrainingConflictError,
    TrainingRequestError,
)
from app.schemas.anomaly import ModelOut
from app.schemas.models import ActivateRequest, ModelDetailOut, TrainingOut, TrainModelRequest
from app.services import models, trainings
from app.services.trainings import TrainingRequest

router = APIRouter(prefix="/api/anomaly", tags=["models"], responses=errors.responses(AuthenticationError))

ModelName = Annotated[str, Path(max_length=255, description="A model's name, from GET /api/anomaly/models.")]
VersionNumber = Annotated[
    int | None, Query(ge=1, le=1_000_000, description="A version number; default: the active one.")
]


@router.get("/models")
async def list_models(user: CurrentUser, database: DatabaseDep, registry: ModelsDep) -> list[ModelOut]:
    """The deployment's models (read-only, the default first) and your own (with their versions)."""
    return [
        ModelOut.model_validate(view, from_attributes=True)
        for view in await models.list_models(database, registry, user)
    ]


@router.post(
    "/models",
    status_code=status.HTTP_202_ACCEPTED,
    responses=errors.responses(NotFoundError, TrainingRequestError, QuotaExceededError, TooManyRequestsError),
)
async def train_model(
    body: TrainModelRequest, user: CurrentUser, database: DatabaseDep, registry: ModelsDep, settings: SettingsDep
) -> TrainingOut:
    """Train a model of your own from a dataset's rows (taken as normal), in the background: poll the training."""
    request = TrainingRequest(**body.model_dump())
    view = await trainings.request_training(database, registry, settings, user, request)
    return TrainingOut.model_validate(view, from_attributes=True)


@router.get("/trainings/{training_id}", responses=errors.responses(NotFoundError))
async def get_training(training: OwnedTraining) -> TrainingOut:
    """A training's status: the epoch and losses so far, then the new version and its validation check."""
    return TrainingOut.model_validate(trainings.view(training), from_attributes=True)


@router.delete("/trainings/{training_id}", responses=errors.responses(NotFoundError, TrainingConflictError))
async def cancel_training(training: OwnedTraining, database: DatabaseDep) -> TrainingOut:
    """Cancel a training: a queued one never starts; a running one stops at its next epoch and keeps nothing."""
    return TrainingOut.model_validate(await trainings.cancel(database, training), from_attributes=True)


@router.get("/models/{name}", responses=errors.responses(NotFoundError))
async def get_model(name: ModelName, user: CurrentUser, database: DatabaseDep, registry: ModelsDep) -> ModelDetailOut:
    """A model with its versions and their lineage (dataset, rows used, who trained it, when, how)."""
    return ModelDetailOut.model_validate(await models.describe(database, registry, user, name), from_attributes=True)


@router.get(
    "/models/{name}/report.png",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "description": "The training report"},
        **errors.responses(NotFoundError),
    },
)
async def model_report(
    name: ModelName, user: CurrentUser, database: DatabaseDep, registry: ModelsDep, version: VersionNumber = None
) -> Response:
    """A version's training report: the loss per epoch and the held-out scores with the threshold."""
    return Response(await models.report(database, registry, user, name, version), media_type="image/png")


@router.get(
    "/models/{name}/download",
    response_class=Response,
    responses={
        200: {"content": {"application/zip": {}}, "description": "autoencoder.h5, metadata.pkl, training_report.png"},
        **errors.responses(NotFoundError, ModelReadOnlyError),
    },
)
async def download_model(
    name: ModelName, user: CurrentUser, database: DatabaseDep, registry: ModelsDep, version: VersionNumber = None
) -> Response:
    """A version of your model as a zip in the seed's layout: unzip it into backend/Model/NAME to use it there."""
    downloaded = await models.download(database, registry, user, name, version)
    disposition = f'attachment; filename="{downloaded.filename}"'
    return Response(downloaded.content, media_type="application/zip", headers={"Content-Disposition": disposition})


@router.post("/models/{name}/active", responses=errors.responses(NotFoundError, ModelReadOnlyError))
async def activate_version(
    name: ModelName, body: ActivateRequest, user: CurrentUser, database: DatabaseDep, registry: ModelsDep
) -> ModelDetailOut:
    """Make a version the one analyses use (roll back or forward)."""
    detail = await models.activate(database, registry, user, name, body.version)
    return ModelDetailOut.model_validate(detail, from_attributes=True)


@router.delete(
    "/models/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=errors.responses(NotFoundError, ModelReadOnlyError, ModelInUseError),
)
async def delete_model(name: ModelName, user: CurrentUser, database: DatabaseDep, registry: ModelsDep) -> Response:
    """Delete your model with every version (analyses already done keep their results)."""
    await models.delete_model(database, registry, user, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete(
    "/models/{name}/versions/{version}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=errors.responses(NotFoundError, ModelReadOnlyError, ModelInUseError),
)
async def delete_model_version(
    name: ModelName,
    version: Annotated[int, Path(ge=1, le=1_000_000)],
    user: CurrentUser,
    database: DatabaseDep,
    registry: ModelsDep,
) -> Response:
    """Delete one version of your model (not the active one: activate another first)."""
    await models.delete_version(database, registry, user, name, version)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
