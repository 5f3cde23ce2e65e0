"""Users' own models: one document per (owner, name) with its active version, one per version with its lineage.

A version's files are in GridFS (the ``models`` bucket) and are stored before its document is inserted, so a
version that can be listed always has every file. Version numbers come from an atomic counter on the model's
document, so two trainings of one name at once make two versions, never one mixed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from app.db.collections import MODEL_VERSIONS, USER_MODELS, Database


@dataclass(frozen=True)
class ModelFileIds:
    """A version's three files in GridFS: the seed's folder layout."""

    model: str  # autoencoder.h5
    metadata: str  # metadata.pkl
    report: str | None  # training_report.png

    def all(self) -> list[str]:
        """Every file id."""
        return [file_id for file_id in (self.model, self.metadata, self.report) if file_id]


@dataclass(frozen=True)
class ModelVersion:
    """One trained version of a user's model."""

    id: str
    owner_id: str
    name: str
    number: int
    version: str  # content hash of autoencoder.h5 + metadata.pkl
    files: ModelFileIds
    features: list[str]
    threshold: float
    threshold_percentile: float
    dropped_columns: dict[str, str]
    lineage: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class UserModel:
    """A user's model: its name and which version analyses use."""

    owner_id: str
    name: str
    active_number: int | None
    created_at: datetime


def _version(document: dict[str, Any]) -> ModelVersion:
    files = document["files"]
    return ModelVersion(
        id=str(document["_id"]),
        owner_id=str(document["owner_id"]),
        name=document["name"],
        number=document["number"],
        version=document["version"],
        files=ModelFileIds(
            str(files["model"]), str(files["metadata"]), str(files["report"]) if files.get("report") else None
        ),
        features=list(document["features"]),
        threshold=document["threshold"],
        threshold_percentile=document["threshold_percentile"],
        dropped_columns=dict(document.get("dropped_columns") or {}),
        lineage=dict(document.get("lineage") or {}),
        created_at=document["created_at"],
    )


def _model(document: dict[str, Any]) -> UserModel:
    return UserModel(
        owner_id=str(document["owner_id"]),
        name=document["name"],
        active_number=document.get("active_number"),
        created_at=document["created_at"],
    )


async def next_number(database: Database, *, owner_id: str, name: str) -> int:
    """Reserve the next version number of the owner's model (creating the model's document if need be)."""
    document = await database[USER_MODELS].find_one_and_update(
        {"owner_id": ObjectId(owner_id), "name": name},
        {"$inc": {"next_number": 1}, "$setOnInsert": {"created_at": datetime.now(UTC)}},
        upsert=True,
        return_document=ReturnDocument.AFTER,
    )
    assert document is not None  # upserted
    return int(document["next_number"])


async def insert_version(
    database: Database,
    *,
    owner_id: str,
    name: str,
    number: int,
    version: str,
    files: ModelFileIds,
    features: list[str],
    threshold: float,
    threshold_percentile: float,
    dropped_columns: dict[str, str],
    lineage: dict[str, Any],
    training_id: str,
) -> ModelVersion | None:
    """Record a version whose files are stored; ``None`` if this training already recorded one."""
    document = {
        "owner_id": ObjectId(owner_id),
        "name": name,
        "number": number,
        "version": version,
        "files": {"model": ObjectId(files.model), "metadata": ObjectId(files.metadata),
                  "report": ObjectId(files.report) if files.report else None},
        "features": features,
        "threshold": threshold,
        "threshold_percentile": threshold_percentile,
        "dropped_columns": dropped_columns,
        "lineage": lineage,
        "training_id": ObjectId(training_id),
        "created_at": datetime.now(UTC),
    }  # fmt: skip
    try:
        await database[MODEL_VERSIONS].insert_one(document)
    except DuplicateKeyError:
        return None
    return _version(document)


async def activate(database: Database, *, owner_id: str, name: str, number: int) -> None:
    """Make this version the one analyses of the owner's model use."""
    await database[USER_MODELS].update_one(
        {"owner_id": ObjectId(owner_id), "name": name}, {"$set": {"active_number": number}}
    )


async def find_model(database: Database, *, owner_id: str, name: str) -> UserModel | None:
    """The owner's model of this name, if they have one with at least one version."""
    document = await database[USER_MODELS].find_one(
        {"owner_id": ObjectId(owner_id), "name": name, "active_number": {"$ne": None}}
    )
    return _model(document) if document else None


async def list_models(database: Database, owner_id: str) -> list[UserModel]:
    """The owner's models that have a version, by name."""
    cursor = (
        database[USER_MODELS].find({"owner_id": ObjectId(owner_id), "active_number": {"$ne": None}}).sort("name", 1)
    )
    return [_model(document) async for document in cursor]


async def count_models(database: Database, owner_id: str) -> int:
    """How many models (with at least one version) the owner has."""
    return await database[USER_MODELS].count_documents({"owner_id": ObjectId(owner_id), "active_number": {"$ne": None}})


async def versions(database: Database, *, owner_id: str, name: str | None = None) -> list[ModelVersion]:
    """The owner's model versions (of one model, when named), by name and number."""
    query: dict[str, Any] = {"owner_id": ObjectId(owner_id)}
    if name is not None:
        query["name"] = name
    cursor = database[MODEL_VERSIONS].find(query).sort([("name", 1), ("number", 1)])
    return [_version(document) async for document in cursor]


async def find_version(database: Database, *, owner_id: str, name: str, number: int) -> ModelVersion | None:
    """One version of the owner's model."""
    document = await database[MODEL_VERSIONS].find_one({"owner_id": ObjectId(owner_id), "name": name, "number": number})
    return _version(document) if document else None


async def find_version_by_id(database: Database, version_id: str) -> ModelVersion | None:
    """A version by its document id (what an analysis records)."""
    document = await database[MODEL_VERSIONS].find_one({"_id": ObjectId(version_id)})
    return _version(document) if document else None


async def delete_version(database: Database, version_id: str) -> None:
    """Remove a version's document (its files are the caller's to remove, after)."""
    await database[MODEL_VERSIONS].delete_one({"_id": ObjectId(version_id)})


async def delete_version_of_training(database: Database, training_id: str) -> ModelVersion | None:
    """Remove the version a training recorded, if any (the training lost its lease right after)."""
    document = await database[MODEL_VERSIONS].find_one_and_delete({"training_id": ObjectId(training_id)})
    return _version(document) if document else None


async def delete_model(database: Database, *, owner_id: str, name: str) -> None:
    """Remove the owner's model document (its versions are the caller's to remove, first)."""
    await database[USER_MODELS].delete_one({"owner_id": ObjectId(owner_id), "name": name})


async def referenced_file_ids(database: Database, file_ids: list[str]) -> set[str]:
    """Which of these GridFS file ids a model version refers to (the orphan sweep's question)."""
    ids = [ObjectId(file_id) for file_id in file_ids]
    if not ids:
        return set()
    cursor = database[MODEL_VERSIONS].find(
        {"$or": [{f"files.{part}": {"$in": ids}} for part in ("model", "metadata", "report")]}, {"files": 1}
    )
    return {str(file_id) async for document in cursor for file_id in document["files"].values() if file_id}
