"""Security: tokens that must not pass, other users' datasets on every route, passwords kept out of logs and
answers, login throttling that a parallel burst cannot outrun, a client address nobody can choose, registration
floods, and error bodies that leak nothing."""

from __future__ import annotations

import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import jwt.warnings
import pytest
from bson import ObjectId
from pymongo import MongoClient

from app.core.config import Settings
from app.core.security import MAX_CONCURRENT_PASSWORD_HASHES
from app.utils.sample_data import make_normal_transactions
from tests.api.support import (
    JWT_SECRET,
    MAX_LOGIN_FAILURES_PER_ADDRESS,
    MAX_LOGIN_FAILURES_PER_USERNAME,
    Account,
    ApiServer,
    csv_bytes,
    register,
    upload_ok,
)

LEAK_MARKERS = ("Traceback", 'File "', "/backend/", ".py", "site-packages")


def _user_id(api: ApiServer, account: Account) -> str:
    with api.client() as client:
        user_id: str = client.get("/api/auth/me", headers=account.headers).json()["id"]
    return user_id


def _token(claims: dict[str, Any], key: str = JWT_SECRET, algorithm: str = "HS256") -> dict[str, str]:
    with warnings.catch_warnings():  # PyJWT finds our key short for HS512, which is the point of that case
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        token = jwt.encode(claims, key, algorithm=algorithm)
    return {"Authorization": f"Bearer {token}"}


def test_token_of_a_deleted_user_answers_401(api: ApiServer, database_url: str) -> None:
    account = register(api, "doomed")
    user_id = _user_id(api, account)
    with MongoClient(database_url) as client:
        assert client["api_tests"]["users"].delete_one({"_id": ObjectId(user_id)}).deleted_count == 1
    with api.client() as http:
        answer = http.get("/api/anomaly/datasets", headers=account.headers)
    assert answer.status_code == 401
    assert "no longer exists" in answer.json()["detail"]
    assert answer.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Authorization": "Bearer"}, id="empty bearer"),
        pytest.param({"Authorization": "Basic dXNlcjpwYXNz"}, id="basic scheme"),
        pytest.param({"Authorization": "Bearer a.b.c"}, id="three garbage segments"),
        pytest.param(_token({"sub": str(ObjectId())}), id="no expiry"),
        pytest.param(_token({"exp": datetime.now(UTC) + timedelta(hours=1)}), id="no subject"),
        pytest.param(_token({"sub": "not-an-id", "exp": datetime.now(UTC) + timedelta(hours=1)}), id="odd subject"),
        pytest.param(
            _token({"sub": str(ObjectId()), "exp": datetime.now(UTC) + timedelta(hours=1)}, algorithm="HS512"),
            id="right key, other algorithm",
        ),
    ],
)
def test_tokens_that_are_not_ours_answer_401(api: ApiServer, headers: dict[str, str]) -> None:
    with api.client() as client:
        answer = client.get("/api/auth/me", headers=headers)
    assert answer.status_code == 401
    assert answer.json()["detail"]


def _dataset_operations(api: ApiServer) -> list[tuple[str, str]]:
    """Every (method, path) of the API that names a dataset, as the OpenAPI schema lists them."""
    with api.client() as client:
        paths = client.get("/openapi.json").json()["paths"]
    return [(method.upper(), path) for path, item in paths.items() if "{dataset_id}" in path for method in item]


def test_every_dataset_route_answers_404_for_another_users_dataset_and_changes_nothing(
    api: ApiServer, database_url: str
) -> None:
    owner, intruder = register(api, "owner"), register(api, "intruder")
    operations = _dataset_operations(api)
    assert len(operations) >= 6, operations
    with api.client() as client:
        dataset_id = upload_ok(client, owner, "mine.csv", csv_bytes(make_normal_transactions(150, seed=41)))
        before = client.get(f"/api/anomaly/datasets/{dataset_id}", headers=owner.headers).json()
        answers = {
            (method, path): client.request(
                method, path.replace("{dataset_id}", dataset_id), headers=intruder.headers, json={}
            )
            for method, path in operations
        }
        after = client.get(f"/api/anomaly/datasets/{dataset_id}", headers=owner.headers).json()
        intruder_list = client.get("/api/anomaly/datasets", headers=intruder.headers).json()
    wrong = {operation: answer.status_code for operation, answer in answers.items() if answer.status_code != 404}
    assert not wrong, f"another user's dataset answered: {wrong}"
    assert after == before and after["status"] == "uploaded"
    assert intruder_list == []
    with MongoClient(database_url) as mongo:
        assert mongo["api_tests"]["analysis_sessions"].count_documents({"dataset_id": ObjectId(dataset_id)}) == 0


