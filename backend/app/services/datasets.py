"""Uploaded datasets: validated, parsed once and stored in GridFS with a document describing them."""

from __future__ import annotations

import asyncio
import contextlib
import re
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError

from app.core.config import Settings
from app.core.errors import (
    AnalysisNotReadyError,
    NotFoundError,
    QuotaExceededError,
    UploadNotStoredError,
    UploadTooLargeError,
)
from app.core.states import AnalysisStatus, DatasetStatus
from app.crud import analyses, datasets, files, labels, trainings
from app.crud.analyses import Analysis
from app.crud.datasets import Dataset
from app.crud.users import User
from app.db.collections import UPLOADS_BUCKET, Database
from app.services import analysis_results
from app.services.table_snapshot import TableSnapshot
from app.services.upload_parsing import ParsedUpload, UploadParserPool
from app.utils.table_reader import file_extension

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
class ReceivedFile:
    """An upload's file part as the API received it: streamed to ``path`` on disk, never held in memory."""

    filename: str | None
    content_type: str | None
    path: Path
    size: int


def too_large_error(settings: Settings) -> UploadTooLargeError:
    """The error for an upload over ``MAX_UPLOAD_MB``."""
    return UploadTooLargeError(
        f"The file is larger than the {settings.max_upload_mb} MB upload limit: split it, upload a compact "
        "format (CSV is usually smallest), or raise MAX_UPLOAD_MB."
    )


async def check_quota(database: Database, settings: Settings, owner: User, incoming_bytes: int) -> None:
    """Raise ``QuotaExceededError`` if ``owner`` keeps ``MAX_DATASETS_PER_USER`` datasets already, or if
    ``incoming_bytes`` more would take them past ``MAX_STORAGE_MB_PER_USER``."""
    used = await datasets.usage(database, owner.id)
    delete_some = (
        "delete datasets you no longer need (DELETE /api/anomaly/datasets/{id}; GET /api/anomaly/datasets "
        "lists them) and upload again"
    )
    if used.datasets >= settings.max_datasets_per_user:
        raise QuotaExceededError(
            f"You keep {used.datasets:,} datasets, the most one account may keep (MAX_DATASETS_PER_USER="
            f"{settings.max_datasets_per_user:,}): {delete_some}."
        )
    if used.bytes + incoming_bytes > settings.max_storage_bytes_per_user:
        raise QuotaExceededError(
            f"Your datasets take {used.bytes / 2**20:,.1f} MB and this upload needs {incoming_bytes / 2**20:,.1f} MB "
            f"more, past the {settings.max_storage_mb_per_user:,} MB one account may keep "
            f"(MAX_STORAGE_MB_PER_USER): {delete_some}."
        )


async def upload(
    database: Database, settings: Settings, parsers: UploadParserPool, owner: User, received: ReceivedFile
) -> DatasetView:
    """Check, parse and store an upload; return its dataset once its file, parsed table and document are stored.

    Raises ``UnsupportedFileTypeError`` (by extension), ``UploadTooLargeError``, ``QuotaExceededError`` (checked
    again now that the parsed table's size is known too), ``TableReadError`` (unreadable or empty table, or
    past a reading budget) and ``UploadNotStoredError``. Parsing runs in a child process
    (``UploadParserPool``); the API process streams the file and the parsed table from disk to GridFS.
    """
    name = safe_filename(received.filename)
    file_extension(name)
    if received.size > settings.max_upload_bytes:
        raise too_large_error(settings)
    with tempfile.TemporaryDirectory(prefix="upload-table-") as folder:
        parsed = await parsers.parse(received.path, name, Path(folder) / "table.npz")
        table_size = parsed.table_path.stat().st_size
        await check_quota(database, settings, owner, parsed.size + table_size)
        with open(received.path, "rb") as content, open(parsed.table_path, "rb") as table:
            dataset = await _store(
                database,
                owner,
                name=name,
                content_type=received.content_type,
                parsed=parsed,
                content=content,
                table=table,
                table_size=table_size,
            )
    return DatasetView(dataset, DatasetStatus.UPLOADED)


async def _store(
    database: Database,
    owner: User,
    *,
    name: str,
    content_type: str | None,
    parsed: ParsedUpload,
    content: BinaryIO,
    table: BinaryIO,
    table_size: int,
) -> Dataset:
    """Write the file, then its parsed table, then its document: a dataset never exists without both files.

    When a write fails, the files written so far are removed (as far as the database still answers).
    """
    stored: list[str] = []
    upload_metadata = {"owner_id": owner.id, "kind": "upload", "content_type": content_type}
    try:
        stored.append(await files.store(database, UPLOADS_BUCKET, name, content, upload_metadata))
        stored.append(
            await files.store(
                database, UPLOADS_BUCKET, f"{name}.table.npz", table, {"owner_id": owner.id, "kind": "table"}
            )
        )
        return await datasets.insert(
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
            table_size=table_size,
            notes=parsed.notes,
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


async def analysed(database: Database, dataset: Dataset) -> Analysis:
    """The dataset's latest analysis once it is analysed; ``AnalysisNotReadyError`` saying what to do before."""
    analysis = await latest_analysis(database, dataset)
    if analysis is None or analysis.status != AnalysisStatus.ANALYZED:
        state = DatasetStatus.of(analysis.status if analysis else None).value
        raise AnalysisNotReadyError(
            f"The dataset is not analysed yet (status: {state}): start an analysis with "
            f"POST /api/anomaly/datasets/{dataset.id}/analyze and wait until its status is 'analyzed'."
        )
    return analysis


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
