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
from app.services.models import ModelRegistry
from app.utils.anomaly_detector import TRAINING_COMMAND

logger = logging.getLogger(__name__)

DatabaseCheck = Literal["ok", "unreachable"]
ModelCheck = Literal["ok", "missing"]
DATABASE_ADVICE = (
    "The database is unreachable: check that MongoDB is running and that MONGODB_URL points at it (the service "
    "log has the error)."
)
MODEL_ADVICE = (
    f"No model is loaded: train one from backend/ with `{TRAINING_COMMAND}` (or --output-dir pointing at "
    "AUTOENCODER_MODEL_PATH); it is picked up without a restart (the service log says what is missing)."
)


@dataclass(frozen=True)
class Readiness:
    """What each check found, and what to do about the failed ones (empty when ready)."""

    database: DatabaseCheck
    model: ModelCheck
    detail: str

    @property
    def ready(self) -> bool:
        """Whether every check passed."""
        return self.database == "ok" and self.model == "ok"


async def readiness(database: Database, models: ModelRegistry) -> Readiness:
    """Whether the database answers and a default model is loaded."""
    database_check: DatabaseCheck = "ok"
    model_check: ModelCheck = "ok"
    advice = []
    try:
        await database.command("ping")
    except PyMongoError as error:
        logger.warning("Not ready: the database is unreachable: %s", error)
        database_check = "unreachable"
        advice.append(DATABASE_ADVICE)
    if models.default is None:
        logger.warning("Not ready: %s", models.default_problem)
        model_check = "missing"
        advice.append(MODEL_ADVICE)
    return Readiness(database_check, model_check, " ".join(advice))
