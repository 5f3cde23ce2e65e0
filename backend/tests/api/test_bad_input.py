"""Hostile and broken uploads, generated here and sent through the real API.

Each is either refused with a 4xx whose JSON ``detail`` says what was wrong, or, when the table is
readable after all (other encodings, NaN and text numbers, ragged short rows, wide or huge cells), stored
and analysed correctly. Either way the server stays up and nothing of the caller's or anyone else's is
touched: no dataset document and no stored file is left behind by a refused upload.
"""

from __future__ import annotations

import io
import json
import os
import socket
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

import openpyxl
import pandas as pd
import pytest
from bson import ObjectId
from pymongo import MongoClient

from app.utils.sample_data import make_normal_transactions
from tests.api.support import Account, ApiServer, csv_bytes, register, upload, upload_ok, wait_for_status

ROWS = 150


def _transactions_csv() -> bytes:
    return csv_bytes(make_normal_transactions(ROWS, seed=31))


def _binary_noise() -> bytes:
    return b"\x89PNG\r\n\x1a\n" + os.urandom(4096)


def _zip_of(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _workbook_with_empty_sheets() -> bytes:
    workbook = openpyxl.Workbook()
    workbook.create_sheet("Second")
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def _decompression_bomb() -> bytes:
    """An .xlsx of about 1 MB whose one sheet inflates to 1 GiB of zeros."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("[Content_Types].xml", b"<Types/>")
        with archive.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as sheet:
            block = bytes(1 << 24)
            for _ in range(64):
                sheet.write(block)
    return buffer.getvalue()


def _ragged_csv() -> bytes:
    return b"a,b,c\n1,2,3\n4,5,6,7,8\n9,10,11\n"


# (case, filename, content, status, words the detail must contain)
REFUSED: list[tuple[str, str, Callable[[], bytes], int, str]] = [
    ("empty file", "empty.csv", lambda: b"", 400, "is empty"),
    ("only whitespace", "blank.csv", lambda: b"\n\r\n  \n", 400, "is empty"),
    ("header only", "header.csv", lambda: b"id,amount,region\n", 400, "no data rows"),
    ("binary file named .csv", "photo.csv", _binary_noise, 400, "not a text CSV"),
    ("xlsx that is not a zip", "report.xlsx", lambda: b"id,amount\n1,2\n", 400, "Excel workbook"),
    ("zip that is not a workbook", "archive.xlsx", lambda: _zip_of({"notes.txt": b"hello"}), 400, "Excel workbook"),
    ("workbook whose sheets are empty", "empty.xlsx", _workbook_with_empty_sheets, 400, "no data rows"),
    ("decompression bomb", "bomb.xlsx", _decompression_bomb, 400, "would expand to 1,024 MB"),
    ("rows longer than the header", "ragged.csv", _ragged_csv, 400, "could not be parsed as CSV"),
    ("legacy .xls that is not one", "old.xls", lambda: b"\xd0\xcf\x11\xe0 broken", 400, "Excel workbook"),
    (
        "zip header, then garbage",
        "broken.xlsx",
        lambda: b"PK\x03\x04 this is not really a workbook",
        400,
        "Excel workbook",
    ),
    ("text file", "notes.txt", lambda: b"hello", 415, ".csv, .xlsx or .xls"),
    ("no extension", "table", lambda: b"a,b\n1,2\n", 415, ".csv, .xlsx or .xls"),
    ("executable", "run.exe", lambda: b"MZ\x90\x00", 415, ".csv, .xlsx or .xls"),
]


@pytest.fixture(scope="module")
def mongo(database_url: str) -> Iterator[Any]:
    """The tests' database, read directly to prove that nothing was stored."""
    client: MongoClient[dict[str, Any]] = MongoClient(database_url)
    yield client["api_tests"]
    client.close()


@pytest.fixture(scope="module")
def bystander(api: ApiServer) -> tuple[Account, str]:
    """Another user with a dataset: every refused upload must leave it exactly as it was."""
    account = register(api, "bystander")
    with api.client() as client:
        dataset_id = upload_ok(client, account, "theirs.csv", csv_bytes(make_normal_transactions(120, seed=30)))
    return account, dataset_id


def _stored(mongo: Any) -> tuple[int, int, int]:
    """Datasets, stored files and stored chunks in the whole database."""
    return (
        mongo["datasets"].count_documents({}),
        mongo["uploads.files"].count_documents({}),
        mongo["uploads.chunks"].count_documents({}),
    )


def _assert_server_up(api: ApiServer) -> None:
    with api.client() as client:
        assert client.get("/health").status_code == 200


@pytest.mark.parametrize(
    ("filename", "make_content", "status", "words"),
    [pytest.param(*case[1:], id=case[0]) for case in REFUSED],
)
def test_unreadable_upload_is_refused_with_a_clear_detail_and_nothing_stored(
    api: ApiServer,
    account: Account,
    bystander: tuple[Account, str],
    mongo: Any,
    filename: str,
    make_content: Callable[[], bytes],
    status: int,
    words: str,
) -> None:
    content = make_content()
    before = _stored(mongo)
    with api.client() as client:
        answer = upload(client, account, filename, content)
        listed = client.get("/api/anomaly/datasets", headers=account.headers).json()
        theirs = client.get(f"/api/anomaly/datasets/{bystander[1]}", headers=bystander[0].headers)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert words in answer.json()["detail"]
    assert listed == []
    assert _stored(mongo) == before
    assert theirs.status_code == 200 and theirs.json()["status"] == "uploaded"
    _assert_server_up(api)


def _analysed(api: ApiServer, account: Account, filename: str, content: bytes) -> tuple[dict[str, Any], Any]:
    """Upload and analyse; return the dataset's description and its final status."""
    with api.client() as client:
        uploaded = upload(client, account, filename, content)
        assert uploaded.status_code == 201, uploaded.text
        dataset = uploaded.json()
        started = client.post(f"/api/anomaly/datasets/{dataset['id']}/analyze", headers=account.headers)
        assert started.status_code == 202, started.text
        status = wait_for_status(client, account, dataset["id"])
    assert status["status"] == "analyzed", status
    return dataset, status


def _strict_json(text: str) -> Any:
    """Parse as standard JSON: NaN and Infinity, which Python would accept, are refused."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"non-standard JSON constant {constant} in the answer")

    return json.loads(text, parse_constant=refuse)


def _all_anomalies(api: ApiServer, account: Account, dataset_id: str) -> dict[str, Any]:
    with api.client() as client:
        answer = client.get(
            f"/api/anomaly/datasets/{dataset_id}/anomalies", params={"limit": 1000}, headers=account.headers
        )
    assert answer.status_code == 200, answer.text
    page: dict[str, Any] = _strict_json(answer.text)
    return page


@pytest.mark.parametrize("encoding", ["utf-16", "latin-1"])
def test_csv_in_another_encoding_is_read_as_text(api: ApiServer, account: Account, encoding: str) -> None:
    frame = make_normal_transactions(ROWS, seed=32)
    frame["région"] = ["Zürich", "Göteborg", "São Paulo"] * (ROWS // 3)
    dataset, status = _analysed(api, account, "accents.csv", frame.to_csv(index=False).encode(encoding))
    assert dataset["row_count"] == ROWS
    assert dataset["columns"][-1] == "région"
    assert status["row_count"] == ROWS
    items = _all_anomalies(api, account, dataset["id"])["items"]
    assert {item["values"]["région"] for item in items} <= {"Zürich", "Göteborg", "São Paulo"}


def test_short_rows_are_read_with_empty_cells(api: ApiServer, account: Account) -> None:
    lines = _transactions_csv().decode().splitlines()
    lines[5] = ",".join(lines[5].split(",")[:-3])  # row 4 lacks its last three cells
    dataset, status = _analysed(api, account, "short.csv", ("\n".join(lines) + "\n").encode())
    assert dataset["row_count"] == ROWS
    assert status["anomaly_count"] >= 1


def test_nan_infinity_and_numbers_as_text_are_scored_and_answered_as_json(api: ApiServer, account: Account) -> None:
    frame = make_normal_transactions(ROWS, seed=33).astype({"value1": object, "value2": object})
    frame.loc[3, "value1"] = "NaN"
    frame.loc[4, "value1"] = "inf"
    frame.loc[5, "value1"] = "-Infinity"
    frame.loc[6, "value2"] = " 1234.5 "
    frame.loc[7, "value2"] = ""
    dataset, status = _analysed(api, account, "gaps.csv", csv_bytes(frame))
    assert status["row_count"] == ROWS
    page = _all_anomalies(api, account, dataset["id"])
    assert page["total"] == status["anomaly_count"]
    with api.client() as client:
        results = client.get(f"/api/anomaly/datasets/{dataset['id']}/results", headers=account.headers)
    assert results.status_code == 200
    assert len(pd.read_csv(io.BytesIO(results.content))) == ROWS


def test_duplicate_column_names_are_kept_apart(api: ApiServer, account: Account) -> None:
    frame = make_normal_transactions(ROWS, seed=34)
    frame.insert(5, "value1_again", frame["value1"] * 2)
    content = csv_bytes(frame).replace(b"value1_again", b"value1", 1)
    dataset, status = _analysed(api, account, "twice.csv", content)
    assert dataset["columns"].count("value1") == 1
    assert "value1.1" in dataset["columns"]
    assert status["row_count"] == ROWS


def test_ten_thousand_columns_are_stored_and_analysed(api: ApiServer, account: Account) -> None:
    rows = 80  # 10,000 one-digit cells a row: 80 rows fit the tests' 2 MB upload limit
    frame = make_normal_transactions(rows, seed=35)
    frame.loc[0, "value3"] = frame["value3"].max() * 50
    extra = pd.DataFrame({f"x{index}": [row % 10 for row in range(rows)] for index in range(10_000 - frame.shape[1])})
    wide = pd.concat([frame, extra], axis=1)
    dataset, status = _analysed(api, account, "wide.csv", csv_bytes(wide))
    assert dataset["column_count"] == 10_000
    assert status["anomaly_count"] >= 1
    page = _all_anomalies(api, account, dataset["id"])
    assert len(page["items"]) == status["anomaly_count"]
    assert len(page["items"][0]["values"]) == 10_000


def test_a_one_megabyte_cell_is_cut_in_the_anomaly_and_whole_in_the_download(api: ApiServer, account: Account) -> None:
    frame = make_normal_transactions(ROWS, seed=36)
    frame["note"] = "short"
    frame.loc[0, "note"] = "x" * (1 << 20)
    frame.loc[0, "value3"] = frame["value3"].max() * 50  # make the huge row an anomaly, so it is answered
    dataset, status = _analysed(api, account, "huge-cell.csv", csv_bytes(frame))
    assert dataset["row_count"] == ROWS
    items = _all_anomalies(api, account, dataset["id"])["items"]
    note = items[0]["values"]["note"]
    assert items[0]["row"] == 0 and note.startswith("x" * 500)
    assert len(note) < 1000 and "1,048,576 characters" in note and "download" in note
    with api.client() as client:
        results = client.get(f"/api/anomaly/datasets/{dataset['id']}/results", headers=account.headers)
    assert pd.read_csv(io.BytesIO(results.content))["note"][0] == "x" * (1 << 20)


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("../../etc/passwd.csv", "passwd.csv"),
        ("..\\..\\Windows\\evil.csv", "evil.csv"),
        ("C:\\Users\\me\\report.csv", "report.csv"),
        ("bad\x07name\x1b[31m.csv", "badname[31m.csv"),
        ("right\u202etxt.csv", "righttxt.csv"),
        ("  .csv", "upload.csv"),
        ("a" * 300 + ".csv", "a" * 251 + ".csv"),
    ],
    ids=["unix path", "windows path", "drive path", "control characters", "bidi override", "blank stem", "long"],
)
def test_filename_is_stored_without_path_or_control_characters(
    api: ApiServer, account: Account, sent: str, stored: str
) -> None:
    boundary = "name-boundary"
    body = _multipart_head(boundary, sent) + _transactions_csv() + f"\r\n--{boundary}--\r\n".encode()
    headers = {**account.headers, "Content-Type": f"multipart/form-data; boundary={boundary}"}
    with api.client() as client:  # sent by hand: httpx would escape the control characters itself
        answer = client.post("/api/anomaly/datasets/upload", headers=headers, content=body)
        assert answer.status_code == 201, answer.text
        described = client.get(f"/api/anomaly/datasets/{answer.json()['id']}", headers=account.headers).json()
    assert answer.json()["filename"] == described["filename"] == stored


def _multipart_head(boundary: str, filename: str = "cut.csv") -> bytes:
    return (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    ).encode()


def test_multipart_body_without_its_closing_boundary_answers_422(api: ApiServer, account: Account, mongo: Any) -> None:
    boundary = "cut-boundary"
    body = _multipart_head(boundary) + _transactions_csv()  # the body ends where the file's part should close
    before = _stored(mongo)
    headers = {**account.headers, "Content-Type": f"multipart/form-data; boundary={boundary}"}
    with api.client() as client:
        answer = client.post("/api/anomaly/datasets/upload", headers=headers, content=body)
    assert answer.status_code == 422, answer.text
    assert "file (multipart form field): Field required" in answer.json()["detail"]
    assert _stored(mongo) == before
    _assert_server_up(api)


def test_connection_dropped_mid_body_stores_nothing(api: ApiServer, account: Account, mongo: Any) -> None:
    """The client promises more bytes than it sends, then hangs up: the server stores nothing and stays up."""
    boundary = "dropped-boundary"
    body = _multipart_head(boundary) + _transactions_csv() + f"\r\n--{boundary}--\r\n".encode()
    before = _stored(mongo)
    request = (
        f"POST /api/anomaly/datasets/upload HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: {account.headers['Authorization']}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as connection:
        connection.sendall(request + body[: len(body) // 2])
        time.sleep(0.3)
    time.sleep(0.5)
    _assert_server_up(api)
    with api.client() as client:
        assert client.get("/api/anomaly/datasets", headers=account.headers).json() == []
    assert _stored(mongo) == before


def test_analyze_of_a_deleted_dataset_answers_404(api: ApiServer, account: Account) -> None:
    with api.client() as client:
        dataset_id = upload_ok(client, account, "gone.csv", _transactions_csv())
        assert client.delete(f"/api/anomaly/datasets/{dataset_id}", headers=account.headers).status_code == 204
        answer = client.post(f"/api/anomaly/datasets/{dataset_id}/analyze", headers=account.headers)
    assert answer.status_code == 404
    assert "GET /api/anomaly/datasets" in answer.json()["detail"]


def test_a_dataset_still_uploading_cannot_be_seen_or_analysed(api: ApiServer, account: Account, mongo: Any) -> None:
    """A dataset exists only once its file is stored: while the body still streams in, there is nothing to
    list or analyse, and analysing the id it will get is a 404 until the upload answers 201."""
    boundary = "slow-boundary"
    content = csv_bytes(make_normal_transactions(2000, seed=37))
    pieces = [_multipart_head(boundary)] + [content[i : i + 16384] for i in range(0, len(content), 16384)]
    pieces.append(f"\r\n--{boundary}--\r\n".encode())
    halfway = threading.Event()

    def slow_body() -> Iterator[bytes]:
        for index, piece in enumerate(pieces):
            if index == len(pieces) // 2:
                halfway.set()
                time.sleep(1.0)
            yield piece

    answers: list[Any] = []
    headers = {**account.headers, "Content-Type": f"multipart/form-data; boundary={boundary}"}

    def send() -> None:
        with api.client() as client:
            answers.append(client.post("/api/anomaly/datasets/upload", headers=headers, content=slow_body()))

    sender = threading.Thread(target=send)
    sender.start()
    assert halfway.wait(30)
    owner = ObjectId(_user_id(api, account))
    with api.client() as client:
        listed = client.get("/api/anomaly/datasets", headers=account.headers).json()
        stored = mongo["datasets"].count_documents({"owner_id": owner})
        guessed = client.post(f"/api/anomaly/datasets/{ObjectId()}/analyze", headers=account.headers)
    sender.join(60)
    assert listed == [] and stored == 0
    assert guessed.status_code == 404
    assert answers[0].status_code == 201, answers[0].text
    assert answers[0].json()["row_count"] == 2000


def _user_id(api: ApiServer, account: Account) -> str:
    with api.client() as client:
        user_id: str = client.get("/api/auth/me", headers=account.headers).json()["id"]
    return user_id
