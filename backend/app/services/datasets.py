"""Uploaded datasets: validated, parsed once and stored in GridFS with a document describing them."""

from __future__ import annotations

import asyncio
import hashlib
import re
import unicodedata
from dataclasses import dataclass
from pathlib import PurePath
from typing import BinaryIO

import pandas as pd

from app.core.config import Settings
from app.core.errors import UploadTooLargeError
from app.crud import anomaly_pages, datasets, files, sessions
from app.crud.datasets import Dataset
from app.crud.users import User
from app.db.collections import RESULTS_BUCKET, UPLOADS_BUCKET, Database
from app.services.table_snapshot import decode_table, encode_table
from app.utils.table_reader import file_extension, read_table

UPLOADED = "uploaded"
# Longest stored filename, extension included (what most filesystems allow).
MAX_FILENAME_CHARS = 255
_PATH_SEPARATORS = re.compile(r"[/\\]")


@dataclass(frozen=True)
class DatasetView:
    """A dataset with the status of its latest analysis (``uploaded`` before any)."""

    dataset: Dataset
    status: str


@dataclass(frozen=True)
class _ParsedUpload:
    sha256: str
    columns: list[str]
    row_count: int
    table: bytes


def too_large_error(settings: Settings) -> UploadTooLargeError:
    """The error for an upload over ``MAX_UPLOAD_MB``."""
    return UploadTooLargeError(
        f"The file is larger than the {settings.max_upload_mb} MB upload limit: split it, upload a compact "
        "format (CSV is usually smallest), or raise MAX_UPLOAD_MB."
    )


async def upload(
    database: Database,
    settings: Settings,
    owner: User,
    filename: str | None,
    content_type: str | None,
    size: int | None,
    content: BinaryIO,
) -> DatasetView:
    """Check, parse and store an upload; return its dataset once the file is safely in GridFS.

    Raises ``UnsupportedFileTypeError`` (by extension), ``UploadTooLargeError`` and ``TableReadError``
    (unreadable or empty table). Parsing runs in a thread, and the parsed table is stored beside the file
    so that analyses never parse it again.
    """
    name = safe_filename(filename)
    file_extension(name)
    if size is not None and size > settings.max_upload_bytes:
        raise too_large_error(settings)
    data = await asyncio.to_thread(content.read)
    if len(data) > settings.max_upload_bytes:
        raise too_large_error(settings)
    parsed = await asyncio.to_thread(_parse_upload, data, name)
    file_id = await files.store(
        database, UPLOADS_BUCKET, name, data, {"owner_id": owner.id, "kind": "upload", "content_type": content_type}
    )
    table_file_id: str | None = None
    try:
        table_file_id = await files.store(
            database, UPLOADS_BUCKET, f"{name}.table.npz", parsed.table, {"owner_id": owner.id, "kind": "table"}
        )
        dataset = await datasets.insert(
            database,
            owner_id=owner.id,
            filename=name,
            content_type=content_type,
            size=len(data),
            sha256=parsed.sha256,
            columns=parsed.columns,
            row_count=parsed.row_count,
            file_id=file_id,
            table_file_id=table_file_id,
        )
    except BaseException:
        await files.delete(database, UPLOADS_BUCKET, [file_id, table_file_id])
        raise
    return DatasetView(dataset, UPLOADED)


def safe_filename(filename: str | None) -> str:
    """The name an upload is stored and shown under: its last path component (``/`` or ``\\``), without
    control or invisible formatting characters (terminal escapes, bidi overrides), at most
    ``MAX_FILENAME_CHARS`` long with its extension kept; ``upload`` when nothing of the stem is left."""
    last = _PATH_SEPARATORS.split(filename or "")[-1]
    printable = "".join(char for char in last if not unicodedata.category(char).startswith("C")).strip()
    path = PurePath(printable or "upload")
    suffix = path.suffix if path.suffix.strip(". ") else ""
    stem = (printable[: -len(suffix)] if suffix else printable).strip() or "upload"
    return stem[: MAX_FILENAME_CHARS - len(suffix)] + suffix


def _parse_upload(data: bytes, filename: str) -> _ParsedUpload:
    frame = read_table(data, filename)
    return _ParsedUpload(
        sha256=hashlib.sha256(data).hexdigest(),
        columns=[str(column) for column in frame.columns],
        row_count=len(frame),
        table=encode_table(frame),
    )


async def list_owned(database: Database, owner: User, limit: int, offset: int) -> list[DatasetView]:
    """The caller's datasets, newest first, each with its analysis status."""
    owned = await datasets.list_owned(database, owner.id, limit, offset)
    latest = await sessions.find_many(
        database, [dataset.latest_session_id for dataset in owned if dataset.latest_session_id]
    )
    return [
        DatasetView(
            dataset,
            latest[dataset.latest_session_id].status.value if dataset.latest_session_id in latest else UPLOADED,
        )
        for dataset in owned
    ]


async def view(database: Database, dataset: Dataset) -> DatasetView:
    """One dataset with its analysis status."""
    session = await sessions.find(database, dataset.latest_session_id) if dataset.latest_session_id else None
    return DatasetView(dataset, session.status.value if session else UPLOADED)


async def delete(database: Database, dataset: Dataset) -> None:
    """Remove a dataset, its file, its parsed table, its analyses and their results."""
    await datasets.delete(database, dataset.id)
    removed = await sessions.delete_for_dataset(database, dataset.id)
    await anomaly_pages.delete_for_sessions(database, [session.id for session in removed])
    await files.delete(database, RESULTS_BUCKET, [file_id for session in removed for file_id in session.file_ids])
    await files.delete(database, UPLOADS_BUCKET, [dataset.file_id, dataset.table_file_id])


async def load_table(database: Database, dataset: Dataset) -> pd.DataFrame:
    """The dataset's rows as parsed at upload."""
    data = await files.read(database, UPLOADS_BUCKET, dataset.table_file_id)
    return await asyncio.to_thread(decode_table, data)

