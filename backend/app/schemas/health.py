"""Liveness and readiness."""

from __future__ import annotations

from pydantic import BaseModel, Field


class HealthOut(BaseModel):
    """The process is up."""

    status: str = "ok"


class ReadinessOut(BaseModel):
    """Whether the service can do its work, and what each check found."""

    status: str = Field(description="ready or not ready")
    detail: str = Field(description="Why the service is not ready, and what to do; empty when ready.")
    checks: dict[str, str]
