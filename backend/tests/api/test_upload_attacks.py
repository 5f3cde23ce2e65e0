"""Uploads built to crash the service or blow up its memory, each first reproduced, then sent through the API.

Every one is answered (refused with a 400 that says what to do, or accepted) while the API process's peak
memory (VmHWM in /proc, reset before each attack) grows far less than the 1.5 GB budget, and the server keeps
answering. Parsing happens in child processes, whose memory is theirs: the API process only streams bodies to
disk and files to GridFS.
"""

from __future__ import annotations

import io
import os
import select
import signal
import socket
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import ServerFactory
from tests.api.hostile_files import (
    CORPUS_FILES,
    PeakMemory,
    dense_workbook,
    large_csv,
    looping_cfb,
    shared_string_bomb,
)
from tests.api.support import Account, ApiServer, register, upload

MEMORY_BUDGET_BYTES = 1536 * 2**20


def _assert_still_serving(server: ApiServer, account: Account) -> None:
    """The server answers, and parses a normal upload (a parser that died was replaced)."""
    with server.client() as client:
        assert client.get("/health").status_code == 200
        answer = upload(client, account, "after.csv", b"a,b\n1,2\n3,4\n")
    assert answer.status_code == 201, answer.text


@pytest.fixture(scope="module")
def uploader(large_upload_api: ApiServer) -> Account:
    return register(large_upload_api, "attacker")


def test_shared_string_bomb_is_refused_before_parsing(large_upload_api: ApiServer, uploader: Account) -> None:
    """2,000 cells pointing at one 400 KB string: about 10 KB that a reader expands to 800 MB of text."""
    bomb = shared_string_bomb(cells=2_000, string_bytes=400_000)
    assert len(bomb) < 16 * 1024
    with PeakMemory(large_upload_api) as memory, large_upload_api.client() as client:
        answer = upload(client, uploader, "strings.xlsx", bomb)
    assert answer.status_code == 400, answer.text
    assert "MAX_TEXT_MB" in answer.json()["detail"] and "export the sheet as CSV" in answer.json()["detail"]
    assert memory.growth < MEMORY_BUDGET_BYTES
    _assert_still_serving(large_upload_api, uploader)


def test_a_dense_sheet_inside_the_zip_checks_is_refused_by_its_cell_count(
    large_upload_api: ApiServer, uploader: Account
) -> None:
    """100 million one-digit cells: 12 MB packed, 1.5 GB unpacked at 130:1, which the zip checks let through."""
    workbook = dense_workbook(cells=100_000_000)
    with zipfile.ZipFile(io.BytesIO(workbook)) as archive:
        unpacked = sum(entry.file_size for entry in archive.infolist())
    assert unpacked < 2 * 2**30 and unpacked / len(workbook) < 200
    with PeakMemory(large_upload_api) as memory, large_upload_api.client() as client:
        answer = upload(client, uploader, "dense.xlsx", workbook)
    assert answer.status_code == 400, answer.text
    assert "more than 25,000,000 cells (MAX_CELLS)" in answer.json()["detail"]
    assert memory.growth < MEMORY_BUDGET_BYTES
    _assert_still_serving(large_upload_api, uploader)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(looping_cfb, id="made-here"),
        pytest.param(lambda: (CORPUS_FILES / "phpspreadsheet__oleloop.xls").read_bytes(), id="phpspreadsheet"),
        pytest.param(lambda: (CORPUS_FILES / "libxls__xls2csv_ole_ole2_fread_327.xls").read_bytes(), id="libxls"),
    ],
)
def test_an_xls_whose_sector_chain_loops_answers_400_and_the_api_never_notices(
    large_upload_api: ApiServer, uploader: Account, content: Any
) -> None:
    """python-calamine allocates without bound on these 1 KB files until its process aborts: a parser child."""
    with PeakMemory(large_upload_api) as memory, large_upload_api.client() as client:
        answer = upload(client, uploader, "loop.xls", content())
    assert answer.status_code == 400, answer.text
    assert "could not be read within the 2,048 MB a parser may use" in answer.json()["detail"]
    assert "export it as CSV" in answer.json()["detail"]
    assert memory.growth < 100 * 2**20
    _assert_still_serving(large_upload_api, uploader)


def test_distinct_text_values_are_stored_compactly(large_upload_api: ApiServer, uploader: Account) -> None:
    """17 MB of distinct text (it used to take +587 MB in the API): stored, with little growth."""
    lines = [b"id,comment,code"] + [b"%d,comment number %d is unique,%x" % (i, i, i * 7919) for i in range(450_000)]
    content = b"\n".join(lines) + b"\n"
    assert len(content) > 17 * 2**20
    with PeakMemory(large_upload_api) as memory, large_upload_api.client() as client:
        answer = upload(client, uploader, "distinct.csv", content)
    assert answer.status_code == 201, answer.text
    assert answer.json()["row_count"] == 450_000
    assert memory.growth < 300 * 2**20


