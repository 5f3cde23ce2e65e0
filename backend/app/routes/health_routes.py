"""Liveness and readiness probes (no token: they say nothing an outsider should not know)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from app.api.deps import DatabaseDep, ModelsDep
from app.schemas.health import HealthOut, ReadinessOut
from app.services import health

router = APIRouter(tags=["health"])


@router.get("/health")
async def health_check() -> HealthOut:
    """Liveness: the process answers."""
    return HealthOut()


@router.get(
    "/ready",
    responses={503: {"model": ReadinessOut, "description": "Database unreachable or no model loaded"}},
)
async def ready(database: DatabaseDep, models: ModelsDep, response: Response) -> ReadinessOut:
    """Readiness: the database answers and a model is loaded (503 saying which is not, and what to do)."""
    readiness = await health.readiness(database, models)
    response.status_code = status.HTTP_200_OK if readiness.ready else status.HTTP_503_SERVICE_UNAVAILABLE
    return ReadinessOut.model_validate(readiness, from_attributes=True)
