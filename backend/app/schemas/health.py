"""Liveness and readiness."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from app.services.health import DatabaseCheck, ModelCheck, Readiness


class HealthOut(BaseModel):
    """The process is up."""

    status: str = "ok"


class ReadinessChecks(BaseModel):
    """What each check found."""

    database: DatabaseCheck
    model: ModelCheck


class ReadinessOut(BaseModel):
    """Whether the service can do its work, and what each check found."""

    status: Literal["ready", "not ready"]
    detail: str = Field(description="Which check failed and what to do; empty when ready.")
    checks: ReadinessChecks

    @classmethod
    def from_readiness(cls, readiness: Readiness) -> ReadinessOut:
        """The answer for ``readiness``."""
        return cls(
            status="ready" if readiness.ready else "not ready",
            detail=readiness.detail,
            checks=ReadinessChecks(database=readiness.database, model=readiness.model),
        )