@pytest.mark.parametrize("columns", [60_000, 1_000_000])
def test_too_many_columns_are_refused_with_what_to_do(
    large_upload_api: ApiServer, uploader: Account, columns: int
) -> None:
    header = b",".join(b"c%d" % index for index in range(columns))
    content = header + b"\n" + b",".join([b"1"] * columns) + b"\n"
    with PeakMemory(large_upload_api) as memory, large_upload_api.client() as client:
        answer = upload(client, uploader, "wide.csv", content)
    assert answer.status_code == 400, answer.text
    assert f"has {columns:,} columns, more than the 10,000 allowed (MAX_COLUMNS)" in answer.json()["detail"]
    assert memory.growth < 300 * 2**20


def test_a_large_upload_is_parsed_and_stored_within_the_memory_budget(large_upload_api: ApiServer) -> None:
    account = register(large_upload_api, "large")
    content = large_csv(70 * 2**20)
    with PeakMemory(large_upload_api) as memory, httpx.Client(base_url=large_upload_api.url, timeout=600) as client:
        answer = upload(client, account, "large.csv", content)
    assert answer.status_code == 201, answer.text
    assert answer.json()["row_count"] == content.count(b"\n") - 1
    assert memory.growth < MEMORY_BUDGET_BYTES


def test_ten_simultaneous_large_uploads_keep_the_api_memory_bounded(large_upload_api: ApiServer) -> None:
    """Ten users upload 99 MB at once: bodies go to disk, two are parsed at a time while the others wait, and
    each is then refused by the storage quota (150 MB here), which counts its parsed table (89 MB) too."""
    content = large_csv(99 * 2**20)
    accounts = [register(large_upload_api, f"bulk{index}") for index in range(10)]
    answers: list[httpx.Response] = []

    def send(account: Account) -> None:
        with httpx.Client(base_url=large_upload_api.url, timeout=600) as client:
            answers.append(upload(client, account, "large.csv", content))

    with PeakMemory(large_upload_api) as memory:
        senders = [threading.Thread(target=send, args=(account,)) for account in accounts]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(600)
    assert [answer.status_code for answer in answers] == [409] * 10, [answer.text for answer in answers]
    assert all("this upload needs 188" in answer.json()["detail"] for answer in answers), answers[0].text
    assert memory.growth < MEMORY_BUDGET_BYTES


def _bytes_sent_before_the_answer(server: ApiServer, headers: dict[str, str], body_bytes: int) -> tuple[int, bytes]:
    """Send a request declaring a ``body_bytes`` multipart body, 16 KB at a time while no answer has come;
    return how much of the body went out before the answer arrived, and the answer's first bytes."""
    boundary = "attack-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    ).encode()
    lines = [
        "POST /api/anomaly/datasets/upload HTTP/1.1",
        "Host: 127.0.0.1",
        f"Content-Length: {body_bytes}",
        f"Content-Type: multipart/form-data; boundary={boundary}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    piece = b"1,2,3,4,5,6,7\n" * 1170  # ~16 KB
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as connection:
        # A small send buffer: bytes counted as sent have left for the server, not waited in our kernel.
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
        connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + head)
        deadline = time.monotonic() + 30
        while sent < body_bytes and time.monotonic() < deadline:
            readable, _, _ = select.select([connection], [], [], 0.005)
            if readable:
                break
            try:
                sent += connection.send(piece)
            except (BrokenPipeError, ConnectionResetError):
                break
        connection.settimeout(10)
        return sent, _read_answer(connection)


