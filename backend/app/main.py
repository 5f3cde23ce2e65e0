"""The FastAPI application: ``uvicorn app.main:app`` (``python -m app.serve`` also starts the database).

The lifespan creates what each process shares: one MongoDB client (PyMongo's async client is bound to one
event loop) with the indexes ensured, the models loaded once, the background analysis runner and the pool
result downloads run in.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from app.api.client_address import ClientAddressMiddleware
from app.api.deps import AppResources
from app.api.errors import VALIDATION_RESPONSE, install_error_handlers
from app.api.observability import RequestObservabilityMiddleware
from app.api.upload_limit import UploadSizeLimitMiddleware
from app.core.config import Settings, get_settings
from app.core.errors import ConfigurationError
from app.core.security import resolve_jwt_secret
from app.db.collections import ensure_indexes
from app.routes import api_router, web_routes
from app.services.analysis_runner import AnalysisRunner, create_background_executor
from app.services.datasets import too_large_error
from app.services.export_pool import ExportPool
from app.services.models import ModelRegistry

logger = logging.getLogger(__name__)

DESCRIPTION = """
Upload CSV or Excel tables, analyse them with a pre-trained autoencoder in the background and read the
anomalies. Get a token with `POST /api/auth/register` then `POST /api/auth/token` (or **Authorize** above),
upload with `POST /api/anomaly/datasets/upload`, start with `POST .../analyze` and poll `GET .../status`.
"""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Connect, ensure indexes, load the models and start the analysis runner; undo it all on shutdown."""
    settings: Settings = app.state.settings
    jwt_secret = resolve_jwt_secret(settings)
    if not settings.mongodb_url:
        raise ConfigurationError(
            "MONGODB_URL is not set: start the service with `python -m app.serve` (or `make run`), which starts "
            "the embedded database, or point MONGODB_URL at a MongoDB server."
        )
    # An unreachable database fails requests (503) and analyses (retried) after this long, not after
    # PyMongo's default 30 s.
    timeout_ms = int(settings.database_timeout_seconds * 1000)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        settings.mongodb_url, tz_aware=True, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms
    )
    try:
        database = client[settings.mongodb_db]
        try:
            await ensure_indexes(database)
        except PyMongoError as error:
            raise ConfigurationError(f"Cannot use the database at MONGODB_URL ({error}): is it running?") from error
        executor = create_background_executor()
        models = await asyncio.get_running_loop().run_in_executor(executor, ModelRegistry.load, settings)
        runner = AnalysisRunner(database, models, settings, executor)
        exports = ExportPool(settings.max_concurrent_exports)
        app.state.resources = AppResources(settings, jwt_secret, client, database, models, runner, exports)
        runner.start()
        try:
            yield
        finally:
            await runner.stop()
            executor.shutdown(wait=False, cancel_futures=True)
            exports.shutdown()
    finally:
        await client.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application for ``settings`` (default: read from the environment)."""
    settings = settings or get_settings()
    app = FastAPI(title="Tabular anomaly detection API", description=DESCRIPTION, version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.add_middleware(
        UploadSizeLimitMiddleware,
        max_file_bytes=settings.max_upload_bytes,
        too_large=lambda: too_large_error(settings),
    )
    # Outside the upload limit, so it sees every answer, the upload limit's 413s included.
    app.add_middleware(RequestObservabilityMiddleware)
    # Added last, so it is the outermost: the request log and every route see the client address it decides.
    app.add_middleware(ClientAddressMiddleware, trusted_proxies=settings.trusted_proxies)
    install_error_handlers(app)
    app.include_router(api_router, responses=VALIDATION_RESPONSE)
    app.mount(web_routes.ASSETS_PATH, web_routes.assets(), name="web")
    return app


app = create_app()
