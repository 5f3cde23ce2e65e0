"""Analyses: durable jobs that any worker process may claim, with a lease, and run.

A claim sets a lease (``lease_owner`` and ``lease_expires_at``) and counts an attempt; every later write of the
job's state or results names the owner and the attempt, so a worker that lost its lease (it stalled, another
worker took over after the lease ran out) changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from app.core.states import AnalysisStatus, ModelKind
from app.db.collections import ANALYSES, Database

# An analysis in one of these states answers a repeated request for the same analysis ("reused").
LIVE_STATUSES = (AnalysisStatus.QUEUED, AnalysisStatus.ANALYZING, AnalysisStatus.ANALYZED)
# Waiting for, or holding, a worker: what a user's limit on analyses in progress counts.
IN_PROGRESS_STATUSES = (AnalysisStatus.QUEUED, AnalysisStatus.ANALYZING)


@dataclass(frozen=True)
class ModelChoice:
    """The model an analysis runs with: its name, where it comes from and the exact version."""

    name: str | None
    kind: ModelKind
    version: str  # a content hash of the model's files; "fallback-training" for fallback analyses
    version_id: str | None = None  # a user model's version document
    number: int | None = None  # a user model's version number (1, 2, ...)


@dataclass(frozen=True)
class Analysis:
    """One analysis of one dataset with one model version and threshold."""

    id: str
    dataset_id: str
    owner_id: str
    model: ModelChoice
    threshold_percentile: float
    status: AnalysisStatus
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
    drift_file_id: str | None = None
    feature_names: list[str] = field(default_factory=list)
    # The attempt whose anomaly pages are the analysis's results (set when it completes).
    results_attempt: int | None = None
    # The drift report's summary (verdict, shifted columns, advice); the whole report is in its file.
    drift: dict[str, Any] | None = None
    # The model's held-out training scores at percentiles 0, 0.1, ..., 100: turns a score into a percentile.
    training_score_quantiles: list[float] = field(default_factory=list)

    @property
    def file_ids(self) -> list[str]:
        """The analysis's result files in GridFS (none before it is analysed)."""
        files = (self.scores_file_id, self.top_columns_file_id, self.drift_file_id)
        return [file_id for file_id in files if file_id is not None]


@dataclass(frozen=True)
class ResultsRecord:
    """What a completed attempt stores in its analysis document."""

    row_count: int
    anomaly_count: int
    threshold: float
    timings: dict[str, float]
    scores_file_id: str
    top_columns_file_id: str
    drift_file_id: str
    feature_names: list[str]
    drift: dict[str, Any]
    training_score_quantiles: list[float]


def _optional_id(value: Any) -> str | None:
    return str(value) if value else None


def _analysis(document: dict[str, Any]) -> Analysis:
    return Analysis(
        id=str(document["_id"]),
        dataset_id=str(document["dataset_id"]),
        owner_id=str(document["owner_id"]),
        model=ModelChoice(
            name=document.get("model"),
            kind=ModelKind(document.get("model_kind", ModelKind.DEPLOYMENT.value)),
            version=document["model_version"],
            version_id=_optional_id(document.get("model_version_id")),
            number=document.get("model_number"),
        ),
        threshold_percentile=document["threshold_percentile"],
        status=AnalysisStatus(document["status"]),
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
        scores_file_id=_optional_id(document.get("scores_file_id")),
        top_columns_file_id=_optional_id(document.get("top_columns_file_id")),
        drift_file_id=_optional_id(document.get("drift_file_id")),
        feature_names=list(document.get("feature_names") or []),
        results_attempt=document.get("results_attempt"),
        drift=document.get("drift"),
        training_score_quantiles=list(document.get("training_score_quantiles") or []),
    )


async def find(database: Database, analysis_id: str) -> Analysis | None:
    """The analysis with this id, if any."""
    document = await database[ANALYSES].find_one({"_id": ObjectId(analysis_id)})
    return _analysis(document) if document else None


