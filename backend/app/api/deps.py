"""The routes' dependencies, declared once as ``Annotated`` aliases.

``AppResources`` is what the lifespan creates once per process (database client, model registry, upload
parsers, the export pool) and every request shares.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Path, Request
from fastapi.security import OAuth2PasswordBearer
from pymongo import AsyncMongoClient

from app.api import observability
from app.core.config import Settings
from app.crud.datasets import Dataset
from app.crud.trainings import Training
from app.crud.users import User
from app.db.collections import Database
from app.services import auth
from app.services import datasets as dataset_service
from app.services import trainings as training_service
from app.services.export_pool import ExportPool, ExportSlot
from app.services.model_registry import ModelRegistry
from app.services.upload_parsing import UploadParserPool

TOKEN_URL = "/api/auth/token"


@dataclass(frozen=True)
class AppResources:
    """Per-process state: created in the lifespan, shared by every request."""

    settings: Settings
    jwt_secret: str
    client: AsyncMongoClient[dict[str, Any]]
    database: Database
    models: ModelRegistry
    parsers: UploadParserPool
    exports: ExportPool


async def get_resources(request: Request) -> AppResources:
    """The process's shared resources (async: a plain ``def`` dependency would cost a thread hop per request)."""
    resources: AppResources = request.app.state.resources
    return resources


ResourcesDep = Annotated[AppResources, Depends(get_resources)]


async def get_settings(resources: ResourcesDep) -> Settings:
    """The service's settings."""
    return resources.settings


async def get_database(resources: ResourcesDep) -> Database:
    """The MongoDB database."""
    return resources.database


async def get_models(resources: ResourcesDep) -> ModelRegistry:
    """The deployment's models, with any model switched on disk picked up (looked at every few seconds at most)."""
    await resources.models.refresh()
    return resources.models


async def get_parsers(resources: ResourcesDep) -> UploadParserPool:
    """This process's pool of upload parser children."""
    return resources.parsers


async def get_client_address(request: Request) -> str | None:
    """The client's address, as ``app.api.client_address`` decided it (``None`` if the server has none)."""
    return request.client.host if request.client else None


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_database)]
ModelsDep = Annotated[ModelRegistry, Depends(get_models)]
ParsersDep = Annotated[UploadParserPool, Depends(get_parsers)]
ClientAddress = Annotated[str | None, Depends(get_client_address)]

# auto_error=False: a missing token gets the service's own 401 message, which says how to get one.
_bearer_token = OAuth2PasswordBearer(tokenUrl=TOKEN_URL, auto_error=False)


async def get_current_user(
    resources: ResourcesDep, request: Request, token: Annotated[str | None, Depends(_bearer_token)]
) -> User:
    """The caller, from the bearer token (401 if it is missing or not valid)."""
    user = await auth.user_from_token(resources.database, resources.jwt_secret, token)
    observability.remember_user(request, user.id)
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


async def get_owned_dataset(
    dataset_id: Annotated[str, Path(description="The dataset's id, from the upload's answer.")],
    user: CurrentUser,
    database: DatabaseDep,
) -> Dataset:
    """The caller's dataset with this id; another user's dataset is as not-found as a missing one."""
    return await dataset_service.owned(database, user, dataset_id)


OwnedDataset = Annotated[Dataset, Depends(get_owned_dataset)]


async def get_owned_training(
    training_id: Annotated[str, Path(description="The training's id, from POST /api/anomaly/models's answer.")],
    user: CurrentUser,
    database: DatabaseDep,
) -> Training:
    """The caller's training with this id; another user's is as not-found as a missing one."""
    return await training_service.owned(database, user, training_id)


OwnedTraining = Annotated[Training, Depends(get_owned_training)]


async def reserve_export(resources: ResourcesDep) -> AsyncIterator[ExportSlot]:
    """A slot in the process's export pool (429 when all are taken), held until the response has been sent or
    the client went away: released after the response however it ended, even if its stream never started."""
    slot = resources.exports.reserve()
    try:
        yield slot
    finally:
        slot.release()


ExportSlotDep = Annotated[ExportSlot, Depends(reserve_export)]
