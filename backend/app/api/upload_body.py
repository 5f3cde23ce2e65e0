"""The upload's multipart body, read only after the caller is authenticated and admitted, straight to disk.

FastAPI reads a ``File`` parameter's whole body before it resolves any dependency, so a request without a
token could make the service read 100 MB before answering 401. This dependency comes after ``CurrentUser``
instead: a caller without a valid token, over their storage quota (by the declared size) or arriving while
every parser is busy and the queue is full (429) is answered before a byte of the body is read. Then the
body is streamed through python-multipart's parser into a named temporary file (which the parser child opens
by path), ``MAX_UPLOAD_MB`` enforced on the file part as it arrives; the file is deleted after the answer.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from app.api.deps import CurrentUser, ResourcesDep
from app.services import datasets
from app.services.datasets import ReceivedFile

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

FILE_FIELD = "file"
# What /docs and schemathesis see: the route reads its body itself, so FastAPI cannot infer it.
OPENAPI_REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FILE_FIELD],
                    "properties": {
                        FILE_FIELD: {
                            "type": "string",
                            "format": "binary",
                            "description": "A .csv, .xlsx or .xls table with a header row.",
                        }
                    },
                }
            }
        },
    }
}


class _FilePart:
    """Collects the ``file`` part of a multipart body as the parser finds it (its data in ``pending``, for the
    caller to write out after each block); other parts are dropped."""

    def __init__(self, max_bytes: int, too_large: Exception) -> None:
        self.max_bytes = max_bytes
        self.too_large = too_large
        self.filename: str | None = None
        self.content_type: str | None = None
        self.size = 0
        self.complete = False
        self.pending: list[bytes] = []
        self._headers: dict[bytes, bytes] = {}
        self._field = b""
        self._value = b""
        self._in_file = False
        self._seen_file = False

    def callbacks(self) -> MultipartCallbacks:
        """The parser's callbacks."""
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._headers = {}

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.strip().lower()] = self._value.strip()
        self._field = self._value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._in_file = options.get(b"name") == FILE_FIELD.encode() and not self._seen_file
        if self._in_file:
            self._seen_file = True
            filename = options.get(b"filename")
            self.filename = filename.decode("utf-8", "replace") if filename is not None else None
            content_type = self._headers.get(b"content-type")
            self.content_type = content_type.decode("latin-1") if content_type else None

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self.size += end - start
            if self.size > self.max_bytes:
                raise self.too_large
            self.pending.append(data[start:end])

    def _part_end(self) -> None:
        if self._in_file:
            self.complete = True
        self._in_file = False


def _missing_file() -> RequestValidationError:
    return RequestValidationError([{"type": "missing", "loc": ("body", FILE_FIELD), "msg": "Field required"}])


async def receive_upload(request: Request, user: CurrentUser, resources: ResourcesDep) -> AsyncIterator[ReceivedFile]:
    """The upload's file, on disk for the duration of the request (see the module's docstring)."""
    settings = resources.settings
    declared = request.headers.get("content-length", "")
    await datasets.check_quota(resources.database, settings, user, int(declared) if declared.isdigit() else 0)
    content_type, options = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data" or not options.get(b"boundary"):
        raise _missing_file()
    with resources.parsers.admission(), tempfile.NamedTemporaryFile(prefix="upload-") as destination:
        part = _FilePart(settings.max_upload_bytes, datasets.too_large_error(settings))
        parser = MultipartParser(options[b"boundary"], part.callbacks())
        try:
            async for chunk in request.stream():
                parser.write(chunk)
                if part.pending:
                    await asyncio.to_thread(destination.write, b"".join(part.pending))
                    part.pending.clear()
            parser.finalize()
        except FormParserError:
            raise StarletteHTTPException(400) from None  # answered with what to send instead
        except ClientDisconnect:
            raise _missing_file() from None  # the body was cut off; nobody is left to read the answer
        if not part.complete:
            raise _missing_file()
        await asyncio.to_thread(destination.flush)
        yield ReceivedFile(part.filename, part.content_type, Path(destination.name), part.size)


ReceivedUpload = Annotated[ReceivedFile, Depends(receive_upload)]
