"""Users' model files in GridFS: stored from a model folder, written back into one, zipped for download.

A version's files are the seed's folder layout (``autoencoder.h5``, ``metadata.pkl``, ``training_report.png``),
so a downloaded version unzipped into ``backend/Model/NAME`` works with the CLI, the Python API and MODELS_DIR.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

from app.crud import files
from app.crud.user_models import ModelFileIds, ModelVersion
from app.db.collections import MODELS_BUCKET, Database
from app.utils.model_store import METADATA_FILENAME, MODEL_FILENAME, REPORT_FILENAME

# Keys of the GridFS metadata that tie a model file to its training (the orphan sweep and clean-ups read them).
TRAINING_KEY = "training_id"
ATTEMPT_KEY = "attempt"


async def store_folder(database: Database, folder: Path, metadata: dict[str, Any]) -> ModelFileIds:
    """Store a saved model folder's files; a failure removes what was stored."""
    stored: list[str] = []
    try:
        for filename in (MODEL_FILENAME, METADATA_FILENAME, REPORT_FILENAME):
            path = folder / filename
            with open(path, "rb") as handle:
                stored.append(await files.store(database, MODELS_BUCKET, filename, handle, metadata))
    except BaseException:
        await files.delete(database, MODELS_BUCKET, stored)
        raise
    return ModelFileIds(model=stored[0], metadata=stored[1], report=stored[2])


async def download_version(database: Database, version: ModelVersion, folder: Path) -> None:
    """Write a version's model and metadata files into ``folder`` (what loading a detector needs)."""
    for file_id, filename in ((version.files.model, MODEL_FILENAME), (version.files.metadata, METADATA_FILENAME)):
        with open(folder / filename, "wb") as handle:
            await files.download(database, MODELS_BUCKET, file_id, handle)


async def report(database: Database, version: ModelVersion) -> bytes | None:
    """The version's training report (a PNG), if it has one."""
    if version.files.report is None:
        return None
    return await files.read(database, MODELS_BUCKET, version.files.report)


async def zipped(database: Database, version: ModelVersion) -> bytes:
    """The version's files as a zip in the seed's layout (files at the top: unzip into ``Model/NAME``)."""
    buffer = io.BytesIO()
    parts = [(version.files.model, MODEL_FILENAME), (version.files.metadata, METADATA_FILENAME)]
    if version.files.report is not None:
        parts.append((version.files.report, REPORT_FILENAME))
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for file_id, filename in parts:
            archive.writestr(filename, await files.read(database, MODELS_BUCKET, file_id))
    return buffer.getvalue()


async def delete(database: Database, versions: list[ModelVersion]) -> None:
    """Remove these versions' files."""
    await files.delete(database, MODELS_BUCKET, [file_id for version in versions for file_id in version.files.all()])


async def delete_attempt(database: Database, *, training_id: str, attempt: int) -> None:
    """Remove the files one training attempt stored (it failed, was stopped or lost its lease)."""
    await files.delete_where(database, MODELS_BUCKET, {TRAINING_KEY: training_id, ATTEMPT_KEY: attempt})
