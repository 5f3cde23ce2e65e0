"""Uploads that cannot be stored: too large (413), not a table type (415), not a readable table (400)."""

from __future__ import annotations

from collections.abc import Iterator

from app.utils.sample_data import make_normal_transactions
from tests.api.support import MAX_UPLOAD_MB, Account, ApiServer, csv_bytes, upload, upload_ok


def _oversized_csv() -> bytes:
    row = b"1,2025-01-01 10:00:00,north,web," + b",".join([b"12345.67"] * 16) + b"\n"
    header = b"id,timestamp,region,channel," + b",".join(f"value{i}".encode() for i in range(1, 17)) + b"\n"
    return header + row * (MAX_UPLOAD_MB * 1024 * 1024 // len(row) + 1000)


def test_upload_over_the_limit_answers_413(api: ApiServer, account: Account) -> None:
    with api.client() as client:
        answer = upload(client, account, "big.csv", _oversized_csv())
    assert answer.status_code == 413
    assert f"{MAX_UPLOAD_MB} MB" in answer.json()["detail"]


def test_streamed_upload_over_the_limit_answers_413(api: ApiServer, account: Account) -> None:
    """Without a Content-Length, the body is counted as it arrives and refused once it passes the limit."""
    content = _oversized_csv()
    boundary = "test-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def body() -> Iterator[bytes]:  # a generator: httpx sends it chunked, with no Content-Length
        yield head
        for start in range(0, len(content), 64 * 1024):
            yield content[start : start + 64 * 1024]
        yield tail

    headers = {**account.headers, "Content-Type": f"multipart/form-data; boundary={boundary}"}
    with api.client() as client:
        answer = client.post("/api/anomaly/datasets/upload", headers=headers, content=body())
    assert answer.status_code == 413
    assert "upload limit" in answer.json()["detail"]


def _large_login_body() -> Iterator[bytes]:
    yield b"username=someone&password="
    for _ in range(16):
        yield b"x" * (64 * 1024)


def test_a_large_body_to_any_other_route_answers_413_and_the_server_stays_healthy(
    api: ApiServer, account: Account
) -> None:
    """Only the upload takes MAX_UPLOAD_MB: unauthenticated register and login refuse a 1 MB body, declared
    or streamed, and say what to do."""
    megabyte = b"username=someone&password=" + b"x" * (1024 * 1024)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    with api.client() as client:
        declared = client.post("/api/auth/token", headers=form, content=megabyte)
        streamed = client.post("/api/auth/token", headers=form, content=_large_login_body())
        register = client.post(
            "/api/auth/register", headers={"Content-Type": "application/json"}, content=b'{"username": "' + megabyte
        )
        health = client.get("/health")
        listed = client.get("/api/anomaly/datasets", headers=account.headers)
    for answer in (declared, streamed, register):
        assert answer.status_code == 413, answer.text
        assert "64 KB limit" in answer.json()["detail"]
        assert "/api/anomaly/datasets/upload" in answer.json()["detail"]
    assert health.status_code == 200
    assert listed.status_code == 200


def test_delete_removes_the_dataset(api: ApiServer, account: Account) -> None:
    with api.client() as client:
        dataset_id = upload_ok(client, account, "gone.csv", csv_bytes(make_normal_transactions(130, seed=9)))
        client.post(f"/api/anomaly/datasets/{dataset_id}/analyze", headers=account.headers)
        deleted = client.delete(f"/api/anomaly/datasets/{dataset_id}", headers=account.headers)
        after = client.get(f"/api/anomaly/datasets/{dataset_id}/status", headers=account.headers)
        listed = client.get("/api/anomaly/datasets", headers=account.headers).json()
    assert deleted.status_code == 204
    assert after.status_code == 404
    assert dataset_id not in {dataset["id"] for dataset in listed}
