"""The errors a request can end in, raised deep in the services and turned into HTTP answers in one place
(``app.api.errors``). Each message says what was wrong and what to do about it.

The file reader's and the detector's own errors (``TableReadError``, ``UnsupportedFileTypeError``,
``ColumnMismatchError``) are domain errors too and are mapped beside these.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base class: a request that cannot be served as asked; ``str(error)`` is the user-facing message."""


class NotFoundError(ServiceError):
    """The resource does not exist, or belongs to another user (the two are indistinguishable on purpose)."""


class AuthenticationError(ServiceError):
    """Missing, malformed, expired or wrongly signed token, or wrong username or password."""


class TooManyRequestsError(ServiceError):
    """Past a bound on how much or how often one user or address may ask at once: wait ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TooManyLoginFailuresError(TooManyRequestsError, AuthenticationError):
    """Too many failed logins for a username from one address, or from one address: wait ``retry_after`` seconds."""


class TooManyRegistrationsError(TooManyRequestsError):
    """Too many registrations from one address in a window: wait ``retry_after`` seconds."""


class TooManyExportsError(TooManyRequestsError):
    """As many result downloads as the process runs at once are being prepared: wait ``retry_after`` seconds."""


class QuotaExceededError(ServiceError):
    """A per-user storage limit (datasets, bytes, models, versions) is reached: the message says what to delete."""


class RegistrationClosedError(ServiceError):
    """``ALLOW_REGISTRATION`` is off."""


class UsernameTakenError(ServiceError):
    """Another account already has this username."""


class UploadTooLargeError(ServiceError):
    """The upload is larger than ``MAX_UPLOAD_MB``."""


class RequestBodyTooLargeError(UploadTooLargeError):
    """A request body over the small limit of every route but the upload (answered 413 like an upload)."""


class UploadNotStoredError(ServiceError):
    """The database refused or could not take the upload's files (full disk, write error, unreachable);
    nothing of the upload was kept."""


class AnalysisNotReadyError(ServiceError):
    """Results were asked for before the dataset's analysis finished."""


class UnknownModelError(ServiceError):
    """The analysis asked for a model that is not loaded."""


class AmbiguousModelError(ServiceError):
    """Several loaded models fit the dataset's columns and the request named none of them."""


class ModelUnavailableError(ServiceError):
    """No model is loaded and fallback training is off."""


class TrainingRequestError(ServiceError):
    """A training request the dataset or the deployment cannot take (reserved name, unknown columns, too few rows)."""


class TrainingConflictError(ServiceError):
    """The training has already ended: there is nothing to cancel."""


class ModelInUseError(ServiceError):
    """The model version is active or used by an analysis (or a training of the model is under way)."""


class ModelReadOnlyError(ServiceError):
    """The deployment's own models (MODELS_DIR) cannot be changed through the API."""


class LabelRequestError(ServiceError):
    """A label for a row the dataset does not have."""


class ExportTooLargeError(ServiceError):
    """The results do not fit the requested file format (an Excel sheet's row limit)."""


class ConfigurationError(Exception):
    """The service is configured in a way it must not start with; the message says what to set."""
