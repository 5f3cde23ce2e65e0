"""Accounts and access tokens."""

from __future__ import annotations

import asyncio
import hashlib
import math
from datetime import UTC, datetime

from app.core import metrics, security
from app.core.config import Settings
from app.core.errors import AuthenticationError, RegistrationClosedError, TooManyLoginFailuresError
from app.crud import login_failures, users
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


async def issue_token(
    database: Database, settings: Settings, secret: str, username: str, password: str, address: str | None
) -> str:
    """A bearer token for valid credentials; ``AuthenticationError`` otherwise (same answer for both causes).

    Failures are counted per (username, client ``address``) pair and per ``address``: past
    ``LOGIN_MAX_FAILURES_PER_USERNAME`` for the pair, or ``LOGIN_MAX_FAILURES_PER_ADDRESS`` for the address, in a
    window, logins are refused before the password is even checked (``TooManyLoginFailuresError``), which
    stops guessing and spares the deliberately slow hashing. A username is never locked for every address,
    so guessing from one address cannot lock its owner out from another.
    """
    user_key, address_key = _throttle_keys(username, address)
    window = settings.login_failure_window_seconds
    recent = await login_failures.counts(database, [user_key, address_key], window)
    limits = {user_key: settings.login_max_failures_per_username, address_key: settings.login_max_failures_per_address}
    blocked = [ends_at for key, (count, ends_at) in recent.items() if count >= limits[key]]
    if blocked:
        metrics.LOGINS_THROTTLED.inc()
        retry_after = max(1, math.ceil((max(blocked) - datetime.now(UTC)).total_seconds()))
        raise TooManyLoginFailuresError(
            f"Too many failed logins from this address: try again in {retry_after} s.",
            retry_after,
        )
    user = await users.find_by_username(database, username)
    valid = await asyncio.to_thread(security.verify_password, password, user.password_hash if user else None)
    if user is None or not valid:
        metrics.LOGIN_FAILURES.inc()
        await login_failures.record(database, [user_key, address_key], window)
        raise AuthenticationError(
            "Incorrect username or password: check them, or create an account with POST /api/auth/register."
        )
    await login_failures.clear(database, user_key, window)
    return security.create_access_token(user.id, secret, settings.access_token_expire_minutes)


def _throttle_keys(username: str, address: str | None) -> tuple[str, str]:
    # Usernames are hashed: people type passwords into the username field, and those must not be stored.
    address_key = f"address:{address or 'unknown'}"
    return f"user:{hashlib.sha256(username.encode()).hexdigest()[:32]}:{address_key}", address_key


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
