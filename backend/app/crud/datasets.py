"""Dataset documents: one per upload, describing the file stored in GridFS."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId

from app.db.collections import DATASETS, Database


@dataclass(frozen=True)
class Dataset:
    """An uploaded table: who owns it, what it holds and where its bytes are."""

    id: str
    owner_id: str
    filename: str
    content_type: str | None
    size: int
    sha256: str
    row_count: int
    column_count: int
    columns: list[str]
    uploaded_at: datetime
    file_id: str
    table_file_id: str
    latest_session_id: str | None
    # What the reader skipped or decoded otherwise (title lines, lines not in UTF-8), in a user's words.
    notes: list[str] = field(default_factory=list)
    table_size: int = 0


@dataclass(frozen=True)
class StorageUsage:
    """How much one owner keeps: datasets, and bytes of their files and parsed tables."""

    datasets: int
    bytes: int


def _dataset(document: dict[str, Any]) -> Dataset:
    latest = document.get("latest_session_id")
    return Dataset(
        id=str(document["_id"]),
        owner_id=str(document["owner_id"]),
        filename=document["filename"],
        content_type=document.get("content_type"),
        size=document["size"],
        sha256=document["sha256"],
        row_count=document["row_count"],
        column_count=document["column_count"],
        columns=list(document["columns"]),
        uploaded_at=document["uploaded_at"],
        file_id=str(document["file_id"]),
        table_file_id=str(document["table_file_id"]),
        latest_session_id=str(latest) if latest else None,
        notes=list(document.get("notes", [])),
        table_size=document.get("table_size", 0),
    )


async def insert(
    database: Database,
    *,
    owner_id: str,
    filename: str,
    content_type: str | None,
    size: int,
    sha256: str,
    columns: list[str],
    row_count: int,
    file_id: str,
    table_file_id: str,
    table_size: int = 0,
    notes: list[str] | None = None,
) -> Dataset:
    """Record an upload whose file and parsed table are already in GridFS."""
    document = {
        "owner_id": ObjectId(owner_id),
        "filename": filename,
        "content_type": content_type,
        "size": size,
        "sha256": sha256,
        "row_count": row_count,
        "column_count": len(columns),
        "columns": columns,
        "uploaded_at": datetime.now(UTC),
        "file_id": ObjectId(file_id),
        "table_file_id": ObjectId(table_file_id),
        "latest_session_id": None,
        "table_size": table_size,
        "notes": notes or [],
    }
    await database[DATASETS].insert_one(document)
    return _dataset(document)


async def usage(database: Database, owner_id: str) -> StorageUsage:
    """The owner's dataset count and stored bytes (uploaded files and parsed tables), by the owner index."""
    pipeline: list[dict[str, Any]] = [
        {"$match": {"owner_id": ObjectId(owner_id)}},
        {
            "$group": {
                "_id": None,
                "datasets": {"$sum": 1},
                "bytes": {"$sum": {"$add": ["$size", {"$ifNull": ["$table_size", 0]}]}},
            }
        },
    ]
    cursor = await database[DATASETS].aggregate(pipeline)
    totals = await cursor.to_list(1)
    return StorageUsage(totals[0]["datasets"], totals[0]["bytes"]) if totals else StorageUsage(0, 0)


async def find(database: Database, dataset_id: str, owner_id: str | None = None) -> Dataset | None:
    """The dataset with this id (and this owner, when given); a malformed id finds nothing."""
    if not ObjectId.is_valid(dataset_id):
        return None
    query: dict[str, Any] = {"_id": ObjectId(dataset_id)}
    if owner_id is not None:
        query["owner_id"] = ObjectId(owner_id)
    document = await database[DATASETS].find_one(query)
    return _dataset(document) if document else None


async def list_owned(database: Database, owner_id: str, limit: int, offset: int) -> list[Dataset]:
    """The owner's datasets, newest first."""
    cursor = (
        database[DATASETS]
        .find({"owner_id": ObjectId(owner_id)})
        .sort([("uploaded_at", -1), ("_id", -1)])
        .skip(offset)
        .limit(limit)
    )
    return [_dataset(document) async for document in cursor]


async def set_latest_session(database: Database, dataset_id: str, session_id: str) -> None:
    """Point the dataset's status at this analysis session."""
    await database[DATASETS].update_one(
        {"_id": ObjectId(dataset_id)}, {"$set": {"latest_session_id": ObjectId(session_id)}}
    )


async def delete(database: Database, dataset_id: str) -> bool:
    """Remove the dataset document; whether it existed."""
    result = await database[DATASETS].delete_one({"_id": ObjectId(dataset_id)})
    return result.deleted_count == 1


async def referenced_file_ids(database: Database, file_ids: list[str]) -> set[str]:
    """Which of these GridFS file ids a dataset refers to (as its upload or its parsed table)."""
    ids = [ObjectId(file_id) for file_id in file_ids]
    if not ids:
        return set()
    cursor = database[DATASETS].find(
        {"$or": [{"file_id": {"$in": ids}}, {"table_file_id": {"$in": ids}}]}, {"file_id": 1, "table_file_id": 1}
    )
    referenced: set[str] = set()
    async for document in cursor:
        referenced |= {str(document["file_id"]), str(document["table_file_id"])}
    return referenced