def test_passwords_are_never_returned_or_logged(api: ApiServer) -> None:
    username = f"secretive-{uuid.uuid4().hex[:8]}"
    password = f"pw-{uuid.uuid4().hex}"
    wrong = f"wrong-{uuid.uuid4().hex}"
    short = f"s{uuid.uuid4().hex[:4]}"
    with api.client() as client:
        answers = [
            client.post("/api/auth/register", json={"username": username, "password": password}),
            client.post("/api/auth/register", json={"username": username, "password": password}),  # 409
            client.post("/api/auth/register", json={"username": "x", "password": short}),  # 422
            client.post("/api/auth/token", data={"username": username, "password": wrong}),  # 401
            client.post("/api/auth/token", data={"username": password, "password": password}),  # typed in the wrong box
            client.post("/api/auth/token", data={"username": username, "password": password}),  # 200
        ]
    assert [answer.status_code for answer in answers] == [201, 409, 422, 401, 401, 200]
    log = api.log_text()
    for secret in (password, wrong, short):
        assert all(secret not in answer.text for answer in answers), secret
        assert secret not in log, f"{secret} was logged"


def _login(api: ApiServer, username: str, password: str, address: str) -> httpx.Response:
    # The test servers trust X-Forwarded-For from 127.0.0.1 (FORWARDED_ALLOW_IPS), as from a reverse proxy: the
    # tests pose as distinct clients with it.
    with api.client() as client:
        return client.post(
            "/api/auth/token", data={"username": username, "password": password}, headers={"X-Forwarded-For": address}
        )


def test_repeated_failures_for_one_username_from_one_address_answer_429_with_retry_after(api: ApiServer) -> None:
    account = register(api, "guessed")
    address = "127.0.10.1"
    failures = [_login(api, account.username, f"guess-{n}", address) for n in range(MAX_LOGIN_FAILURES_PER_USERNAME)]
    throttled = _login(api, account.username, "a-long-password", address)  # even the right password
    other_user = register(api, "unrelated")
    unaffected = _login(api, other_user.username, "a-long-password", address)
    assert [answer.status_code for answer in failures] == [401] * MAX_LOGIN_FAILURES_PER_USERNAME
    assert throttled.status_code == 429
    assert 0 < int(throttled.headers["retry-after"]) <= 900
    assert "Too many failed logins" in throttled.json()["detail"]
    assert unaffected.status_code == 200


def test_failures_from_another_address_do_not_lock_the_owner_out(api: ApiServer) -> None:
    """An attacker exhausting a username's attempts from their address cannot lock the account for everyone."""
    account = register(api, "targeted")
    attacker, owner = "127.0.12.1", "127.0.12.2"
    failures = [_login(api, account.username, f"guess-{n}", attacker) for n in range(MAX_LOGIN_FAILURES_PER_USERNAME)]
    attacker_again = _login(api, account.username, "guess", attacker)
    owner_login = _login(api, account.username, "a-long-password", owner)
    assert [answer.status_code for answer in failures] == [401] * MAX_LOGIN_FAILURES_PER_USERNAME
    assert attacker_again.status_code == 429
    assert owner_login.status_code == 200, owner_login.text


def test_repeated_failures_from_one_address_answer_429_for_every_username(api: ApiServer) -> None:
    account = register(api, "neighbour")
    address = "127.0.11.1"

    def fail(index: int) -> int:
        return _login(api, f"nobody-{uuid.uuid4().hex[:8]}", "guess", address).status_code

    with ThreadPoolExecutor(max_workers=4) as pool:
        statuses = list(pool.map(fail, range(MAX_LOGIN_FAILURES_PER_ADDRESS)))
    throttled = _login(api, account.username, "a-long-password", address)
    elsewhere = _login(api, account.username, "a-long-password", "127.0.11.2")
    assert statuses == [401] * MAX_LOGIN_FAILURES_PER_ADDRESS
    assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) > 0
    assert elsewhere.status_code == 200