async def find_many(database: Database, analysis_ids: Iterable[str]) -> dict[str, Analysis]:
    """The analyses with these ids, by id."""
    ids = [ObjectId(analysis_id) for analysis_id in analysis_ids]
    if not ids:
        return {}
    cursor = database[ANALYSES].find({"_id": {"$in": ids}})
    return {str(document["_id"]): _analysis(document) async for document in cursor}


async def find_live(database: Database, active_key: str) -> Analysis | None:
    """The queued, running or finished analysis holding ``active_key``, if any."""
    document = await database[ANALYSES].find_one({"active_key": active_key, "status": {"$in": list(LIVE_STATUSES)}})
    return _analysis(document) if document else None


async def count_in_progress_for_owner(database: Database, owner_id: str) -> int:
    """How many of the owner's analyses are queued or running."""
    return await database[ANALYSES].count_documents(
        {"owner_id": ObjectId(owner_id), "status": {"$in": list(IN_PROGRESS_STATUSES)}}
    )


async def insert(
    database: Database,
    *,
    dataset_id: str,
    owner_id: str,
    model: ModelChoice,
    threshold_percentile: float,
    active_key: str,
    queue_rank: int,
) -> Analysis | None:
    """Queue an analysis; ``None`` when another live analysis already holds ``active_key``.

    ``queue_rank`` orders claims across owners: an owner's n-th analysis in progress waits behind every other
    owner's first, so one user's many analyses never hold back another user's one.
    """
    document = {
        "dataset_id": ObjectId(dataset_id),
        "owner_id": ObjectId(owner_id),
        "model": model.name,
        "model_kind": model.kind.value,
        "model_version": model.version,
        "model_version_id": ObjectId(model.version_id) if model.version_id else None,
        "model_number": model.number,
        "threshold_percentile": threshold_percentile,
        "active_key": active_key,
        "status": AnalysisStatus.QUEUED.value,
        "progress": 0,
        "attempts": 0,
        "queue_rank": queue_rank,
        "created_at": datetime.now(UTC),
    }
    try:
        await database[ANALYSES].insert_one(document)
    except DuplicateKeyError:
        return None
    return _analysis(document)


async def delete_queued(database: Database, analysis_id: str) -> None:
    """Take back an analysis that was just queued and never claimed (a limit turned out to be passed)."""
    await database[ANALYSES].delete_one({"_id": ObjectId(analysis_id), "status": AnalysisStatus.QUEUED.value})


async def retire(database: Database, active_key: str) -> None:
    """Release ``active_key`` so a new analysis may take it (``force``); the old analyses stay readable."""
    await database[ANALYSES].update_many({"active_key": active_key}, {"$unset": {"active_key": ""}})


async def cancel_queued_for_dataset(database: Database, *, dataset_id: str, newer_id: str) -> int:
    """Cancel the dataset's queued analyses that ``newer_id`` supersedes; how many were cancelled."""
    result = await database[ANALYSES].update_many(
        {
            "dataset_id": ObjectId(dataset_id),
            "status": AnalysisStatus.QUEUED.value,
            "_id": {"$ne": ObjectId(newer_id)},
        },
        {
            "$set": {"status": AnalysisStatus.CANCELLED.value, "finished_at": datetime.now(UTC)},
            "$unset": {"active_key": ""},
        },
    )
    return result.modified_count


def _claimable(now: datetime, deployment_versions: list[str], user_models: bool) -> dict[str, Any]:
    runnable: list[dict[str, Any]] = [{"model_version": {"$in": deployment_versions}}]
    if user_models:
        runnable.append({"model_kind": ModelKind.USER.value})
    return {
        "$and": [
            {
                "$or": [
                    {"status": AnalysisStatus.QUEUED.value},
                    {"status": AnalysisStatus.ANALYZING.value, "lease_expires_at": {"$lt": now}},
                ]
            },
            {"$or": runnable},
        ]
    }


