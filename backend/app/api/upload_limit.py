"""Refuse request bodies over the upload limit without reading them into memory first (413).

A declared ``Content-Length`` over the limit is refused before any byte is read; a body sent without one
(chunked) is counted as it streams in and refused as soon as it passes the limit. The service checks the
file itself against ``MAX_UPLOAD_MB`` exactly; this guard allows for the multipart envelope around it.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import error_response, http_error_for
from app.core.errors import UploadTooLargeError

# Room for the multipart boundary, part headers and form fields around the file.
MULTIPART_ALLOWANCE = 64 * 1024


class UploadSizeLimitMiddleware:
    """ASGI middleware answering 413 for bodies over ``max_file_bytes`` plus the multipart allowance."""

    def __init__(self, app: ASGIApp, max_file_bytes: int, too_large: Callable[[], UploadTooLargeError]) -> None:
        self.app = app
        self.max_body_bytes = max_file_bytes + MULTIPART_ALLOWANCE
        self.too_large = too_large

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            response = error_response(self.too_large())
            response.headers["Connection"] = "close"
            await response(scope, receive, send)
            return
        received = 0

        async def receive_within_limit() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    # Raised inside body parsing: FastAPI passes an HTTPException through as the answer.
                    error = self.too_large()
                    mapped = http_error_for(error)
                    assert mapped is not None
                    raise HTTPException(mapped.status_code, detail=str(error), headers={"Connection": "close"})
            return message

        await self.app(scope, receive_within_limit, send)
