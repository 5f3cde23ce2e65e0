"""The one place where domain errors become HTTP answers, and where the OpenAPI schema learns about them.

Every error body is ``{"detail": "<what was wrong and what to do>"}``: request validation errors too (as one
sentence naming the fields, never echoing the values sent, which may be passwords), and unexpected errors
as a generic sentence with the request's id, never a stack trace or a file path.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pymongo.errors import ConnectionFailure
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.observability import request_id_of
from app.core.errors import (
    AmbiguousModelError,
    AnalysisNotReadyError,
    AuthenticationError,
    ExportTooLargeError,
    LabelRequestError,
    ModelInUseError,
    ModelReadOnlyError,
    ModelUnavailableError,
    NotFoundError,
    QuotaExceededError,
    RegistrationClosedError,
    TooManyExportsError,
    TooManyLoginFailuresError,
    TooManyRegistrationsError,
    TooManyRequestsError,
    TrainingConflictError,
    TrainingRequestError,
    UnknownModelError,
    UploadNotStoredError,
    UploadTooLargeError,
    UsernameTakenError,
)
from app.schemas.common import ErrorResponse
from app.utils.anomaly_detector import ColumnMismatchError
from app.utils.table_reader import TableReadError, UnsupportedFileTypeError

logger = logging.getLogger(__name__)

# Seconds a client is asked to wait when the database is unreachable.
DATABASE_RETRY_AFTER_SECONDS = 5
VALIDATION_RESPONSE: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorResponse, "description": "The request is not valid: the detail names the fields"}
}
_PLACES = {"query": "query parameter", "path": "path parameter", "header": "header", "cookie": "cookie"}


@dataclass(frozen=True)
class HttpError:
    """How one kind of domain error is answered."""

    status_code: int
    description: str


HTTP_ERRORS: dict[type[Exception], HttpError] = {
    TableReadError: HttpError(
        400,
        "The file is not a readable table, has no data rows, or is past a reading budget (columns, cells, "
        "text, the parser's memory or time)",
    ),
    AuthenticationError: HttpError(401, "Missing, malformed, expired or wrongly signed token, or wrong credentials"),
    RegistrationClosedError: HttpError(403, "Registration is closed (ALLOW_REGISTRATION=false)"),
    NotFoundError: HttpError(404, "Not found among the caller's (another user's answers the same)"),
    ModelReadOnlyError: HttpError(403, "The deployment's models are read-only"),
    UsernameTakenError: HttpError(409, "The username is taken"),
    TrainingConflictError: HttpError(409, "The training has already ended"),
    ModelInUseError: HttpError(409, "The model version is active or in use"),
    AnalysisNotReadyError: HttpError(409, "The dataset has not been analysed yet"),
    UploadTooLargeError: HttpError(413, "The upload is larger than MAX_UPLOAD_MB"),
    UnsupportedFileTypeError: HttpError(415, "The file is not .csv, .xlsx or .xls"),
    QuotaExceededError: HttpError(409, "A per-user storage limit is reached: delete something first"),
    TooManyLoginFailuresError: HttpError(429, "Too many failed logins for this username or address: see Retry-After"),
    TooManyRegistrationsError: HttpError(429, "Too many registrations from this address: see Retry-After"),
    TooManyExportsError: HttpError(429, "The server runs as many downloads as it may at once: see Retry-After"),
    TooManyRequestsError: HttpError(429, "Too much at once from this user or address: see Retry-After"),
    ColumnMismatchError: HttpError(422, "The dataset's columns don't match the model"),
    UnknownModelError: HttpError(422, "No model of that name is loaded"),
    AmbiguousModelError: HttpError(422, "Several models fit the dataset's columns: name one"),
    ExportTooLargeError: HttpError(422, "The results do not fit the requested format"),
    LabelRequestError: HttpError(422, "The row is not in the dataset"),
    TrainingRequestError: HttpError(422, "The training request does not fit the dataset or the deployment"),
    ModelUnavailableError: HttpError(503, "No model is loaded and fallback training is off"),
    UploadNotStoredError: HttpError(503, "The database could not store the upload; nothing was kept"),
}


def http_error_for(error: Exception) -> HttpError | None:
    """The answer for ``error``: that of its most specific mapped class, if any."""
    return next((HTTP_ERRORS[cls] for cls in type(error).__mro__ if cls in HTTP_ERRORS), None)


def error_response(error: Exception) -> JSONResponse:
    """The JSON answer for a mapped domain error."""
    mapped = http_error_for(error)
    assert mapped is not None, f"{type(error).__name__} has no HTTP mapping"
    headers = {"WWW-Authenticate": "Bearer"} if mapped.status_code == 401 else {}
    if isinstance(error, TooManyRequestsError):
        headers["Retry-After"] = str(error.retry_after)
    return JSONResponse({"detail": str(error)}, status_code=mapped.status_code, headers=headers)


def responses(*error_types: type[Exception]) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` entry declaring that a route can end in these errors."""
    declared: dict[int | str, dict[str, Any]] = {}
    for error_type in error_types:
        mapped = HTTP_ERRORS[error_type]
        entry = declared.setdefault(mapped.status_code, {"model": ErrorResponse, "description": ""})
        entry["description"] = "; ".join(filter(None, [entry["description"], mapped.description]))
    return declared


