"""Liveness and readiness."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class HealthOut(BaseModel):
    """The process is up."""

    status: str = "ok"


class ReadinessChecks(BaseModel):
    """What each check found."""

    database: Literal["ok", "unreachable"]
    model: Literal["ok", "missing"]
    workers: Literal["ok", "none", "unknown"] = Field(
        description="Whether a job worker is alive to run analyses and trainings (they wait in the queue until one is)."
    )


class ReadinessOut(BaseModel):
    """Whether the service can do its work, and what each check found."""

    status: Literal["ready", "not ready"]
    detail: str = Field(description="Which check failed and what to do; empty when ready.")
    checks: ReadinessChecks
