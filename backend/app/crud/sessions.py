"""Analysis sessions: durable jobs that any API process may claim, with a lease, and run."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from app.db.collections import ANALYSIS_SESSIONS, Database


class SessionStatus(StrEnum):
    """Where an analysis is in its life."""

    QUEUED = "queued"
    ANALYZING = "analyzing"
    ANALYZED = "analyzed"
    FAILED = "failed"


# A session in one of these states answers a repeated request for the same analysis ("reused").
LIVE_STATUSES = (SessionStatus.QUEUED, SessionStatus.ANALYZING, SessionStatus.ANALYZED)


@dataclass(frozen=True)
class AnalysisSession:
    """One analysis of one dataset with one model and threshold."""

    id: str
    dataset_id: str
    owner_id: str
    model: str | None
    model_version: str
    fallback_train: bool
    threshold_percentile: float
    status: SessionStatus
    progress: int
    attempts: int
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    row_count: int | None = None
    anomaly_count: int | None = None
    threshold: float | None = None
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    scores_file_id: str | None = None
    top_columns_file_id: str | None = None
    feature_names: list[str] = field(default_factory=list)

    @property
    def file_ids(self) -> list[str]:
        """The session's result files in GridFS (none before it is analysed)."""
        return [file_id for file_id in (self.scores_file_id, self.top_columns_file_id) if file_id is not None]


def _session(document: dict[str, Any]) -> AnalysisSession:
    scores_file_id = document.get("scores_file_id")
    top_columns_file_id = document.get("top_columns_file_id")
    return AnalysisSession(
        id=str(document["_id"]),
        dataset_id=str(document["dataset_id"]),
        owner_id=str(document["owner_id"]),
        model=document.get("model"),
        model_version=document["model_version"],
        fallback_train=document.get("fallback_train", False),
        threshold_percentile=document["threshold_percentile"],
        status=SessionStatus(document["status"]),
        progress=document.get("progress", 0),
        attempts=document.get("attempts", 0),
        created_at=document["created_at"],
        started_at=document.get("started_at"),
        finished_at=document.get("finished_at"),
        row_count=document.get("row_count"),
        anomaly_count=document.get("anomaly_count"),
        threshold=document.get("threshold"),
        timings=dict(document.get("timings") or {}),
        error=document.get("error"),
        scores_file_id=str(scores_file_id) if scores_file_id else None,
        top_columns_file_id=str(top_columns_file_id) if top_columns_file_id else None,
        feature_names=list(document.get("feature_names") or []),
    )


async def find(database: Database, session_id: str) -> AnalysisSession | None:
    """The session with this id, if any."""
    document = await database[ANALYSIS_SESSIONS].find_one({"_id": ObjectId(session_id)})
    return _session(document) if document else None


async def find_many(database: Database, session_ids: Iterable[str]) -> dict[str, AnalysisSession]:
    """The sessions with these ids, by id."""
    ids = [ObjectId(session_id) for session_id in session_ids]
    if not ids:
        return {}
    cursor = database[ANALYSIS_SESSIONS].find({"_id": {"$in": ids}})
    return {str(document["_id"]): _session(document) async for document in cursor}


async def find_live(database: Database, active_key: str) -> AnalysisSession | None:
    """The queued, running or finished session holding ``active_key``, if any."""
    document = await database[ANALYSIS_SESSIONS].find_one(
        {"active_key": active_key, "status": {"$in": list(LIVE_STATUSES)}}
    )
    return _session(document) if document else None


async def insert(
    database: Database,
    *,
    dataset_id: str,
    owner_id: str,
    model: str | None,
    model_version: str,
    fallback_train: bool,
    threshold_percentile: float,
    active_key: str,
) -> AnalysisSession | None:
    """Queue a session; ``None`` when another live session already holds ``active_key``."""
    document = {
        "dataset_id": ObjectId(dataset_id),
        "owner_id": ObjectId(owner_id),
        "model": model,
        "model_version": model_version,
        "fallback_train": fallback_train,
        "threshold_percentile": threshold_percentile,
        "active_key": active_key,
        "status": SessionStatus.QUEUED.value,
        "progress": 0,
        "attempts": 0,
        "created_at": datetime.now(UTC),
    }
    try:
        await database[ANALYSIS_SESSIONS].insert_one(document)
    except DuplicateKeyError:
        return None
    return _session(document)


async def retire(database: Database, active_key: str) -> None:
    """Release ``active_key`` so a new session may take it (``force``); the old sessions stay readable."""
    await database[ANALYSIS_SESSIONS].update_many({"active_key": active_key}, {"$unset": {"active_key": ""}})


