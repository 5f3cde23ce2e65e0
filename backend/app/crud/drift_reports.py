"""Full drift reports of analyses, one document per analysis attempt (the analysis holds only the summary)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bson import ObjectId

from app.db.collections import DRIFT_REPORTS, Database


def _key(analysis_id: str, attempt: int) -> str:
    return f"{analysis_id}:{attempt}"


async def insert(database: Database, analysis_id: str, *, attempt: int, report: dict[str, Any]) -> None:
    """Store the report an attempt computed (another attempt's report never overwrites it)."""
    await database[DRIFT_REPORTS].replace_one(
        {"_id": _key(analysis_id, attempt)},
        {"session_id": ObjectId(analysis_id), "attempt": attempt, "report": report},
        upsert=True,
    )


async def find(database: Database, analysis_id: str, attempt: int) -> dict[str, Any] | None:
    """The report of the attempt an analysis completed with, if one was computed."""
    document = await database[DRIFT_REPORTS].find_one({"_id": _key(analysis_id, attempt)})
    return dict(document["report"]) if document else None


async def delete_for_analyses(database: Database, analysis_ids: Iterable[str]) -> None:
    """Remove the reports of these analyses, whichever attempt computed them."""
    ids = [ObjectId(analysis_id) for analysis_id in analysis_ids]
    if ids:
        await database[DRIFT_REPORTS].delete_many({"session_id": {"$in": ids}})


async def delete_other_attempts(database: Database, analysis_id: str, *, kept_attempt: int) -> None:
    """Remove the reports of attempts other than the one an analysis completed with."""
    await database[DRIFT_REPORTS].delete_many({"session_id": ObjectId(analysis_id), "attempt": {"$ne": kept_attempt}})
