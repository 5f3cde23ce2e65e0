"""Accounts and access tokens, with the limits that keep guessing and account floods out.

Every limit is counted before the work it protects (``app.crud.attempt_counts``): an attempt is reserved with
one atomic increment, and the count that increment answers decides, so a burst of parallel requests gets no
more password checks or hashes than the limit allows.
"""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime

from app.core import metrics, security
from app.core.config import Settings
from app.core.errors import (
    AuthenticationError,
    RegistrationClosedError,
    TooManyLoginFailuresError,
    TooManyRegistrationsError,
)
from app.crud import attempt_counts, users
from app.crud.users import User
from app.db.collections import LOGIN_FAILURES, REGISTRATIONS, Database


async def register(
    database: Database, settings: Settings, *, username: str, password: str, address: str | None
) -> User:
    """Create an account; at most ``REGISTRATIONS_PER_ADDRESS`` per client ``address`` in a window
    (``TooManyRegistrationsError`` past it), counted before the deliberately slow hashing."""
    if not settings.allow_registration:
        raise RegistrationClosedError(
            "Registration is closed on this service (ALLOW_REGISTRATION=false): ask an administrator for an account."
        )
    reservation = await attempt_counts.reserve(
        database, REGISTRATIONS, _address_key(address), settings.registration_window_seconds
    )
    if reservation.count > settings.registrations_per_address:
        retry_after = _seconds_until(reservation.ends_at)
        raise TooManyRegistrationsError(
            f"Too many accounts were created from this address ({settings.registrations_per_address} at most in "
            f"{settings.registration_window_seconds} s): try again in {retry_after} s, or log in with an existing "
            "account.",
            retry_after,
        )
    password_hash = await security.hash_password(password)
    return await users.insert(database, username, password_hash)


async def issue_token(
    database: Database, settings: Settings, *, secret: str, username: str, password: str, address: str | None
) -> str:
    """A bearer token for valid credentials; ``AuthenticationError`` otherwise (same answer for both causes).

    Failures are counted per (username, client ``address``) pair and per ``address``. Each login reserves a
    failure on both before the password is checked; past ``LOGIN_MAX_FAILURES_PER_USERNAME`` for the pair, or
    ``LOGIN_MAX_FAILURES_PER_ADDRESS`` for the address, in a window, it is refused unchecked
    (``TooManyLoginFailuresError``) and gives its reservations back, which stops guessing and spares the
    deliberately slow hashing. A wrong password keeps them (they are the failure); the right one gives them
    back and clears the pair's count. A username is never locked for every address, so guessing from one
    address cannot lock its owner out from another.
    """
    user_key, address_key = _throttle_keys(username, address)
    window = settings.login_failure_window_seconds
    limits = {user_key: settings.login_max_failures_per_username, address_key: settings.login_max_failures_per_address}
    reservations = {key: await attempt_counts.reserve(database, LOGIN_FAILURES, key, window) for key in limits}
    blocked = [reservation for key, reservation in reservations.items() if reservation.count > limits[key]]
    if blocked:
        for reservation in reservations.values():
            await attempt_counts.give_back(database, reservation)
        metrics.LOGINS_THROTTLED.inc()
        retry_after = max(_seconds_until(reservation.ends_at) for reservation in blocked)
        raise TooManyLoginFailuresError(
            f"Too many failed logins from this address: try again in {retry_after} s.",
            retry_after,
        )
    user = await users.find_by_username(database, username)
    valid = await security.verify_password(password, user.password_hash if user else None)
    if user is None or not valid:
        metrics.LOGIN_FAILURES.inc()
        raise AuthenticationError(
            "Incorrect username or password: check them, or create an account with POST /api/auth/register."
        )
    await attempt_counts.clear(database, reservations[user_key])
    await attempt_counts.give_back(database, reservations[address_key])
    return security.create_access_token(user.id, secret, settings.access_token_expire_minutes)


def _seconds_until(moment: datetime) -> int:
    return max(1, math.ceil((moment - datetime.now(UTC)).total_seconds()))


def _address_key(address: str | None) -> str:
    return f"address:{address or 'unknown'}"


def _throttle_keys(username: str, address: str | None) -> tuple[str, str]:
    # Usernames are hashed: people type passwords into the username field, and those must not be stored.
    address_key = _address_key(address)
    return f"user:{hashlib.sha256(username.encode()).hexdigest()[:32]}:{address_key}", address_key


async def user_from_token(database: Database, secret: str, token: str | None) -> User:
    """The account a bearer token belongs to; ``AuthenticationError`` saying what is wrong with it."""
    if not token:
        raise AuthenticationError(
            "Not authenticated: get a token from POST /api/auth/token and send it as 'Authorization: Bearer <token>'."
        )
    user = await users.find_by_id(database, security.decode_access_token(token, secret))
    if user is None:
        raise AuthenticationError("The token's account no longer exists: register again or use another account.")
    return user
