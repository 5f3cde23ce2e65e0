"""The models a user can analyse with: the deployment's (read-only, shared) and their own (trained through the
API, private, versioned), listed, described, activated, deleted, downloaded.

A user's model version is immutable once recorded; which version analyses use is the model's active version.
Deleting is refused (409, saying what to do) for the active version and for versions an analysis queued or
running uses, so no analysis ever loses its model; analyses already done keep their results and still name
the version that made them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from app.core.errors import ModelInUseError, ModelReadOnlyError, NotFoundError
from app.core.states import ModelKind
from app.crud import analyses, trainings, user_models
from app.crud.analyses import ModelChoice
from app.crud.user_models import ModelVersion, UserModel
from app.crud.users import User
from app.db.collections import Database
from app.services import model_files
from app.services.model_registry import Candidate, DeploymentModel, ModelRegistry
from app.utils.model_store import REPORT_FILENAME

ModelKindName = Literal["deployment", "user"]


@dataclass(frozen=True)
class ModelView:
    """A model as ``GET /api/anomaly/models`` lists it: for a user's model, its active version's facts."""

    name: str
    kind: ModelKindName
    default: bool
    features: list[str]
    threshold: float
    threshold_percentile: float
    trained_at: str | None
    version: str
    training_rows: int | None
    dropped_columns: dict[str, str]
    active_version: int | None
    versions: list[int]


@dataclass(frozen=True)
class ModelVersionView:
    """One version of a user's model, with its lineage."""

    version: int
    content_hash: str
    active: bool
    created_at: datetime
    features: list[str]
    threshold: float
    threshold_percentile: float
    dropped_columns: dict[str, str]
    lineage: dict[str, Any]


@dataclass(frozen=True)
class ModelDetailView:
    """A model with every version (a deployment model has one, its folder's)."""

    name: str
    kind: ModelKindName
    default: bool
    active_version: int | None
    versions: list[ModelVersionView]
    deployment: ModelView | None


@dataclass(frozen=True)
class DownloadedModel:
    """A model version's files as a zip."""

    filename: str
    content: bytes


async def list_models(database: Database, registry: ModelRegistry, owner: User) -> list[ModelView]:
    """The deployment's models (the default first), then the caller's own, by name."""
    own = await user_models.list_models(database, owner.id)
    versions = await user_models.versions(database, owner_id=owner.id)
    return [*(_deployment_view(model) for model in registry.models), *_user_views(own, versions)]


async def describe(database: Database, registry: ModelRegistry, owner: User, name: str) -> ModelDetailView:
    """One model with its versions and their lineage (the caller's own first, then the deployment's)."""
    model = await user_models.find_model(database, owner_id=owner.id, name=name)
    if model is not None:
        return await _detail(database, model)
    deployment = _deployment_model(registry, name)
    return ModelDetailView(name, "deployment", deployment.is_default, None, [], _deployment_view(deployment))


async def report(database: Database, registry: ModelRegistry, owner: User, name: str, number: int | None) -> bytes:
    """A version's training report (PNG): the active version's by default."""
    model = await user_models.find_model(database, owner_id=owner.id, name=name)
    if model is None:
        path = _deployment_model(registry, name).path / REPORT_FILENAME
        if number is not None or not path.is_file():
            raise NotFoundError(f"The deployment's model {name!r} has no training report{_version_note(number)}.")
        return await asyncio.to_thread(path.read_bytes)
    version = await _version(database, model, number)
    content = await model_files.report(database, version)
    if content is None:
        raise NotFoundError(f"Version {version.number} of your model {name!r} has no training report.")
    return content


async def download(
    database: Database, registry: ModelRegistry, owner: User, name: str, number: int | None
) -> DownloadedModel:
    """A version of the caller's model (the active one by default) as a zip in the seed's folder layout."""
    model = await _own_model(database, registry, owner, name)
    version = await _version(database, model, number)
    return DownloadedModel(f"{name}-v{version.number}.zip", await model_files.zipped(database, version))


async def activate(database: Database, registry: ModelRegistry, owner: User, name: str, number: int) -> ModelDetailView:
    """Make ``number`` the version analyses of the caller's model use (roll back or forward)."""
    model = await _own_model(database, registry, owner, name)
    version = await _version(database, model, number)
    await user_models.activate(database, owner_id=owner.id, name=name, number=version.number)
    refreshed = await user_models.find_model(database, owner_id=owner.id, name=name)
    return await _detail(database, refreshed or model)


async def delete_version(database: Database, registry: ModelRegistry, owner: User, name: str, number: int) -> None:
    """Delete one version of the caller's model (never the active one, nor one an analysis uses)."""
    model = await _own_model(database, registry, owner, name)
    version = await _version(database, model, number)
    if version.number == model.active_number:
        raise ModelInUseError(
            f"Version {number} is the active version of {name!r}: activate another version first "
            f"(POST /api/anomaly/models/{name}/active), or delete the whole model (DELETE /api/anomaly/models/{name})."
        )
    await _refuse_if_in_use(database, [version])
    await user_models.delete_version(database, version.id)
    await model_files.delete(database, [version])


