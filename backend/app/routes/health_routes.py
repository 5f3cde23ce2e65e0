"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from pymongo.errors import PyMongoError

from app.api.deps import ResourcesDep
from app.schemas.health import HealthOut, ReadinessOut

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> HealthOut:
    """Liveness: the process answers."""
    return HealthOut()


@router.get(
    "/ready",
    responses={503: {"model": ReadinessOut, "description": "Database unreachable or no model loaded"}},
)
async def ready(resources: ResourcesDep, response: Response) -> ReadinessOut:
    """Readiness: the database answers and a model is loaded (503 with the reasons otherwise)."""
    checks: dict[str, str] = {}
    problems: list[str] = []
    try:
        await resources.database.command("ping")
        checks["database"] = "ok"
    except PyMongoError as error:
        checks["database"] = f"unreachable: {error}"
        problems.append(f"The database is unreachable ({error}): check MONGODB_URL and that MongoDB is running.")
    default = resources.models.default
    if default is not None:
        checks["model"] = f"ok: {default.name} (version {default.version})"
    else:
        checks["model"] = f"missing: {resources.models.default_problem}"
        problems.append(resources.models.unavailable_message())
    if problems:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return ReadinessOut(status="not ready", detail=" ".join(problems), checks=checks)
    return ReadinessOut(status="ready", detail="", checks=checks)
