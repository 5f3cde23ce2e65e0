"""Trainings of users' models: durable jobs claimed by workers with a lease, like analyses.

At most one training per owner runs at a time: a running training holds ``running_owner`` (its owner's id),
which a unique partial index allows once per owner, so a second claim for the same owner fails atomically and
the worker takes another owner's training instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from app.core.states import TrainingStatus
from app.db.collections import TRAININGS, Database

IN_PROGRESS_STATUSES = (TrainingStatus.QUEUED, TrainingStatus.RUNNING)
# Claim attempts per look: each one that meets an owner already training leaves that owner out of the next.
CLAIM_ROUNDS = 5


@dataclass(frozen=True)
class Training:
    """One training of a user's model from one of their datasets."""

    id: str
    owner_id: str
    dataset_id: str
    name: str
    parameters: dict[str, Any]
    exclude_columns: list[str]
    status: TrainingStatus
    attempts: int
    created_at: datetime
    progress: dict[str, Any] = field(default_factory=dict)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    timings: dict[str, float] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    error: str | None = None
    # Why the training should stop at its next epoch, and how it then ends: "cancelled" by its owner, or
    # "failed" because its dataset was deleted.
    stop_reason: str | None = None
    stop_status: str | None = None


def _training(document: dict[str, Any]) -> Training:
    return Training(
        id=str(document["_id"]),
        owner_id=str(document["owner_id"]),
        dataset_id=str(document["dataset_id"]),
        name=document["name"],
        parameters=dict(document["parameters"]),
        exclude_columns=list(document.get("exclude_columns") or []),
        status=TrainingStatus(document["status"]),
        attempts=document.get("attempts", 0),
        created_at=document["created_at"],
        progress=dict(document.get("progress") or {}),
        started_at=document.get("started_at"),
        finished_at=document.get("finished_at"),
        timings=dict(document.get("timings") or {}),
        result=document.get("result"),
        error=document.get("error"),
        stop_reason=document.get("stop_reason"),
        stop_status=document.get("stop_status"),
    )


async def insert(
    database: Database,
    *,
    owner_id: str,
    dataset_id: str,
    name: str,
    parameters: dict[str, Any],
    exclude_columns: list[str],
) -> Training:
    """Queue a training."""
    document = {
        "owner_id": ObjectId(owner_id),
        "dataset_id": ObjectId(dataset_id),
        "name": name,
        "parameters": parameters,
        "exclude_columns": exclude_columns,
        "status": TrainingStatus.QUEUED.value,
        "attempts": 0,
        "progress": {},
        "created_at": datetime.now(UTC),
    }
    await database[TRAININGS].insert_one(document)
    return _training(document)


async def find(database: Database, training_id: str, owner_id: str | None = None) -> Training | None:
    """The training with this id (and this owner, when given); a malformed id finds nothing."""
    if not ObjectId.is_valid(training_id):
        return None
    query: dict[str, Any] = {"_id": ObjectId(training_id)}
    if owner_id is not None:
        query["owner_id"] = ObjectId(owner_id)
    document = await database[TRAININGS].find_one(query)
    return _training(document) if document else None


async def count_in_progress(database: Database, *, owner_id: str, name: str | None = None) -> int:
    """How many of the owner's trainings (of this model, when named) are queued or running."""
    query: dict[str, Any] = {"owner_id": ObjectId(owner_id), "status": {"$in": list(IN_PROGRESS_STATUSES)}}
    if name is not None:
        query["name"] = name
    return await database[TRAININGS].count_documents(query)


async def in_progress_names(database: Database, owner_id: str) -> set[str]:
    """The model names the owner's queued or running trainings will create versions of."""
    query = {"owner_id": ObjectId(owner_id), "status": {"$in": list(IN_PROGRESS_STATUSES)}}
    return {str(name) for name in await database[TRAININGS].distinct("name", query)}


