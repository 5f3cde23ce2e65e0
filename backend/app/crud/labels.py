"""Analysts' labels on a dataset's rows: a row confirmed as an anomaly, or marked as expected (normal).

Labels belong to the dataset (one document per labelled row), so they survive re-analysis; they go with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from bson import ObjectId

from app.db.collections import LABELS, Database


class Label(StrEnum):
    """What an analyst says of a row."""

    ANOMALY = "anomaly"
    NORMAL = "normal"


@dataclass(frozen=True)
class RowLabel:
    """One labelled row."""

    row: int
    label: Label
    note: str | None
    updated_at: datetime


def _label(document: dict[str, Any]) -> RowLabel:
    return RowLabel(document["row"], Label(document["label"]), document.get("note"), document["updated_at"])


async def put(database: Database, *, dataset_id: str, row: int, label: Label, note: str | None) -> RowLabel:
    """Label a row (replacing its earlier label)."""
    now = datetime.now(UTC)
    await database[LABELS].update_one(
        {"dataset_id": ObjectId(dataset_id), "row": row},
        {"$set": {"label": label.value, "note": note, "updated_at": now}},
        upsert=True,
    )
    return RowLabel(row, label, note, now)


async def clear(database: Database, *, dataset_id: str, row: int) -> None:
    """Remove a row's label."""
    await database[LABELS].delete_one({"dataset_id": ObjectId(dataset_id), "row": row})


async def count(database: Database, dataset_id: str) -> int:
    """How many rows of the dataset are labelled."""
    return await database[LABELS].count_documents({"dataset_id": ObjectId(dataset_id)})


async def for_dataset(database: Database, dataset_id: str) -> list[RowLabel]:
    """Every label of the dataset, by row."""
    cursor = database[LABELS].find({"dataset_id": ObjectId(dataset_id)}).sort("row", 1)
    return [_label(document) async for document in cursor]


async def for_rows(database: Database, dataset_id: str, rows: list[int]) -> dict[int, RowLabel]:
    """The labels of these rows, by row."""
    if not rows:
        return {}
    cursor = database[LABELS].find({"dataset_id": ObjectId(dataset_id), "row": {"$in": rows}})
    return {document["row"]: _label(document) async for document in cursor}


async def anomalous_rows(database: Database, dataset_id: str) -> list[int]:
    """The rows labelled as anomalies (left out when a model is trained from the dataset)."""
    cursor = database[LABELS].find({"dataset_id": ObjectId(dataset_id), "label": Label.ANOMALY.value}, {"row": 1})
    return [document["row"] async for document in cursor]


async def delete_for_dataset(database: Database, dataset_id: str) -> None:
    """Remove every label of the dataset."""
    await database[LABELS].delete_many({"dataset_id": ObjectId(dataset_id)})
