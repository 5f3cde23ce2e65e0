"""Uploaded datasets: validated, parsed once and stored in GridFS with a document describing them."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import tempfile
import unicodedata
from dataclasses import dataclass
from typing import BinaryIO

from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError

from app.core.config import Settings
from app.core.errors import NotFoundError, UploadNotStoredError, UploadTooLargeError
from app.core.states import DatasetStatus
from app.crud import analyses, datasets, files, labels, trainings
from app.crud.analyses import Analysis
from app.crud.datasets import Dataset
from app.crud.users import User
from app.db.collections import UPLOADS_BUCKET, Database
from app.services import analysis_results
from app.services.table_snapshot import TableSnapshot, TableSnapshotWriter
from app.utils.table_reader import file_extension, iter_table

HASH_BLOCK_BYTES = 2**20
# Longest stored filename, extension included (what most filesystems allow).
MAX_FILENAME_CHARS = 255
MAX_EXTENSION_CHARS = 16
_PATH_SEPARATORS = re.compile(r"[/\\]")
TRAINING_DATASET_DELETED = "The dataset was deleted while the model trained: nothing of the training was kept."


@dataclass(frozen=True)
class DatasetView:
    """A dataset with the status of its latest analysis (``uploaded`` before any)."""

    dataset: Dataset
    status: DatasetStatus


@dataclass(frozen=True)
class _ParsedUpload:
    sha256: str
    size: int
    columns: list[str]
    row_count: int
    table: BinaryIO


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
    # The upload stays in its spooled temporary file (on disk past 1 MB): it is hashed, parsed and copied to
    # GridFS from there, never held whole in memory, so a file of hundreds of MB costs only its parsed table.
    parsed = await asyncio.to_thread(_parse_upload, content, name)
    if parsed.size > settings.max_upload_bytes:
        raise too_large_error(settings)
    # The dataset document is written last, so a dataset never exists without both its files; when a write
    # fails, the files written so far are removed (as far as the database still answers) and nothing is listed.
    stored: list[str] = []
    upload_metadata = {"owner_id": owner.id, "kind": "upload", "content_type": content_type}
    try:
        content.seek(0)
        stored.append(await files.store(database, UPLOADS_BUCKET, name, content, upload_metadata))
        stored.append(
            await files.store(
                database, UPLOADS_BUCKET, f"{name}.table.npz", parsed.table, {"owner_id": owner.id, "kind": "table"}
            )
        )
        dataset = await datasets.insert(
            database,
            owner_id=owner.id,
            filename=name,
            content_type=content_type,
            size=parsed.size,
            sha256=parsed.sha256,
            columns=parsed.columns,
            row_count=parsed.row_count,
            file_id=stored[0],
            table_file_id=stored[1],
        )
    except BaseException as error:
        with contextlib.suppress(PyMongoError):
            await asyncio.shield(files.delete(database, UPLOADS_BUCKET, stored))
        if isinstance(error, PyMongoError):
            raise UploadNotStoredError(
                f"The file could not be stored: {_storage_failure(error)}. Nothing of it was kept: upload it again "
                "later, and tell the service's operator if this persists."
            ) from error
        raise
    finally:
        parsed.table.close()  # the snapshot's temporary file
    return DatasetView(dataset, DatasetStatus.UPLOADED)


def _storage_failure(error: PyMongoError) -> str:
    """What went wrong with the database, in a user's words (without hosts, paths or stack traces)."""
    if isinstance(error, ConnectionFailure):
        return "the database is unreachable"
    details = error.details if isinstance(error, OperationFailure) else None
    code_name = (details or {}).get("codeName") or type(error).__name__
    if code_name == "OutOfDiskSpace":
        return "the database's disk is full"
    return f"the database refused the write ({code_name})"


