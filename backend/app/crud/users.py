"""User accounts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from app.core.errors import UsernameTakenError
from app.db.collections import USERS, Database


@dataclass(frozen=True)
class User:
    """A registered account."""

    id: str
    username: str
    password_hash: str
    created_at: datetime


def _user(document: dict[str, Any]) -> User:
    return User(
        id=str(document["_id"]),
        username=document["username"],
        password_hash=document["password_hash"],
        created_at=document["created_at"],
    )


async def insert(database: Database, username: str, password_hash: str) -> User:
    """Create an account; ``UsernameTakenError`` if the username exists (the unique index decides races)."""
    document = {"username": username, "password_hash": password_hash, "created_at": datetime.now(UTC)}
    try:
        await database[USERS].insert_one(document)
    except DuplicateKeyError as error:
        raise UsernameTakenError(
            f"The username {username!r} is taken: choose another, or log in with POST /api/auth/token."
        ) from error
    return _user(document)


async def find_by_username(database: Database, username: str) -> User | None:
    """The account with this username, if any."""
    document = await database[USERS].find_one({"username": username})
    return _user(document) if document else None


async def find_by_id(database: Database, user_id: str) -> User | None:
    """The account with this id, if any (a malformed id finds nothing)."""
    if not ObjectId.is_valid(user_id):
        return None
    document = await database[USERS].find_one({"_id": ObjectId(user_id)})
    return _user(document) if document else None
