"""Accounts and bearer tokens: what a client without a valid token, or with someone else's, gets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import pytest

from app.utils.sample_data import make_normal_transactions
from tests.api.support import JWT_SECRET, Account, ApiServer, csv_bytes, register, upload_ok


def test_register_login_and_me(api: ApiServer) -> None:
    with api.client() as client:
        created = client.post("/api/auth/register", json={"username": "carol-auth", "password": "s3cret-pass"})
        assert created.status_code == 201
        assert "password" not in created.text
        token = client.post("/api/auth/token", data={"username": "carol-auth", "password": "s3cret-pass"}).json()
        assert token["token_type"] == "bearer"
        me = client.get("/api/auth/me", headers={"Authorization": f"Bearer {token['access_token']}"})
    assert me.status_code == 200
    assert me.json()["username"] == "carol-auth"


def test_taken_username_answers_409(api: ApiServer, account: Account) -> None:
    with api.client() as client:
        again = client.post("/api/auth/register", json={"username": account.username, "password": "another-pass"})
    assert again.status_code == 409
    assert "taken" in again.json()["detail"]


def test_wrong_password_answers_401(api: ApiServer, account: Account) -> None:
    with api.client() as client:
        answer = client.post("/api/auth/token", data={"username": account.username, "password": "wrong-password"})
    assert answer.status_code == 401
    assert "Incorrect username or password" in answer.json()["detail"]


def _me_with(api: ApiServer, headers: dict[str, str]) -> tuple[int, str]:
    with api.client() as client:
        answer = client.get("/api/anomaly/datasets", headers=headers)
    return answer.status_code, answer.json()["detail"]


def test_no_token_answers_401_saying_how_to_get_one(api: ApiServer) -> None:
    status, detail = _me_with(api, {})
    assert status == 401
    assert "POST /api/auth/token" in detail


def test_malformed_token_answers_401(api: ApiServer) -> None:
    status, detail = _me_with(api, {"Authorization": "Bearer not-a-jwt"})
    assert status == 401
    assert "malformed" in detail


def test_wrongly_signed_token_answers_401(api: ApiServer, account: Account) -> None:
    user_id = _user_id(api, account)
    forged = jwt.encode({"sub": user_id, "exp": datetime.now(UTC) + timedelta(minutes=5)}, "x" * 40, algorithm="HS256")
    status, detail = _me_with(api, {"Authorization": f"Bearer {forged}"})
    assert status == 401
    assert "signature" in detail


def test_expired_token_answers_401(api: ApiServer, account: Account) -> None:
    user_id = _user_id(api, account)
    expired = jwt.encode(
        {"sub": user_id, "exp": datetime.now(UTC) - timedelta(minutes=1)}, JWT_SECRET, algorithm="HS256"
    )
    status, detail = _me_with(api, {"Authorization": f"Bearer {expired}"})
    assert status == 401
    assert "expired" in detail


def test_unsigned_token_is_refused(api: ApiServer, account: Account) -> None:
    user_id = _user_id(api, account)
    unsigned = jwt.encode({"sub": user_id, "exp": datetime.now(UTC) + timedelta(minutes=5)}, None, algorithm="none")
    status, _ = _me_with(api, {"Authorization": f"Bearer {unsigned}"})
    assert status == 401


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", ""),
        ("GET", "/status"),
        ("POST", "/analyze"),
        ("GET", "/anomalies"),
        ("GET", "/results"),
        ("DELETE", ""),
    ],
)
def test_another_users_dataset_answers_404(api: ApiServer, account: Account, method: str, path: str) -> None:
    intruder = register(api, "intruder")
    with api.client() as client:
        dataset_id = upload_ok(client, account, "test.csv", csv_bytes(make_normal_transactions(120, seed=4)))
        theirs = client.request(method, f"/api/anomaly/datasets/{dataset_id}{path}", headers=intruder.headers)
        missing = client.request(method, f"/api/anomaly/datasets/{'0' * 24}{path}", headers=intruder.headers)
        still_there = client.get(f"/api/anomaly/datasets/{dataset_id}", headers=account.headers)
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["detail"].replace(dataset_id, "ID") == missing.json()["detail"].replace("0" * 24, "ID")
    assert still_there.status_code == 200


def test_dataset_list_shows_only_the_callers_datasets(api: ApiServer, account: Account) -> None:
    other = register(api, "other")
    with api.client() as client:
        mine = upload_ok(client, account, "mine.csv", csv_bytes(make_normal_transactions(110, seed=1)))
        theirs = upload_ok(client, other, "theirs.csv", csv_bytes(make_normal_transactions(110, seed=2)))
        listed = client.get("/api/anomaly/datasets", headers=account.headers).json()
    assert [dataset["id"] for dataset in listed] == [mine]
    assert theirs not in {dataset["id"] for dataset in listed}


def _user_id(api: ApiServer, account: Account) -> str:
    with api.client() as client:
        user_id: str = client.get("/api/auth/me", headers=account.headers).json()["id"]
    return user_id
