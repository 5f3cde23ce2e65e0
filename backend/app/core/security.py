"""Passwords (Argon2 via pwdlib), access tokens (PyJWT, HS256 with expiry) and the JWT signing secret."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import jwt
from pwdlib import PasswordHash

from app.core.config import Settings
from app.core.errors import AuthenticationError, ConfigurationError

logger = logging.getLogger(__name__)

JWT_ALGORITHM = "HS256"
# Below this many characters an HMAC-SHA256 key is guessable; generated secrets are 43 characters.
MIN_SECRET_LENGTH = 32
# A random key of 32+ characters has far more distinct characters (token_urlsafe(32): about 31 of 43).
MIN_SECRET_DISTINCT_CHARACTERS = 10
# Template values seen in examples and tutorials, compared whole and case-insensitively (never as substrings,
# which random keys contain by chance), also when repeated to reach the minimum length.
KNOWN_PLACEHOLDER_SECRETS = frozenset(
    {
        "changeme", "change-me", "change_me", "changethis", "change-this", "changeit", "secret", "secretkey",
        "secret-key", "secret_key", "jwt-secret", "jwt_secret", "jwtsecret", "your-secret-key", "your_secret_key",
        "yoursecretkey", "your-secret-key-here", "your-jwt-secret", "your-256-bit-secret", "supersecret",
        "super-secret", "super-secret-key", "mysecret", "mysecretkey", "placeholder", "example", "password",
        "replace-me", "replaceme", "change-this-to-a-long-random-secret", "your-secret-key-change-in-production",
        "please-change-this-secret-key",
    }
)  # fmt: skip
# Argon2 (pwdlib's recommended parameters) takes 64 MiB per hash or check: this many at once bounds what a
# flood of logins or registrations can take (4 x 64 MiB), in threads of their own, so nothing else waits.
MAX_CONCURRENT_PASSWORD_HASHES = 4
_TOKEN_HELP = "Get a token from POST /api/auth/token and send it as 'Authorization: Bearer <token>'."

_password_hash = PasswordHash.recommended()
_password_hashing = ThreadPoolExecutor(max_workers=MAX_CONCURRENT_PASSWORD_HASHES, thread_name_prefix="password")
# Verified against when the username is unknown, so a login takes as long whether or not the user exists.
_DUMMY_HASH = _password_hash.hash(secrets.token_urlsafe(16))


async def hash_password(password: str) -> str:
    """Return the Argon2 hash of ``password`` (in the password-hashing threads)."""
    return await asyncio.get_running_loop().run_in_executor(_password_hashing, _password_hash.hash, password)


async def verify_password(password: str, password_hash: str | None) -> bool:
    """Whether ``password`` matches ``password_hash`` (``None``: no such user, still spends the same time), in
    the password-hashing threads."""
    loop = asyncio.get_running_loop()
    valid = await loop.run_in_executor(_password_hashing, _password_hash.verify, password, password_hash or _DUMMY_HASH)
    return valid and password_hash is not None


def create_access_token(subject: str, secret: str, expires_minutes: int) -> str:
    """A signed token naming ``subject`` (a user id), valid for ``expires_minutes``."""
    now = datetime.now(UTC)
    claims = {"sub": subject, "iat": now, "exp": now + timedelta(minutes=expires_minutes)}
    return jwt.encode(claims, secret, algorithm=JWT_ALGORITHM)


def decode_access_token(token: str, secret: str) -> str:
    """Return the subject of a valid ``token``; raise ``AuthenticationError`` saying why it is not valid."""
    try:
        claims = jwt.decode(token, secret, algorithms=[JWT_ALGORITHM], options={"require": ["exp", "sub"]})
    except jwt.ExpiredSignatureError as error:
        raise AuthenticationError(f"The token has expired. {_TOKEN_HELP}") from error
    except jwt.InvalidSignatureError as error:
        raise AuthenticationError(f"The token's signature is not valid for this service. {_TOKEN_HELP}") from error
    except jwt.InvalidTokenError as error:
        raise AuthenticationError(f"The token is malformed ({error}). {_TOKEN_HELP}") from error
    subject = claims["sub"]
    if not isinstance(subject, str):
        raise AuthenticationError(f"The token names no user. {_TOKEN_HELP}")
    return subject


def is_placeholder_secret(secret: str) -> bool:
    """Whether ``secret`` cannot be a random key: shorter than ``MIN_SECRET_LENGTH``, a known template value
    (whole, in any case, or repeated), one short run repeated (``xxxx...``, ``abcabc...``), or fewer than
    ``MIN_SECRET_DISTINCT_CHARACTERS`` distinct characters."""
    lowered = secret.lower()
    return (
        len(secret) < MIN_SECRET_LENGTH
        or lowered in KNOWN_PLACEHOLDER_SECRETS
        or _is_repeated_run(lowered)
        or len(set(secret)) < MIN_SECRET_DISTINCT_CHARACTERS
    )


def _is_repeated_run(text: str) -> bool:
    """Whether ``text`` is a shorter run of characters repeated (the last repetition may be cut short)."""
    return any(text[period:] == text[:-period] for period in range(1, len(text) // 2 + 1))


def resolve_jwt_secret(settings: Settings) -> str:
    """The HS256 signing key the service must use, or ``ConfigurationError`` when it must not start.

    Outside local use ``JWT_SECRET`` must be set to a real random key. For local use (``ENVIRONMENT=local``,
    which ``make run`` sets) a missing secret is generated once and kept in ``DATA_DIR``, so tokens survive
    restarts.
    """
    local = settings.environment == "local"
    if settings.jwt_secret:
        if is_placeholder_secret(settings.jwt_secret):
            message = (
                f"JWT_SECRET looks like a placeholder (it must be at least {MIN_SECRET_LENGTH} random "
                "characters): generate one with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`."
            )
            if not local:
                raise ConfigurationError(message)
            logger.warning("%s Accepted because ENVIRONMENT=local.", message)
        return settings.jwt_secret
    if not local:
        raise ConfigurationError(
            "JWT_SECRET is not set: set it to a long random value, e.g. the output of "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'` (or set ENVIRONMENT=local to have "
            "one generated under DATA_DIR for local use)."
        )
    return _load_or_create_local_secret(settings)


def _load_or_create_local_secret(settings: Settings) -> str:
    path = settings.local_jwt_secret_path
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        # Written aside, then linked into place: when several processes start at once, exactly one secret
        # wins and nobody reads a half-written file.
        staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        staging.write_text(secrets.token_urlsafe(32) + "\n", encoding="utf-8")
        staging.chmod(0o600)
        try:
            os.link(staging, path)
            logger.info("Generated a JWT secret for local use in %s", path)
        except FileExistsError:
            pass
        finally:
            staging.unlink()
    secret = path.read_text(encoding="utf-8").strip()
    if len(secret) < MIN_SECRET_LENGTH:
        raise ConfigurationError(f"{path} does not hold a usable JWT secret: delete it to have a new one generated.")
    return secret
