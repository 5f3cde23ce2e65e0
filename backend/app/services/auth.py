"""Accounts and access tokens."""

from __future__ import annotations

import asyncio

from app.core import security
from app.core.config import Settings
from app.core.errors import AuthenticationError, RegistrationClosedError
from app.crud import users
from app.crud.users import User
from app.db.collections import Database


async def register(database: Database, settings: Settings, username: str, password: str) -> User:
    """Create an account (Argon2 hashing runs in a thread: it is deliberately slow)."""
    if not settings.allow_registration:
        raise RegistrationClosedError(
            "Registration is closed on this service (ALLOW_REGISTRATION=false): ask an administrator for an account."
        )
    password_hash = await asyncio.to_thread(security.hash_password, password)
    return await users.insert(database, username, password_hash)


async def issue_token(database: Database, settings: Settings, secret: str, username: str, password: str) -> str:
    """A bearer token for valid credentials; ``AuthenticationError`` otherwise (same answer for both causes)."""
    user = await users.find_by_username(database, username)
    valid = await asyncio.to_thread(security.verify_password, password, user.password_hash if user else None)
    if user is None or not valid:
        raise AuthenticationError(
            "Incorrect username or password: check them, or create an account with POST /api/auth/register."
        )
    return security.create_access_token(user.id, secret, settings.access_token_expire_minutes)


async def user_from_token(database: Database, secret: str, token: str | None) -> User:
    """The account a bearer token belongs to; ``AuthenticationError`` saying what is wrong with it."""
    if not token:
        raise AuthenticationError(
            "Not authenticated: get a token from POST /api/auth/token and send it as "
            "'Authorization: Bearer <token>'."
        )
    user = await users.find_by_id(database, security.decode_access_token(token, secret))
    if user is None:
        raise AuthenticationError("The token's account no longer exists: register again or use another account.")
    return user