async def claim_next(
    database: Database, worker_id: str, lease_seconds: float, model_versions: list[str]
) -> AnalysisSession | None:
    """Atomically take the oldest queued session (or one whose lease ran out) this worker can run."""
    now = datetime.now(UTC)
    document = await database[ANALYSIS_SESSIONS].find_one_and_update(
        {
            "model_version": {"$in": model_versions},
            "$or": [
                {"status": SessionStatus.QUEUED.value},
                {"status": SessionStatus.ANALYZING.value, "lease_expires_at": {"$lt": now}},
            ],
        },
        {
            "$set": {
                "status": SessionStatus.ANALYZING.value,
                "progress": 1,
                "lease_owner": worker_id,
                "lease_expires_at": now + timedelta(seconds=lease_seconds),
                "started_at": now,
            },
            "$inc": {"attempts": 1},
        },
        sort=[("created_at", 1)],
        return_document=ReturnDocument.AFTER,
    )
    return _session(document) if document else None


def _owned(session_id: str, worker_id: str) -> dict[str, Any]:
    return {"_id": ObjectId(session_id), "lease_owner": worker_id, "status": SessionStatus.ANALYZING.value}


async def heartbeat(
    database: Database, session_id: str, worker_id: str, progress: int, lease_seconds: float
) -> bool:
    """Record progress and extend the lease; ``False`` when the worker no longer owns the session."""
    result = await database[ANALYSIS_SESSIONS].update_one(
        _owned(session_id, worker_id),
        {
            "$set": {
                "progress": progress,
                "lease_expires_at": datetime.now(UTC) + timedelta(seconds=lease_seconds),
            }
        },
    )
    return result.matched_count == 1


async def complete(
    database: Database,
    session_id: str,
    worker_id: str,
    *,
    row_count: int,
    anomaly_count: int,
    threshold: float,
    timings: dict[str, float],
    scores_file_id: str,
    top_columns_file_id: str,
    feature_names: list[str],
) -> bool:
    """Mark the session analysed; ``False`` (nothing written) when the worker no longer owns it."""
    result = await database[ANALYSIS_SESSIONS].update_one(
        _owned(session_id, worker_id),
        {
            "$set": {
                "status": SessionStatus.ANALYZED.value,
                "progress": 100,
                "row_count": row_count,
                "anomaly_count": anomaly_count,
                "threshold": threshold,
                "timings": timings,
                "scores_file_id": ObjectId(scores_file_id),
                "top_columns_file_id": ObjectId(top_columns_file_id),
                "feature_names": feature_names,
                "finished_at": datetime.now(UTC),
            },
            "$unset": {"lease_owner": "", "lease_expires_at": ""},
        },
    )
    return result.matched_count == 1


async def fail(database: Database, session_id: str, worker_id: str, error: str, timings: dict[str, float]) -> None:
    """Mark the session failed with the reason; a later request for the same analysis starts afresh."""
    await database[ANALYSIS_SESSIONS].update_one(
        _owned(session_id, worker_id),
        {
            "$set": {
                "status": SessionStatus.FAILED.value,
                "error": error,
                "timings": timings,
                "finished_at": datetime.now(UTC),
            },
            "$unset": {"lease_owner": "", "lease_expires_at": "", "active_key": ""},
        },
    )


async def release(database: Database, session_id: str, worker_id: str) -> None:
    """Put a claimed session back in the queue (the worker is shutting down)."""
    await database[ANALYSIS_SESSIONS].update_one(
        _owned(session_id, worker_id),
        {
            "$set": {"status": SessionStatus.QUEUED.value, "progress": 0},
            "$unset": {"lease_owner": "", "lease_expires_at": "", "started_at": ""},
            "$inc": {"attempts": -1},
        },
    )


async def requeue(database: Database, session_id: str, worker_id: str) -> None:
    """Put a claimed session back in the queue after a failure worth retrying (the attempt still counts)."""
    await database[ANALYSIS_SESSIONS].update_one(
        _owned(session_id, worker_id),
        {
            "$set": {"status": SessionStatus.QUEUED.value, "progress": 0},
            "$unset": {"lease_owner": "", "lease_expires_at": "", "started_at": ""},
        },
    )


async def count_in_progress(database: Database) -> tuple[int, int]:
    """How many sessions wait in the queue, and how many are being analysed, over every process."""
    collection = database[ANALYSIS_SESSIONS]
    queued = await collection.count_documents({"status": SessionStatus.QUEUED.value})
    analyzing = await collection.count_documents({"status": SessionStatus.ANALYZING.value})
    return queued, analyzing


async def find_for_dataset(database: Database, dataset_id: str) -> list[AnalysisSession]:
    """Every session of a dataset, in any state."""
    cursor = database[ANALYSIS_SESSIONS].find({"dataset_id": ObjectId(dataset_id)})
    return [_session(document) async for document in cursor]


async def delete_for_dataset(database: Database, dataset_id: str) -> list[AnalysisSession]:
    """Delete every session of a dataset and return them (their results are the caller's to remove)."""
    collection = database[ANALYSIS_SESSIONS]
    query = {"dataset_id": ObjectId(dataset_id)}
    removed = [_session(document) async for document in collection.find(query)]
    await collection.delete_many(query)
    return removed
