"""Readiness as an outsider may see it: whether each dependency is usable, and what to do if not.

``/ready`` needs no token, so its answer names no host, no exception text and no file path; the details of a
failed check go to the service's log, where whoever can fix it looks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from pymongo.errors import PyMongoError

from app.db.collections import Database
from app.services import job_queue
from app.services.model_registry import ModelRegistry
from app.utils.anomaly_detector import TRAINING_COMMAND

logger = logging.getLogger(__name__)

DatabaseCheck = Literal["ok", "unreachable"]
ModelCheck = Literal["ok", "missing"]
WorkersCheck = Literal["ok", "none", "unknown"]
DATABASE_ADVICE = (
    "The database is unreachable: check that MongoDB is running and that MONGODB_URL points at it (the service "
    "log has the error)."
)
MODEL_ADVICE = (
    f"No model is loaded: train one from backend/ with `{TRAINING_COMMAND}` (or --output-dir pointing at "
    "AUTOENCODER_MODEL_PATH); it is picked up without a restart (the service log says what is missing)."
)
WORKERS_ADVICE = (
    "No job worker is running: analyses and trainings wait in the queue until one starts. Start one with "
    "`python -m app.worker` (the launcher, `make run`, starts JOB_WORKERS of them)."
)


@dataclass(frozen=True)
class Readiness:
    """What each check found, and what to do about the failed ones (empty when ready)."""

    database: DatabaseCheck
    model: ModelCheck
    workers: WorkersCheck
    detail: str

    @property
    def ready(self) -> bool:
        """Whether the API can serve: the database answers and a model is loaded. Without a live worker it still
        takes work (it waits in the queue), so that is reported, not refused."""
        return self.database == "ok" and self.model == "ok"

    @property
    def status(self) -> Literal["ready", "not ready"]:
        """``ready`` or ``not ready``."""
        return "ready" if self.ready else "not ready"

    @property
    def checks(self) -> dict[str, str]:
        """What each check found."""
        return {"database": self.database, "model": self.model, "workers": self.workers}


async def readiness(database: Database, models: ModelRegistry) -> Readiness:
    """Whether the database answers and a default model is loaded."""
    database_check: DatabaseCheck = "ok"
    model_check: ModelCheck = "ok"
    workers_check: WorkersCheck = "ok"
    advice = []
    try:
        await database.command("ping")
        if not await job_queue.live_workers(database):
            workers_check = "none"
            advice.append(WORKERS_ADVICE)
    except PyMongoError as error:
        logger.warning("Not ready: the database is unreachable: %s", error)
        database_check = "unreachable"
        workers_check = "unknown"  # workers say they are alive through the database
        advice.append(DATABASE_ADVICE)
    if models.default is None:
        logger.warning("Not ready: %s", models.default_problem)
        model_check = "missing"
        advice.append(MODEL_ADVICE)
    return Readiness(database_check, model_check, workers_check, " ".join(advice))