async def claim_next(
    database: Database, *, worker_id: str, lease_seconds: float, deployment_versions: list[str], user_models: bool
) -> Analysis | None:
    """Atomically take the next analysis this worker can run: queued, or running with an expired lease.

    The next one is the lowest ``queue_rank`` (fair across owners), oldest first. ``deployment_versions`` are the
    model versions (fallback training included) this worker serves from its disk; user models come from the
    database, so any worker that runs them can take theirs.
    """
    now = datetime.now(UTC)
    document = await database[ANALYSES].find_one_and_update(
        _claimable(now, deployment_versions, user_models),
        {
            "$set": {
                "status": AnalysisStatus.ANALYZING.value,
                "progress": 1,
                "lease_owner": worker_id,
                "lease_expires_at": now + timedelta(seconds=lease_seconds),
                "started_at": now,
            },
            "$inc": {"attempts": 1},
        },
        sort=[("queue_rank", 1), ("created_at", 1)],
        return_document=ReturnDocument.AFTER,
    )
    return _analysis(document) if document else None


def _owned(analysis_id: str, worker_id: str, attempt: int) -> dict[str, Any]:
    return {
        "_id": ObjectId(analysis_id),
        "lease_owner": worker_id,
        "attempts": attempt,
        "status": AnalysisStatus.ANALYZING.value,
    }


async def heartbeat(
    database: Database, analysis_id: str, *, worker_id: str, attempt: int, progress: int, lease_seconds: float
) -> bool:
    """Record progress and extend the lease; ``False`` when the worker no longer holds it."""
    result = await database[ANALYSES].update_one(
        _owned(analysis_id, worker_id, attempt),
        {"$set": {"progress": progress, "lease_expires_at": datetime.now(UTC) + timedelta(seconds=lease_seconds)}},
    )
    return result.matched_count == 1


async def holds_lease(database: Database, analysis_id: str, *, worker_id: str, attempt: int) -> bool:
    """Whether the worker still holds the analysis's lease (checked before each write of its results)."""
    return await database[ANALYSES].count_documents(_owned(analysis_id, worker_id, attempt), limit=1) == 1


async def complete(
    database: Database, analysis_id: str, *, worker_id: str, attempt: int, results: ResultsRecord
) -> bool:
    """Mark the analysis analysed with its results; ``False`` (nothing written) when the lease was lost."""
    result = await database[ANALYSES].update_one(
        _owned(analysis_id, worker_id, attempt),
        {
            "$set": {
                "status": AnalysisStatus.ANALYZED.value,
                "progress": 100,
                "row_count": results.row_count,
                "anomaly_count": results.anomaly_count,
                "threshold": results.threshold,
                "timings": results.timings,
                "scores_file_id": ObjectId(results.scores_file_id),
                "top_columns_file_id": ObjectId(results.top_columns_file_id),
                "drift_file_id": ObjectId(results.drift_file_id),
                "feature_names": results.feature_names,
                "results_attempt": attempt,
                "drift": results.drift,
                "training_score_quantiles": results.training_score_quantiles,
                "finished_at": datetime.now(UTC),
            },
            "$unset": {"lease_owner": "", "lease_expires_at": ""},
        },
    )
    return result.matched_count == 1


def _failed(error: str) -> dict[str, Any]:
    return {
        "$set": {"status": AnalysisStatus.FAILED.value, "error": error, "finished_at": datetime.now(UTC)},
        "$unset": {"lease_owner": "", "lease_expires_at": "", "active_key": ""},
    }


async def fail(
    database: Database, analysis_id: str, *, worker_id: str, attempt: int, error: str, timings: dict[str, float]
) -> None:
    """Mark the analysis failed with the reason; a later request for the same analysis starts afresh."""
    update = _failed(error)
    update["$set"]["timings"] = timings
    await database[ANALYSES].update_one(_owned(analysis_id, worker_id, attempt), update)


