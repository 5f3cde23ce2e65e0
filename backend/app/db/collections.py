"""Every collection and GridFS bucket the service uses, with its indexes: the one place for both.

Bulk data never becomes a document per row: uploaded files, their parsed tables and score arrays live in
GridFS; the only per-item documents are pages of anomalies, which users page through by index range.
"""

from __future__ import annotations

import contextlib
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import CollectionInvalid, OperationFailure

Database = AsyncDatabase[dict[str, Any]]
Collection = AsyncCollection[dict[str, Any]]

USERS = "users"
DATASETS = "datasets"
# Analyses (jobs and their state); the stored name is older than the code's word for them.
ANALYSES = "analysis_sessions"
# Anomalies of an analysed session, highest score first, up to ANOMALY_PAGE_SIZE items and ANOMALY_PAGE_BYTES
# of BSON to a document (a wide table's rows fill a page sooner), each page knowing the rank of its first item.
ANOMALY_PAGES = "anomaly_pages"
ANOMALY_PAGE_SIZE = 500
ANOMALY_PAGE_BYTES = 4 * 2**20  # well under MongoDB's 16 MB document limit
# Failed logins per username or address and time window (documents expire with their window).
LOGIN_FAILURES = "login_failures"
# Registrations per client address and time window (documents expire with their window).
REGISTRATIONS = "registrations"

# Trainings of users' models (jobs, like analyses); users' models (owner + name, the active version) and
# their versions (lineage, file ids: the files are in the MODELS_BUCKET).
TRAININGS = "trainings"
USER_MODELS = "user_models"
MODEL_VERSIONS = "model_versions"
# Analysts' labels on datasets' rows ("anomaly" or "normal"), one document per labelled row.
LABELS = "labels"
# The job worker processes alive now, with the deployment model versions each serves (documents expire).
WORKERS = "workers"
# A capped collection of "new job" signals that idle workers tail, so a queued job starts at once without
# frequent polling; it holds no state (losing a signal only delays a job until the next poll).
JOB_SIGNALS = "job_signals"
JOB_SIGNALS_BYTES = 1 << 20

# GridFS buckets: uploaded files and their parsed tables; score arrays and drift reports of analyses; users'
# model files.
UPLOADS_BUCKET = "uploads"
RESULTS_BUCKET = "results"
MODELS_BUCKET = "models"

INDEXES: dict[str, list[IndexModel]] = {
    USERS: [IndexModel([("username", ASCENDING)], unique=True, name="username_unique")],
    DATASETS: [
        IndexModel([("owner_id", ASCENDING), ("uploaded_at", DESCENDING)], name="owner_newest_first"),
        IndexModel([("file_id", ASCENDING)], name="upload_file"),
        IndexModel([("table_file_id", ASCENDING)], name="table_file"),
    ],
    ANALYSES: [
        # One live analysis per dataset and settings: what makes "reused" safe under concurrent requests.
        IndexModel(
            [("active_key", ASCENDING)],
            unique=True,
            partialFilterExpression={"active_key": {"$exists": True}},
            name="active_key_unique",
        ),
        IndexModel([("status", ASCENDING), ("queue_rank", ASCENDING), ("created_at", ASCENDING)], name="fair_claim"),
        IndexModel([("status", ASCENDING), ("lease_expires_at", ASCENDING)], name="expired_leases"),
        IndexModel([("dataset_id", ASCENDING), ("created_at", DESCENDING)], name="dataset_sessions"),
        IndexModel([("owner_id", ASCENDING), ("status", ASCENDING)], name="owner_in_progress"),
        IndexModel([("model_version_id", ASCENDING), ("status", ASCENDING)], name="model_version_in_use"),
    ],
    TRAININGS: [
        # At most one running training per owner: a second claim for the same owner fails atomically.
        IndexModel(
            [("running_owner", ASCENDING)],
            unique=True,
            partialFilterExpression={"running_owner": {"$exists": True}},
            name="one_running_per_owner",
        ),
        IndexModel([("status", ASCENDING), ("created_at", ASCENDING)], name="claim"),
        IndexModel([("owner_id", ASCENDING), ("status", ASCENDING)], name="owner_in_progress"),
        IndexModel([("dataset_id", ASCENDING), ("status", ASCENDING)], name="dataset_trainings"),
    ],
    LABELS: [
        IndexModel([("dataset_id", ASCENDING), ("row", ASCENDING)], unique=True, name="dataset_row"),
        IndexModel([("dataset_id", ASCENDING), ("label", ASCENDING)], name="dataset_label"),
    ],
    USER_MODELS: [IndexModel([("owner_id", ASCENDING), ("name", ASCENDING)], unique=True, name="owner_name")],
    MODEL_VERSIONS: [
        IndexModel(
            [("owner_id", ASCENDING), ("name", ASCENDING), ("number", ASCENDING)], unique=True, name="owner_name_number"
        ),
        # One version per training, however many attempts it took.
        IndexModel([("training_id", ASCENDING)], unique=True, name="one_per_training"),
        IndexModel([("files.model", ASCENDING)], name="model_file"),
        IndexModel([("files.metadata", ASCENDING)], name="metadata_file"),
        IndexModel([("files.report", ASCENDING)], name="report_file"),
    ],
    WORKERS: [IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0, name="expire_when_silent")],
    ANOMALY_PAGES: [
        IndexModel(
            [("session_id", ASCENDING), ("attempt", ASCENDING), ("page", ASCENDING)],
            unique=True,
            name="attempt_page",
        ),
        IndexModel(
            [("session_id", ASCENDING), ("attempt", ASCENDING), ("first", ASCENDING)], name="attempt_first_rank"
        ),
    ],
    LOGIN_FAILURES: [IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0, name="expire_with_window")],
    REGISTRATIONS: [IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0, name="expire_with_window")],
}

# Indexes earlier versions created that now stand in the way (pages were unique per analysis and page number
# before every attempt wrote its own): dropped at startup.
RETIRED_INDEXES: dict[str, list[str]] = {ANOMALY_PAGES: ["session_page", "session_first_rank"], ANALYSES: ["claim"]}


async def ensure_indexes(database: Database) -> None:
    """Create the indexes and the signal collection that are missing (idempotent; run at every startup)."""
    for collection_name, names in RETIRED_INDEXES.items():
        existing = {index["name"] async for index in await database[collection_name].list_indexes()}
        for name in set(names) & existing:
            with contextlib.suppress(OperationFailure):  # another process dropped it first
                await database[collection_name].drop_index(name)
    for collection_name, indexes in INDEXES.items():
        await database[collection_name].create_indexes(indexes)
    if JOB_SIGNALS not in await database.list_collection_names(filter={"name": JOB_SIGNALS}):
        with contextlib.suppress(CollectionInvalid, OperationFailure):  # another process created it first
            await database.create_collection(JOB_SIGNALS, capped=True, size=JOB_SIGNALS_BYTES)
    # A tailable cursor on an empty capped collection ends at once: keep one signal in it.
    if await database[JOB_SIGNALS].estimated_document_count() == 0:
        await database[JOB_SIGNALS].insert_one({"kind": "start"})
