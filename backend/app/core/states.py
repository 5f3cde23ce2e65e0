"""The states a dataset, an analysis and a training go through: one enum each, so every layer (and OpenAPI)
spells them the same way."""

from __future__ import annotations

from enum import StrEnum


class AnalysisStatus(StrEnum):
    """Where an analysis is in its life."""

    QUEUED = "queued"
    ANALYZING = "analyzing"
    ANALYZED = "analyzed"
    FAILED = "failed"
    # A queued analysis replaced by a newer request for the same dataset before it started.
    CANCELLED = "cancelled"


class DatasetStatus(StrEnum):
    """A dataset's status as users see it: ``uploaded`` until its first analysis, then its latest analysis's."""

    UPLOADED = "uploaded"
    QUEUED = "queued"
    ANALYZING = "analyzing"
    ANALYZED = "analyzed"
    FAILED = "failed"

    @classmethod
    def of(cls, analysis_status: AnalysisStatus | None) -> DatasetStatus:
        """The dataset's status when its latest analysis is in ``analysis_status`` (``None``: never analysed).

        A cancelled analysis was superseded by a newer one, which is then the latest: should a dataset ever point
        at one, it reads as queued, since a newer analysis is on its way.
        """
        if analysis_status is None:
            return cls.UPLOADED
        if analysis_status == AnalysisStatus.CANCELLED:
            return cls.QUEUED
        return cls(analysis_status.value)


class TrainingStatus(StrEnum):
    """Where a training of a user's model is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    TRAINED = "trained"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ModelKind(StrEnum):
    """Where an analysis's model comes from."""

    # A folder under MODELS_DIR, served read-only to every user.
    DEPLOYMENT = "deployment"
    # A model a user trained through the API, stored in MongoDB and private to them.
    USER = "user"
    # No model: the analysis trains on its own dataset (AUTOENCODER_FALLBACK_TRAIN=true).
    FALLBACK = "fallback"
