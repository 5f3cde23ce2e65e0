"""Refuse request bodies over their route's limit without reading them into memory first (413).

The upload route takes files up to ``MAX_UPLOAD_MB`` (plus the multipart envelope); every other route, the
unauthenticated register and login included, takes at most ``SMALL_BODY_BYTES``. A declared
``Content-Length`` over the limit is refused before any byte is read; a body sent without one (chunked) is
counted as it streams in and refused as soon as it passes the limit. The service checks an uploaded file
itself against ``MAX_UPLOAD_MB`` exactly.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import error_response, http_error_for
from app.core.errors import RequestBodyTooLargeError, UploadTooLargeError

# Room for the multipart boundary, part headers and form fields around the file.
MULTIPART_ALLOWANCE = 64 * 1024
# The most any route but the upload reads: JSON and form bodies here are a few hundred bytes.
SMALL_BODY_BYTES = 64 * 1024
UPLOAD_PATHS = frozenset({"/api/anomaly/datasets/upload"})


def small_body_error() -> RequestBodyTooLargeError:
    """The error for a body over ``SMALL_BODY_BYTES`` on a route that is not the upload."""
    return RequestBodyTooLargeError(
        f"The request body is larger than the {SMALL_BODY_BYTES // 1024} KB limit of this route: send only "
        "the documented fields. Files go to POST /api/anomaly/datasets/upload (up to MAX_UPLOAD_MB)."
    )


class UploadSizeLimitMiddleware:
    """ASGI middleware answering 413 for upload bodies over ``max_file_bytes`` plus the multipart allowance,
    and for any other route's body over ``SMALL_BODY_BYTES``."""

    def __init__(self, app: ASGIApp, max_file_bytes: int, too_large: Callable[[], UploadTooLargeError]) -> None:
        self.app = app
        self.max_upload_body_bytes = max_file_bytes + MULTIPART_ALLOWANCE
        self.upload_too_large = too_large

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"].rstrip("/") in UPLOAD_PATHS:
            max_body_bytes, too_large = self.max_upload_body_bytes, self.upload_too_large
        else:
            max_body_bytes, too_large = SMALL_BODY_BYTES, small_body_error
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            response = error_response(too_large())
            response.headers["Connection"] = "close"
            await response(scope, receive, send)
            return
        received = 0

        async def receive_within_limit() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_body_bytes:
                    # Raised inside body parsing: FastAPI passes an HTTPException through as the answer.
                    error = too_large()
                    mapped = http_error_for(error)
                    assert mapped is not None
                    raise HTTPException(mapped.status_code, detail=str(error), headers={"Connection": "close"})
            return message

        await self.app(scope, receive_within_limit, send)
