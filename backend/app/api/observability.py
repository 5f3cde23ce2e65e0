"""Every request gets an id, a structured log line and its place in the metrics.

The id is the caller's ``X-Request-ID`` when it is a short token, else a new one; it is answered in the same
header, written in the log line and named in the detail of a 500, so a user's report leads to the log.
The log line and the metrics name the route's template (``/api/anomaly/datasets/{dataset_id}``), never the
raw path, so ids stay out of metric labels and query strings (which could hold anything) out of the log.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core import metrics
from app.core.structured_log import REQUEST_LOGGER, log_event

REQUEST_ID_HEADER = "X-Request-ID"
UNMATCHED_ROUTE = "unmatched"
_OFFERED_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
logger = logging.getLogger(REQUEST_LOGGER)


def request_id_of(request: Request) -> str:
    """The id the middleware gave this request (``-`` outside it, e.g. in a test app without it)."""
    request_id: str = request.scope.get("state", {}).get("request_id", "-")
    return request_id


def remember_user(request: Request, user_id: str) -> None:
    """Name the authenticated caller in the request's log line."""
    request.state.user_id = user_id


class RequestObservabilityMiddleware:
    """ASGI middleware: request id in and out, one JSON log line and the request metrics per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = Headers(scope=scope).get(REQUEST_ID_HEADER, "")
        request_id = offered if _OFFERED_REQUEST_ID.fullmatch(offered) else uuid.uuid4().hex
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        started = time.perf_counter()
        status = 500  # what the client gets when the application raises before answering

        async def send_with_request_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                if REQUEST_ID_HEADER not in headers:
                    headers.append(REQUEST_ID_HEADER, request_id)
            await send(message)

        try:
            await self.app(scope, receive, send_with_request_id)
        finally:
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or UNMATCHED_ROUTE
            method = scope["method"]
            metrics.HTTP_REQUESTS.labels(method, route, str(status)).inc()
            metrics.HTTP_REQUEST_SECONDS.labels(method, route).observe(seconds)
            client = scope.get("client")
            log_event(
                logger,
                "request",
                method=method,
                route=route,
                status=status,
                duration_ms=round(seconds * 1000, 2),
                request_id=request_id,
                user_id=state.get("user_id"),
                client=client[0] if client else None,
            )
