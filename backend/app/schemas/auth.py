"""Accounts and tokens."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from app.crud.users import User


class RegisterRequest(BaseModel):
    """A new account."""

    username: str = Field(min_length=3, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$", examples=["alice"])
    password: str = Field(min_length=8, max_length=256, examples=["correct horse battery staple"])


class UserOut(BaseModel):
    """An account, as its owner sees it."""

    id: str
    username: str
    created_at: datetime

    @classmethod
    def from_user(cls, user: User) -> UserOut:
        """The public view of ``user`` (never the password hash)."""
        return cls(id=user.id, username=user.username, created_at=user.created_at)


class TokenOut(BaseModel):
    """A bearer token (OAuth2 password flow)."""

    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds until the token expires.")