async def fail_unserved(
    database: Database, *, served_versions: list[str], queued_before: datetime, error: str
) -> list[Analysis]:
    """Fail the queued deployment-model analyses that no live worker serves, queued before ``queued_before``."""
    query = {
        "status": AnalysisStatus.QUEUED.value,
        "model_kind": {"$ne": ModelKind.USER.value},
        "model_version": {"$nin": served_versions},
        "created_at": {"$lt": queued_before},
    }
    stuck = [_analysis(document) async for document in database[ANALYSES].find(query)]
    for analysis in stuck:
        await database[ANALYSES].update_one(
            {"_id": ObjectId(analysis.id), "status": AnalysisStatus.QUEUED.value}, _failed(error)
        )
    return stuck


async def release(database: Database, analysis_id: str, *, worker_id: str, attempt: int) -> None:
    """Put a claimed analysis back in the queue, uncounted (the worker is shutting down)."""
    await database[ANALYSES].update_one(
        _owned(analysis_id, worker_id, attempt),
        {
            "$set": {"status": AnalysisStatus.QUEUED.value, "progress": 0},
            "$unset": {"lease_owner": "", "lease_expires_at": "", "started_at": ""},
            "$inc": {"attempts": -1},
        },
    )


async def requeue(database: Database, analysis_id: str, *, worker_id: str, attempt: int) -> None:
    """Put a claimed analysis back in the queue after a failure worth retrying (the attempt still counts)."""
    await database[ANALYSES].update_one(
        _owned(analysis_id, worker_id, attempt),
        {
            "$set": {"status": AnalysisStatus.QUEUED.value, "progress": 0},
            "$unset": {"lease_owner": "", "lease_expires_at": "", "started_at": ""},
        },
    )


async def count_in_progress(database: Database) -> tuple[int, int]:
    """How many analyses wait in the queue, and how many are being run, over every worker."""
    collection = database[ANALYSES]
    queued = await collection.count_documents({"status": AnalysisStatus.QUEUED.value})
    analyzing = await collection.count_documents({"status": AnalysisStatus.ANALYZING.value})
    return queued, analyzing


async def find_for_dataset(database: Database, dataset_id: str) -> list[Analysis]:
    """Every analysis of a dataset, in any state, oldest first."""
    cursor = database[ANALYSES].find({"dataset_id": ObjectId(dataset_id)}).sort([("created_at", 1), ("_id", 1)])
    return [_analysis(document) async for document in cursor]


async def uses_model_version(database: Database, version_id: str) -> bool:
    """Whether an analysis queued or running uses this user model version."""
    query = {"model_version_id": ObjectId(version_id), "status": {"$in": list(IN_PROGRESS_STATUSES)}}
    return await database[ANALYSES].count_documents(query, limit=1) == 1


async def delete(database: Database, analysis_ids: Iterable[str]) -> None:
    """Delete these analysis documents (their results are the caller's to remove, first)."""
    ids = [ObjectId(analysis_id) for analysis_id in analysis_ids]
    if ids:
        await database[ANALYSES].delete_many({"_id": {"$in": ids}})


async def delete_for_dataset(database: Database, dataset_id: str) -> list[Analysis]:
    """Delete every analysis of a dataset and return them (their results are the caller's to remove)."""
    collection = database[ANALYSES]
    query = {"dataset_id": ObjectId(dataset_id)}
    removed = [_analysis(document) async for document in collection.find(query)]
    await collection.delete_many(query)
    return removed


async def ids_in(database: Database, analysis_ids: Iterable[str]) -> set[str]:
    """Which of these analysis ids still exist (the orphan sweep's question)."""
    ids = [ObjectId(analysis_id) for analysis_id in analysis_ids if ObjectId.is_valid(analysis_id)]
    if not ids:
        return set()
    cursor = database[ANALYSES].find({"_id": {"$in": ids}}, {"_id": 1})
    return {str(document["_id"]) async for document in cursor}