async def delete_model(database: Database, registry: ModelRegistry, owner: User, name: str) -> None:
    """Delete the caller's model with every version (not while an analysis uses one or a training is under way)."""
    model = await _own_model(database, registry, owner, name)
    if await trainings.count_in_progress(database, owner_id=owner.id, name=name):
        raise ModelInUseError(
            f"A training of {name!r} is queued or running: cancel it first (DELETE /api/anomaly/trainings/{{id}}) "
            "or wait for it to end."
        )
    versions = await user_models.versions(database, owner_id=owner.id, name=model.name)
    await _refuse_if_in_use(database, versions)
    for version in versions:
        await user_models.delete_version(database, version.id)
    await model_files.delete(database, versions)
    await user_models.delete_model(database, owner_id=owner.id, name=name)


async def candidates(database: Database, owner_id: str) -> list[Candidate]:
    """The owner's models (their active versions) as analysis candidates."""
    own = {model.name: model for model in await user_models.list_models(database, owner_id)}
    return [
        Candidate(
            choice=ModelChoice(version.name, ModelKind.USER, version.version, version.id, version.number),
            input_columns=version.features,
            threshold_percentile=version.threshold_percentile,
        )
        for version in await user_models.versions(database, owner_id=owner_id)
        if version.name in own and version.number == own[version.name].active_number
    ]


async def _refuse_if_in_use(database: Database, versions: list[ModelVersion]) -> None:
    for version in versions:
        if await analyses.uses_model_version(database, version.id):
            raise ModelInUseError(
                f"Version {version.number} of {version.name!r} is used by an analysis queued or running: wait for it "
                "to finish, then delete."
            )


async def _own_model(database: Database, registry: ModelRegistry, owner: User, name: str) -> UserModel:
    model = await user_models.find_model(database, owner_id=owner.id, name=name)
    if model is not None:
        return model
    _deployment_model(registry, name)  # 404 when it is no model at all
    raise ModelReadOnlyError(
        f"{name!r} is one of the deployment's models, which are read-only through the API: train your own with "
        'POST /api/anomaly/models {"dataset_id": ..., "name": ...}.'
    )


def _deployment_model(registry: ModelRegistry, name: str) -> DeploymentModel:
    model = next((model for model in registry.models if model.name == name), None)
    if model is None:
        raise NotFoundError(
            f"No model named {name!r} among yours or the deployment's: list them with GET /api/anomaly/models."
        )
    return model


async def _version(database: Database, model: UserModel, number: int | None) -> ModelVersion:
    wanted = model.active_number if number is None else number
    version = await user_models.find_version(database, owner_id=model.owner_id, name=model.name, number=wanted or 0)
    if version is None:
        raise NotFoundError(
            f"Your model {model.name!r} has no version {number}: GET /api/anomaly/models/{model.name} lists them."
        )
    return version


async def _detail(database: Database, model: UserModel) -> ModelDetailView:
    versions = await user_models.versions(database, owner_id=model.owner_id, name=model.name)
    return ModelDetailView(
        name=model.name,
        kind="user",
        default=False,
        active_version=model.active_number,
        versions=[_version_view(version, model.active_number) for version in versions],
        deployment=None,
    )


def _version_view(version: ModelVersion, active_number: int | None) -> ModelVersionView:
    return ModelVersionView(
        version=version.number,
        content_hash=version.version,
        active=version.number == active_number,
        created_at=version.created_at,
        features=version.features,
        threshold=version.threshold,
        threshold_percentile=version.threshold_percentile,
        dropped_columns=version.dropped_columns,
        lineage=version.lineage,
    )


def _deployment_view(model: DeploymentModel) -> ModelView:
    info = model.card.info
    return ModelView(
        name=model.name,
        kind="deployment",
        default=model.is_default,
        features=model.card.feature_names,
        threshold=model.card.threshold,
        threshold_percentile=model.card.threshold_percentile,
        trained_at=info["trained_at"],
        version=model.version,
        training_rows=info["training_rows"],
        dropped_columns=info["dropped_columns"],
        active_version=None,
        versions=[],
    )


def _user_views(models: list[UserModel], versions: list[ModelVersion]) -> list[ModelView]:
    views = []
    for model in models:
        own = [version for version in versions if version.name == model.name]
        active = next((version for version in own if version.number == model.active_number), None)
        if active is None:
            continue
        views.append(
            ModelView(
                name=model.name,
                kind="user",
                default=False,
                features=active.features,
                threshold=active.threshold,
                threshold_percentile=active.threshold_percentile,
                trained_at=active.lineage.get("trained_at"),
                version=active.version,
                training_rows=active.lineage.get("rows_used"),
                dropped_columns=active.dropped_columns,
                active_version=active.number,
                versions=[version.number for version in own],
            )
        )
    return views


def _version_note(number: int | None) -> str:
    return "" if number is None else " (a deployment model has one version: leave out 'version')"
