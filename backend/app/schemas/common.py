"""Bodies shared by every route."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorResponse(BaseModel):
    """Every error's body."""

    detail: str = Field(description="What was wrong and what to do about it.")
