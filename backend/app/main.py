"""The FastAPI application: ``uvicorn app.main:app`` (``python -m app.serve`` also starts the database).

The lifespan creates what each process shares: one MongoDB client (PyMongo's async client is bound to one
event loop) with the indexes ensured, the model registry (the models' cards: an API process never loads
TensorFlow; job workers, ``python -m app.worker``, run the analyses), the pool of child processes that parse
uploads and the pool result downloads run in.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.api.client_address import ClientAddressMiddleware
from app.api.deps import AppResources
from app.api.errors import VALIDATION_RESPONSE, install_error_handlers
from app.api.observability import RequestObservabilityMiddleware
from app.api.upload_limit import UploadSizeLimitMiddleware
from app.core.config import Settings, get_settings
from app.core.security import resolve_jwt_secret
from app.db.connection import API_APP_NAME, connected
from app.routes import api_router, web_routes
from app.services.datasets import too_large_error
from app.services.export_pool import ExportPool
from app.services.model_registry import ModelRegistry
from app.services.upload_parsing import UploadParserPool

logger = logging.getLogger(__name__)

DESCRIPTION = """
Upload CSV or Excel tables, analyse them with a pre-trained autoencoder in the background and read the
anomalies. Get a token with `POST /api/auth/register` then `POST /api/auth/token` (or **Authorize** above),
upload with `POST /api/anomaly/datasets/upload`, start with `POST .../analyze` and poll `GET .../status`.
"""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Connect (indexes ensured), read the models' cards, start the upload parsers and the export pool; undo it
    on shutdown."""
    settings: Settings = app.state.settings
    jwt_secret = resolve_jwt_secret(settings)
    async with connected(settings, API_APP_NAME) as (client, database):
        models = ModelRegistry(settings)
        await models.refresh()
        parsers = UploadParserPool(settings)
        await parsers.start()
        exports = ExportPool(settings.max_concurrent_exports)
        app.state.resources = AppResources(settings, jwt_secret, client, database, models, parsers, exports)
        try:
            yield
        finally:
            await parsers.stop()
            exports.shutdown()


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