def test_a_parallel_burst_of_guesses_gets_no_more_password_checks_than_the_limit(api: ApiServer) -> None:
    """30 wrong passwords at once for one username from one address: each reserves its failure before its
    password is checked, so at most the limit's number are checked (401) and the rest are refused (429).

    A refused attempt gives its reservations back, and one can be refused by the address's count while the
    pair's count still had room, so the burst may check fewer than the limit; what holds is that the pair is
    never checked more than the limit in all: exactly the remainder is still checked, then it is refused."""
    account = register(api, "burst")
    address = "127.0.13.1"
    with ThreadPoolExecutor(max_workers=30) as pool:
        answers = list(pool.map(lambda n: _login(api, account.username, f"guess-{n}", address), range(30)))
    statuses = [answer.status_code for answer in answers]
    checked = statuses.count(401)
    assert 1 <= checked <= MAX_LOGIN_FAILURES_PER_USERNAME, statuses
    assert statuses.count(429) == 30 - checked, statuses
    assert all(int(answer.headers["retry-after"]) > 0 for answer in answers if answer.status_code == 429)
    remainder = [
        _login(api, account.username, f"late-{n}", address).status_code
        for n in range(MAX_LOGIN_FAILURES_PER_USERNAME - checked)
    ]
    assert remainder == [401] * (MAX_LOGIN_FAILURES_PER_USERNAME - checked)
    assert _login(api, account.username, "a-long-password", address).status_code == 429
    assert _login(api, account.username, "a-long-password", "127.0.13.2").status_code == 200


def test_x_forwarded_for_is_ignored_by_default(untrusting_api: ApiServer) -> None:
    """With FORWARDED_ALLOW_IPS unset, a client naming other addresses in X-Forwarded-For is still counted as
    itself: its failures add up, and the request log names its real address."""
    account = register(untrusting_api, "spoofer")
    spoofed = [f"203.0.113.{n}" for n in range(MAX_LOGIN_FAILURES_PER_USERNAME + 1)]
    failures = [_login(untrusting_api, account.username, "guess", address) for address in spoofed[:-1]]
    throttled = _login(untrusting_api, account.username, "a-long-password", spoofed[-1])
    assert [answer.status_code for answer in failures] == [401] * MAX_LOGIN_FAILURES_PER_USERNAME
    assert throttled.status_code == 429
    logged = {event["client"] for event in untrusting_api.events("request") if event["route"] == "/api/auth/token"}
    assert logged == {"127.0.0.1"}


def _peak_memory_mb(server: ApiServer) -> float:
    """The server process's peak resident memory (VmHWM), in MiB."""
    assert server.process is not None
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the server's memory from /proc")
def test_a_registration_flood_is_refused_past_the_limit_and_keeps_memory_bounded(untrusting_api: ApiServer) -> None:
    """50 registrations at once from one address (each naming another in X-Forwarded-For, which counts for
    nothing): at most REGISTRATIONS_PER_ADDRESS (20) are created, the rest answer 429, and since at most a few
    64 MiB password hashes run at once, the server's peak memory grows by a few hundred MB, not 50 x 64 MiB."""
    limit = Settings.model_fields["registrations_per_address"].default

    def register_once(index: int) -> httpx.Response:
        body = {"username": f"flood-{uuid.uuid4().hex[:10]}", "password": "a-long-password"}
        with untrusting_api.client() as client:
            return client.post("/api/auth/register", json=body, headers={"X-Forwarded-For": f"198.51.100.{index}"})

    peak_before = _peak_memory_mb(untrusting_api)
    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(register_once, range(50)))
    growth = _peak_memory_mb(untrusting_api) - peak_before
    statuses = [answer.status_code for answer in answers]
    assert statuses.count(201) <= limit and statuses.count(201) + statuses.count(429) == 50, statuses
    refused = [answer for answer in answers if answer.status_code == 429]
    assert len(refused) >= 50 - limit
    assert all(0 < int(answer.headers["retry-after"]) <= 3600 for answer in refused)
    assert "Too many accounts were created from this address" in refused[0].json()["detail"]
    assert growth < MAX_CONCURRENT_PASSWORD_HASHES * 64 + 128, f"peak memory grew by {growth:.0f} MiB"


def test_error_bodies_name_no_code_paths_or_traces(api: ApiServer, account: Account) -> None:
    with api.client() as client:
        answers = [
            client.get("/api/anomaly/datasets/not-an-id", headers=account.headers),
            client.post("/api/anomaly/datasets/upload", headers=account.headers, content=b"\x00" * 100),
            client.post(
                "/api/anomaly/datasets/upload",
                headers={**account.headers, "Content-Type": "multipart/form-data; boundary=x"},
                content=b"--x\r\nContent-Disposition: form-data; name=file\r\n\r\n",
            ),
            client.post(f"/api/anomaly/datasets/{ObjectId()}/analyze", headers=account.headers, content=b"{not json"),
            client.get("/api/anomaly/datasets?limit=-1", headers=account.headers),
            client.get("/no/such/route"),
        ]
    for answer in answers:
        assert 400 <= answer.status_code < 500, answer.text
        assert isinstance(answer.json()["detail"], str), answer.text
        assert not [marker for marker in LEAK_MARKERS if marker in answer.text], answer.text
        assert answer.headers["x-request-id"]
