"""The process's one MongoDB client (PyMongo's async client is bound to one event loop), with the indexes ensured."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from app.core.config import Settings
from app.core.errors import ConfigurationError
from app.db.collections import Database, ensure_indexes

MongoClient = AsyncMongoClient[dict[str, Any]]


# How each kind of process names itself to the database (its logs and currentOp show it).
API_APP_NAME = "anomaly-api"
WORKER_APP_NAME = "anomaly-worker"


@asynccontextmanager
async def connected(settings: Settings, app_name: str) -> AsyncIterator[tuple[MongoClient, Database]]:
    """Connect to ``MONGODB_URL`` and ensure the indexes; ``ConfigurationError`` says what to fix if it cannot."""
    if not settings.mongodb_url:
        raise ConfigurationError(
            "MONGODB_URL is not set: start the service with `python -m app.serve` (or `make run`), which starts "
            "the embedded database, or point MONGODB_URL at a MongoDB server."
        )
    # An unreachable database fails requests (503) and jobs (retried) after this long, not after PyMongo's
    # default 30 s.
    timeout_ms = int(settings.database_timeout_seconds * 1000)
    client: MongoClient = AsyncMongoClient(
        settings.mongodb_url,
        tz_aware=True,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        appname=app_name,
    )
    try:
        database = client[settings.mongodb_db]
        try:
            await ensure_indexes(database)
        except PyMongoError as error:
            raise ConfigurationError(f"Cannot use the database at MONGODB_URL ({error}): is it running?") from error
        yield client, database
    finally:
        await client.close()
