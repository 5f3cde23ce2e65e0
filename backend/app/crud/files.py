"""Binary payloads in GridFS: uploaded files, their parsed tables and score arrays."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO

from bson import ObjectId
from gridfs import AsyncGridFSBucket
from gridfs.errors import NoFile
from pymongo.errors import PyMongoError

from app.db.collections import Database


async def store(
    database: Database, bucket: str, filename: str, data: bytes | BinaryIO, metadata: dict[str, Any]
) -> str:
    """Write ``data`` (bytes, or a binary file read from its current position) as one GridFS file; return its id.

    A failed write removes the chunks it had written (GridFS's own ``upload_from_stream`` leaves them behind),
    as far as the database still answers.
    """
    upload = AsyncGridFSBucket(database, bucket_name=bucket).open_upload_stream(filename, metadata=metadata)
    try:
        await upload.write(data)
        await upload.close()
    except BaseException:
        with contextlib.suppress(PyMongoError):
            await asyncio.shield(upload.abort())
        raise
    return str(upload._id)


async def read(database: Database, bucket: str, file_id: str) -> bytes:
    """Read a whole GridFS file."""
    stream = await AsyncGridFSBucket(database, bucket_name=bucket).open_download_stream(ObjectId(file_id))
    return await stream.read()


async def download(database: Database, bucket: str, file_id: str, destination: BinaryIO) -> None:
    """Copy a GridFS file into ``destination`` a chunk at a time (for files too large to hold as bytes)."""
    await AsyncGridFSBucket(database, bucket_name=bucket).download_to_stream(ObjectId(file_id), destination)


async def delete(database: Database, bucket: str, file_ids: Iterable[str | None]) -> None:
    """Delete GridFS files, skipping ids that are ``None`` or already gone."""
    grid = AsyncGridFSBucket(database, bucket_name=bucket)
    for file_id in file_ids:
        if file_id is None:
            continue
        with contextlib.suppress(NoFile):
            await grid.delete(ObjectId(file_id))


async def delete_where(database: Database, bucket: str, metadata: dict[str, Any]) -> None:
    """Delete every GridFS file whose metadata matches ``metadata`` (key -> value or query operator)."""
    grid = AsyncGridFSBucket(database, bucket_name=bucket)
    query = {f"metadata.{key}": value for key, value in metadata.items()}
    cursor = database[f"{bucket}.files"].find(query, {"_id": 1})
    for file_id in [document["_id"] async for document in cursor]:
        with contextlib.suppress(NoFile):
            await grid.delete(file_id)


@dataclass(frozen=True)
class StoredFile:
    """A GridFS file's id, metadata and when it was written."""

    id: str
    metadata: dict[str, Any]
    uploaded_at: datetime


async def find_older_than(database: Database, bucket: str, written_before: datetime, limit: int) -> list[StoredFile]:
    """Up to ``limit`` files written before ``written_before``, oldest first (what the orphan sweep looks at)."""
    cursor = (
        database[f"{bucket}.files"]
        .find({"uploadDate": {"$lt": written_before}}, {"metadata": 1, "uploadDate": 1})
        .sort("uploadDate", 1)
        .limit(limit)
    )
    return [
        StoredFile(str(document["_id"]), dict(document.get("metadata") or {}), document["uploadDate"])
        async for document in cursor
    ]
