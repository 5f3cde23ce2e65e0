"""Accounts and bearer tokens (OAuth2 password flow)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, status
from fastapi.security import OAuth2PasswordRequestForm

from app.api import errors
from app.api.deps import ClientAddress, CurrentUser, DatabaseDep, ResourcesDep, SettingsDep
from app.core.errors import (
    AuthenticationError,
    RegistrationClosedError,
    TooManyLoginFailuresError,
    TooManyRegistrationsError,
    UsernameTakenError,
)
from app.schemas.auth import RegisterRequest, TokenOut, UserOut
from app.services import auth

router = APIRouter(prefix="/api/auth", tags=["auth"])


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    responses=errors.responses(RegistrationClosedError, UsernameTakenError, TooManyRegistrationsError),
)
async def register(
    body: RegisterRequest, database: DatabaseDep, settings: SettingsDep, address: ClientAddress
) -> UserOut:
    """Create an account (429 past REGISTRATIONS_PER_ADDRESS from one address in a window)."""
    user = await auth.register(database, settings, username=body.username, password=body.password, address=address)
    return UserOut.from_user(user)


@router.post("/token", responses=errors.responses(AuthenticationError, TooManyLoginFailuresError))
async def token(
    form: Annotated[OAuth2PasswordRequestForm, Depends()], resources: ResourcesDep, address: ClientAddress
) -> TokenOut:
    """Exchange a username and password (form fields) for a bearer token (429 after repeated failures)."""
    access_token = await auth.issue_token(
        resources.database,
        resources.settings,
        secret=resources.jwt_secret,
        username=form.username,
        password=form.password,
        address=address,
    )
    return TokenOut(access_token=access_token, expires_in=resources.settings.access_token_expire_minutes * 60)


@router.get("/me", responses=errors.responses(AuthenticationError))
async def me(user: CurrentUser) -> UserOut:
    """The caller's account."""
    return UserOut.from_user(user)
