"""Answers the framework gives (unknown path, wrong method, unreadable body) still say what to do."""

from __future__ import annotations

from tests.api.support import Account, ApiServer


def test_an_unknown_path_points_to_the_docs(api: ApiServer) -> None:
    with api.client() as client:
        answer = client.get("/api/anomaly/nothing-here")

    assert answer.status_code == 404
    assert "/docs" in answer.json()["detail"]


def test_a_wrong_method_names_where_the_allowed_ones_are(api: ApiServer) -> None:
    with api.client() as client:
        answer = client.delete("/health")

    assert answer.status_code == 405
    assert "Allow header" in answer.json()["detail"]
    assert "GET" in answer.headers["allow"]


def test_an_unreadable_form_body_says_how_to_send_the_file(api: ApiServer, account: Account) -> None:
    headers = {**account.headers, "Content-Type": "multipart/form-data; boundary=x"}
    with api.client() as client:
        answer = client.post("/api/anomaly/datasets/upload", headers=headers, content=b"--x\r\nbroken")

    assert answer.status_code in (400, 422)
    assert "file" in answer.json()["detail"]
