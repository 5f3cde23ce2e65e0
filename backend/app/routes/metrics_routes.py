"""``GET /metrics``: the service's Prometheus metrics, for a scraper (no token: it holds no user data)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app.api.deps import DatabaseDep
from app.core import metrics
from app.services import job_queue

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"description": "Prometheus text format", "content": {"text/plain": {}}}},
)
async def prometheus_metrics(database: DatabaseDep) -> Response:
    """Requests by route and status, analysis durations, rows scored, queue depth and failures."""
    queue = await job_queue.analysis_queue(database)
    metrics.ANALYSIS_QUEUE_DEPTH.set(queue.queued)
    metrics.ANALYSES_RUNNING.set(queue.running)
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