async def _handle_domain_error(request: Request, error: Exception) -> JSONResponse:
    return error_response(error)


async def _handle_validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    form = request.headers.get("content-type", "").startswith(("multipart/", "application/x-www-form-urlencoded"))
    problems = []
    for problem in error.errors()[:5]:
        where, *field = [str(part) for part in problem["loc"]] or ["request"]
        place = "multipart form field" if where == "body" and form else _PLACES.get(where, where)
        problems.append(f"{'.'.join(field)} ({place}): {problem['msg']}" if field else f"{place}: {problem['msg']}")
    return JSONResponse(
        {"detail": f"The request is not valid: {'; '.join(problems)}. See /docs for what this endpoint expects."},
        status_code=422,
    )


async def _handle_database_unavailable(request: Request, error: Exception) -> JSONResponse:
    request_id = request_id_of(request)
    logger.warning(
        "Database unreachable on %s %s (request %s): %s", request.method, request.url.path, request_id, error
    )
    return JSONResponse(
        {
            "detail": f"The database is unreachable right now (request id {request_id}): try again in a moment; "
            "if it persists, tell the service's operator."
        },
        status_code=503,
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS), "X-Request-ID": request_id},
    )


async def _handle_unexpected_error(request: Request, error: Exception) -> JSONResponse:
    request_id = request_id_of(request)
    logger.exception(
        "Unhandled error on %s %s (request %s)", request.method, request.url.path, request_id, exc_info=error
    )
    return JSONResponse(
        {
            "detail": f"Internal server error (request id {request_id}): the service logged the cause. Try again, "
            "or report the request id if it persists."
        },
        status_code=500,
        # The server closes the connection after an unhandled error: a client must not send the next request on it.
        headers={"X-Request-ID": request_id, "Connection": "close"},
    )


# Starlette's own answers (unknown path, wrong method, unreadable form body), each with what to do next.
_FRAMEWORK_ERROR_ADVICE = {
    404: "Not found: check the path; every endpoint is listed at /docs.",
    405: "Method not allowed on this path: the allowed methods are in the Allow header and at /docs.",
    400: "The request body could not be read: send the file as multipart/form-data in a field named 'file'.",
}


async def _handle_framework_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    advice = _FRAMEWORK_ERROR_ADVICE.get(error.status_code)
    # Only Starlette's bare wording is replaced; a detail written by this service is kept as it is.
    generic = error.detail in (None, "", HTTPStatus(error.status_code).phrase, "There was an error parsing the body")
    detail = advice if advice and generic else error.detail
    return JSONResponse({"detail": detail}, status_code=error.status_code, headers=getattr(error, "headers", None))


def install_error_handlers(app: FastAPI) -> None:
    """Register the mapping on ``app``."""
    for error_type in HTTP_ERRORS:
        app.add_exception_handler(error_type, _handle_domain_error)
    app.add_exception_handler(StarletteHTTPException, _handle_framework_error)
    app.add_exception_handler(RequestValidationError, _handle_validation_error)
    app.add_exception_handler(ConnectionFailure, _handle_database_unavailable)
    app.add_exception_handler(Exception, _handle_unexpected_error)