async def claim_next(database: Database, *, worker_id: str, lease_seconds: float) -> Training | None:
    """Atomically take the oldest queued training (or one whose lease ran out) of an owner who has none running."""
    collection = database[TRAININGS]
    busy = await collection.distinct("running_owner", {"status": TrainingStatus.RUNNING.value})
    for _ in range(CLAIM_ROUNDS):
        now = datetime.now(UTC)
        try:
            document = await collection.find_one_and_update(
                {
                    "$or": [
                        {"status": TrainingStatus.QUEUED.value, "owner_id": {"$nin": busy}},
                        {"status": TrainingStatus.RUNNING.value, "lease_expires_at": {"$lt": now}},
                    ]
                },
                [
                    {
                        "$set": {
                            "status": TrainingStatus.RUNNING.value,
                            "running_owner": "$owner_id",
                            "lease_owner": worker_id,
                            "lease_expires_at": now + timedelta(seconds=lease_seconds),
                            "started_at": now,
                            "attempts": {"$add": [{"$ifNull": ["$attempts", 0]}, 1]},
                        }
                    }
                ],
                sort=[("created_at", 1)],
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            # The owner of the oldest one got a training running meanwhile: leave them out and look again.
            busy = await collection.distinct("running_owner", {"status": TrainingStatus.RUNNING.value})
            continue
        return _training(document) if document else None
    return None


def _owned(training_id: str, worker_id: str, attempt: int) -> dict[str, Any]:
    return {
        "_id": ObjectId(training_id),
        "lease_owner": worker_id,
        "attempts": attempt,
        "status": TrainingStatus.RUNNING.value,
    }


async def holds_lease(database: Database, training_id: str, *, worker_id: str, attempt: int) -> bool:
    """Whether the worker still holds the training's lease (checked before its version is recorded)."""
    return await database[TRAININGS].count_documents(_owned(training_id, worker_id, attempt), limit=1) == 1


async def heartbeat(
    database: Database,
    training_id: str,
    *,
    worker_id: str,
    attempt: int,
    progress: dict[str, Any],
    lease_seconds: float,
) -> Training | None:
    """Record progress and extend the lease; the training as it is now, or ``None`` once the lease is lost."""
    document = await database[TRAININGS].find_one_and_update(
        _owned(training_id, worker_id, attempt),
        {"$set": {"progress": progress, "lease_expires_at": datetime.now(UTC) + timedelta(seconds=lease_seconds)}},
        return_document=ReturnDocument.AFTER,
    )
    return _training(document) if document else None


def _ended(status: TrainingStatus, **fields: Any) -> dict[str, Any]:
    return {
        "$set": {"status": status.value, "finished_at": datetime.now(UTC), **fields},
        "$unset": {"lease_owner": "", "lease_expires_at": "", "running_owner": ""},
    }


async def complete(
    database: Database,
    training_id: str,
    *,
    worker_id: str,
    attempt: int,
    result: dict[str, Any],
    progress: dict[str, Any],
    timings: dict[str, float],
) -> bool:
    """Mark the training trained with its result and final progress; ``False`` (nothing written) when the lease
    was lost."""
    update = _ended(TrainingStatus.TRAINED, result=result, progress=progress, timings=timings)
    outcome = await database[TRAININGS].update_one(_owned(training_id, worker_id, attempt), update)
    return outcome.matched_count == 1


async def end(
    database: Database,
    training_id: str,
    *,
    worker_id: str,
    attempt: int,
    status: TrainingStatus,
    error: str | None,
    timings: dict[str, float],
) -> None:
    """End a claimed training as ``failed`` or ``cancelled``, with the reason."""
    update = _ended(status, error=error, timings=timings)
    await database[TRAININGS].update_one(_owned(training_id, worker_id, attempt), update)


async def cancel(database: Database, training: Training, reason: str) -> Training | None:
    """Cancel a training: a queued one ends at once; a running one is asked to stop at its next epoch."""
    collection = database[TRAININGS]
    queued = await collection.find_one_and_update(
        {"_id": ObjectId(training.id), "status": TrainingStatus.QUEUED.value},
        _ended(TrainingStatus.CANCELLED, error=reason),
        return_document=ReturnDocument.AFTER,
    )
    if queued is not None:
        return _training(queued)
    running = await collection.find_one_and_update(
        {"_id": ObjectId(training.id), "status": TrainingStatus.RUNNING.value},
        {"$set": {"stop_reason": reason, "stop_status": TrainingStatus.CANCELLED.value}},
        return_document=ReturnDocument.AFTER,
    )
    return _training(running) if running is not None else await find(database, training.id)


async def stop_for_dataset(database: Database, dataset_id: str, reason: str) -> None:
    """The dataset is being deleted: queued trainings of it fail now, running ones at their next epoch."""
    collection = database[TRAININGS]
    query: dict[str, Any] = {"dataset_id": ObjectId(dataset_id)}
    await collection.update_many(
        {**query, "status": TrainingStatus.QUEUED.value}, _ended(TrainingStatus.FAILED, error=reason)
    )
    await collection.update_many(
        {**query, "status": TrainingStatus.RUNNING.value},
        {"$set": {"stop_reason": reason, "stop_status": TrainingStatus.FAILED.value}},
    )


async def release(database: Database, training_id: str, *, worker_id: str, attempt: int) -> None:
    """Put a claimed training back in the queue, uncounted (the worker is shutting down)."""
    await database[TRAININGS].update_one(
        _owned(training_id, worker_id, attempt),
        {
            "$set": {"status": TrainingStatus.QUEUED.value, "progress": {}},
            "$unset": {"lease_owner": "", "lease_expires_at": "", "running_owner": "", "started_at": ""},
            "$inc": {"attempts": -1},
        },
    )


async def requeue(database: Database, training_id: str, *, worker_id: str, attempt: int) -> None:
    """Put a claimed training back in the queue after a failure worth retrying (the attempt still counts)."""
    await database[TRAININGS].update_one(
        _owned(training_id, worker_id, attempt),
        {
            "$set": {"status": TrainingStatus.QUEUED.value, "progress": {}},
            "$unset": {"lease_owner": "", "lease_expires_at": "", "running_owner": "", "started_at": ""},
        },
    )
