"""Every collection and GridFS bucket the service uses, with its indexes: the one place for both.

Bulk data never becomes a document per row: uploaded files, their parsed tables and score arrays live in
GridFS; the only per-item documents are pages of anomalies, which users page through by index range.
"""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

Database = AsyncDatabase[dict[str, Any]]
Collection = AsyncCollection[dict[str, Any]]

USERS = "users"
DATASETS = "datasets"
ANALYSIS_SESSIONS = "analysis_sessions"
# Anomalies of an analysed session, highest score first, up to ANOMALY_PAGE_SIZE items and ANOMALY_PAGE_BYTES
# of BSON to a document (a wide table's rows fill a page sooner), each page knowing the rank of its first item.
ANOMALY_PAGES = "anomaly_pages"
ANOMALY_PAGE_SIZE = 500
ANOMALY_PAGE_BYTES = 4 * 2**20  # well under MongoDB's 16 MB document limit
# Failed logins per username or address and time window (documents expire with their window).
LOGIN_FAILURES = "login_failures"
# Registrations per client address and time window (documents expire with their window).
REGISTRATIONS = "registrations"

# GridFS buckets: uploaded files and their parsed tables; score arrays of analysed sessions.
UPLOADS_BUCKET = "uploads"
RESULTS_BUCKET = "results"

INDEXES: dict[str, list[IndexModel]] = {
    USERS: [IndexModel([("username", ASCENDING)], unique=True, name="username_unique")],
    DATASETS: [IndexModel([("owner_id", ASCENDING), ("uploaded_at", DESCENDING)], name="owner_newest_first")],
    ANALYSIS_SESSIONS: [
        # One live session per dataset and settings: what makes "reused" safe under concurrent requests.
        IndexModel(
            [("active_key", ASCENDING)],
            unique=True,
            partialFilterExpression={"active_key": {"$exists": True}},
            name="active_key_unique",
        ),
        IndexModel([("status", ASCENDING), ("model_version", ASCENDING), ("created_at", ASCENDING)], name="claim"),
        IndexModel([("status", ASCENDING), ("lease_expires_at", ASCENDING)], name="expired_leases"),
        IndexModel([("dataset_id", ASCENDING), ("created_at", DESCENDING)], name="dataset_sessions"),
    ],
    ANOMALY_PAGES: [
        IndexModel([("session_id", ASCENDING), ("page", ASCENDING)], unique=True, name="session_page"),
        IndexModel([("session_id", ASCENDING), ("first", ASCENDING)], name="session_first_rank"),
    ],
    LOGIN_FAILURES: [IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0, name="expire_with_window")],
    REGISTRATIONS: [IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0, name="expire_with_window")],
}


async def ensure_indexes(database: Database) -> None:
    """Create the indexes that are missing (idempotent; run at every startup)."""
    for collection_name, indexes in INDEXES.items():
        await database[collection_name].create_indexes(indexes)