def _read_answer(connection: socket.socket) -> bytes:
    """One HTTP answer: its head and its Content-Length of body."""
    answer = b""
    while b"\r\n\r\n" not in answer and (data := connection.recv(4096)):
        answer += data
    head = answer.split(b"\r\n\r\n", 1)[0].lower()
    length = int(head.split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
    while len(answer) < len(head) + 4 + length and (data := connection.recv(4096)):
        answer += data
    return answer


def test_an_upload_without_a_token_is_answered_401_before_its_body_is_read(large_upload_api: ApiServer) -> None:
    sent, answer = _bytes_sent_before_the_answer(large_upload_api, {}, 100 * 2**20)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert sent < 2**20


@pytest.fixture(scope="module")
def tight_api(server_factory: ServerFactory, server_env: dict[str, str], empty_model_path: Path) -> ApiServer:
    """A server with small quotas (2 datasets, 2 MB) and one parser that nobody may queue for, killed after 3 s."""
    env = {
        **server_env,
        "AUTOENCODER_MODEL_PATH": str(empty_model_path),
        "MAX_DATASETS_PER_USER": "2",
        "MAX_STORAGE_MB_PER_USER": "2",
        "PARSE_WORKERS": "1",
        "PARSE_QUEUE_LIMIT": "0",
        "PARSE_TIMEOUT_SECONDS": "3",
    }
    return server_factory("tight-api", env).wait_until_up()


def test_the_dataset_count_quota_answers_409_with_what_to_delete(tight_api: ApiServer) -> None:
    account = register(tight_api, "collector")
    with tight_api.client() as client:
        first, second, third = (upload(client, account, f"t{index}.csv", b"a,b\n1,2\n") for index in range(3))
        assert (first.status_code, second.status_code) == (201, 201)
        assert third.status_code == 409, third.text
        assert "MAX_DATASETS_PER_USER=2" in third.json()["detail"]
        assert "DELETE /api/anomaly/datasets/{id}" in third.json()["detail"]
        client.delete(f"/api/anomaly/datasets/{first.json()['id']}", headers=account.headers)
        again = upload(client, account, "t3.csv", b"a,b\n1,2\n")
    assert again.status_code == 201, again.text


def test_the_storage_quota_is_checked_by_the_declared_size_before_the_body_is_read(tight_api: ApiServer) -> None:
    account = register(tight_api, "hoarder")
    sent, answer = _bytes_sent_before_the_answer(tight_api, account.headers, 2 * 2**20 + 32 * 1024)
    assert answer.startswith(b"HTTP/1.1 409"), answer[:300]
    assert b"MAX_STORAGE_MB_PER_USER" in answer
    assert sent < 2**20


def test_the_storage_quota_counts_the_parsed_table_too(tight_api: ApiServer) -> None:
    """0.7 MB of CSV whose parsed table takes 2.9 MB more: checked again before anything is stored."""
    account = register(tight_api, "filler")
    content = b"a,b,c,d,e,f,g,h\n" + b"1,2,3,4,5,6,7,8\n" * 46_000
    with tight_api.client() as client:
        answer = upload(client, account, "fill.csv", content)
        listed = client.get("/api/anomaly/datasets", headers=account.headers).json()
    assert answer.status_code == 409, answer.text
    assert "MAX_STORAGE_MB_PER_USER" in answer.json()["detail"]
    assert listed == []


def _slow_body(content: bytes, started: threading.Event) -> Iterator[bytes]:
    boundary = "slow-boundary"
    yield (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="slow.csv"\r\n\r\n').encode()
    started.set()
    for start in range(0, len(content), 1024):
        time.sleep(0.01)
        yield content[start : start + 1024]
    yield f"\r\n--{boundary}--\r\n".encode()


def test_an_upload_past_the_parsers_and_their_queue_answers_429_with_retry_after(tight_api: ApiServer) -> None:
    account = register(tight_api, "crowd")
    started = threading.Event()
    answers: list[httpx.Response] = []
    headers = {**account.headers, "Content-Type": "multipart/form-data; boundary=slow-boundary"}

    def send_slowly() -> None:
        with tight_api.client() as client:
            content = b"a,b\n" + b"1,2\n" * 50_000
            answers.append(
                client.post("/api/anomaly/datasets/upload", headers=headers, content=_slow_body(content, started))
            )

    sender = threading.Thread(target=send_slowly)
    sender.start()
    assert started.wait(30)
    time.sleep(0.3)
    with tight_api.client() as client:
        refused = upload(client, account, "second.csv", b"a,b\n1,2\n")
    sender.join(120)
    assert refused.status_code == 429, refused.text
    assert int(refused.headers["Retry-After"]) >= 1
    assert "send this file again in" in refused.json()["detail"]
    assert answers[0].status_code == 201, answers[0].text


def test_a_file_that_takes_longer_than_the_parse_timeout_answers_400(tight_api: ApiServer) -> None:
    """10 million cells take calamine and pandas far longer than the 3 s this server allows."""
    account = register(tight_api, "patient")
    with tight_api.client() as client:
        answer = upload(client, account, "slow.xlsx", dense_workbook(cells=10_000_000))
    assert answer.status_code == 400, answer.text
    assert "took longer than 3 s to read" in answer.json()["detail"]
    assert "PARSE_TIMEOUT_SECONDS" in answer.json()["detail"]
    with tight_api.client() as client:
        assert upload(client, account, "quick.csv", b"a,b\n1,2\n").status_code == 201


def test_a_parser_killed_while_idle_is_replaced_without_blaming_the_next_upload(
    large_upload_api: ApiServer, uploader: Account
) -> None:
    assert large_upload_api.process is not None
    pid = large_upload_api.process.pid
    children = [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    parsers = [child for child in children if b"upload_parser_process" in Path(f"/proc/{child}/cmdline").read_bytes()]
    assert len(parsers) == 2
    for parser in parsers:
        os.kill(parser, signal.SIGKILL)
    time.sleep(0.5)
    with large_upload_api.client() as client:
        answers = [upload(client, uploader, f"next{index}.csv", b"a,b\n1,2\n") for index in range(3)]
    assert [answer.status_code for answer in answers] == [201] * 3, [answer.text for answer in answers]
