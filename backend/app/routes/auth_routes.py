"""Accounts and bearer tokens (OAuth2 password flow)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, status
from fastapi.security import OAuth2PasswordRequestForm

from app.api import errors
from app.api.deps import CurrentUser, DatabaseDep, ResourcesDep, SettingsDep
from app.core.errors import (
    AuthenticationError,
    RegistrationClosedError,
    TooManyLoginFailuresError,
    UsernameTakenError,
)
from app.schemas.auth import RegisterRequest, TokenOut, UserOut
from app.services import auth

router = APIRouter(prefix="/api/auth", tags=["auth"])


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    responses=errors.responses(RegistrationClosedError, UsernameTakenError),
)
async def register(body: RegisterRequest, database: DatabaseDep, settings: SettingsDep) -> UserOut:
    """Create an account."""
    return UserOut.from_user(await auth.register(database, settings, body.username, body.password))


@router.post("/token", responses=errors.responses(AuthenticationError, TooManyLoginFailuresError))
async def token(
    form: Annotated[OAuth2PasswordRequestForm, Depends()], resources: ResourcesDep, request: Request
) -> TokenOut:
    """Exchange a username and password (form fields) for a bearer token (429 after repeated failures)."""
    address = request.client.host if request.client else None
    access_token = await auth.issue_token(
        resources.database, resources.settings, resources.jwt_secret, form.username, form.password, address
    )
    return TokenOut(access_token=access_token, expires_in=resources.settings.access_token_expire_minutes * 60)


@router.get("/me", responses=errors.responses(AuthenticationError))
async def me(user: CurrentUser) -> UserOut:
    """The caller's account."""
    return UserOut.from_user(user)