def safe_filename(filename: str | None) -> str:
    """The name an upload is stored and shown under: its last path component (``/`` or ``\\``), without
    control or invisible formatting characters (terminal escapes, bidi overrides), at most
    ``MAX_FILENAME_CHARS`` long with its extension kept; ``upload`` when nothing of the stem is left."""
    last = _PATH_SEPARATORS.split(filename or "")[-1]
    printable = "".join(char for char in last if not unicodedata.category(char).startswith("C")).strip()
    stem, dot, extension = printable.rpartition(".")
    if not dot or not extension.strip() or len(extension) > MAX_EXTENSION_CHARS:
        stem, extension = printable, ""
    suffix = f".{extension}" if extension else ""
    return (stem.strip() or "upload")[: MAX_FILENAME_CHARS - len(suffix)] + suffix


def _parse_upload(content: BinaryIO, filename: str) -> _ParsedUpload:
    content.seek(0)
    digest = hashlib.sha256()
    while block := content.read(HASH_BLOCK_BYTES):
        digest.update(block)
    sha256, size = digest.hexdigest(), content.tell()
    snapshot = TableSnapshotWriter()
    for chunk in iter_table(content, filename):
        snapshot.add(chunk)
    return _ParsedUpload(
        sha256=sha256, size=size, columns=snapshot.columns, row_count=snapshot.row_count, table=snapshot.finish()
    )


async def list_owned(database: Database, owner: User, limit: int, offset: int) -> list[DatasetView]:
    """The caller's datasets, newest first, each with its analysis status."""
    owned = await datasets.list_owned(database, owner.id, limit, offset)
    latest = await analyses.find_many(
        database, [dataset.latest_session_id for dataset in owned if dataset.latest_session_id]
    )
    return [_view(dataset, latest.get(dataset.latest_session_id or "")) for dataset in owned]


def _view(dataset: Dataset, latest: Analysis | None) -> DatasetView:
    return DatasetView(dataset, DatasetStatus.of(latest.status if latest else None))


async def owned(database: Database, owner: User, dataset_id: str) -> Dataset:
    """The caller's dataset with this id; another user's dataset is as not-found as a missing one."""
    dataset = await datasets.find(database, dataset_id, owner_id=owner.id)
    if dataset is None:
        raise NotFoundError(
            f"No dataset {dataset_id!r} among yours: check the id, or list your datasets with "
            "GET /api/anomaly/datasets."
        )
    return dataset


async def latest_analysis(database: Database, dataset: Dataset) -> Analysis | None:
    """The dataset's latest analysis, or None before its first analysis."""
    return await analyses.find(database, dataset.latest_session_id) if dataset.latest_session_id else None


async def view(database: Database, dataset: Dataset) -> DatasetView:
    """One dataset with its analysis status."""
    return _view(dataset, await latest_analysis(database, dataset))


async def delete(database: Database, dataset: Dataset) -> None:
    """Remove a dataset, its file, its parsed table, its analyses and their results.

    Children go first and the dataset document last: a delete that fails part-way leaves the dataset in
    place, so repeating the request finds it and finishes the job instead of answering 404 over orphans.
    Results are removed again after the analyses are gone, so a worker completing meanwhile leaves nothing.
    """
    await trainings.stop_for_dataset(database, dataset.id, TRAINING_DATASET_DELETED)
    await labels.delete_for_dataset(database, dataset.id)
    await analysis_results.delete(database, await analyses.find_for_dataset(database, dataset.id))
    removed = await analyses.delete_for_dataset(database, dataset.id)
    await analysis_results.delete(database, removed)
    await files.delete(database, UPLOADS_BUCKET, [dataset.file_id, dataset.table_file_id])
    await datasets.delete(database, dataset.id)


async def load_snapshot(database: Database, dataset: Dataset) -> TableSnapshot:
    """The dataset's rows as parsed at upload, to decode a range at a time.

    The stored archive goes through a temporary file, so only its arrays are ever in memory, not its bytes too.
    """
    with tempfile.TemporaryFile(suffix=".npz") as archive:
        await files.download(database, UPLOADS_BUCKET, dataset.table_file_id, archive)
        archive.seek(0)
        return await asyncio.to_thread(TableSnapshot, archive)
