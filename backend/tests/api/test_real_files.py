"""200 real-world CSV, XLSX and XLS files from other projects' test suites (``shared/corpus/real-files``),
each uploaded through the real API: a table is stored with its rows, a file that is not one is refused with
a 4xx and a detail, and neither kind, the two 1 KB memory bombs included, answers 5xx or stops the server."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.support import Account, ApiServer, register, upload

CORPUS = Path(__file__).resolve().parents[4] / "shared" / "corpus" / "real-files"


def _manifest() -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads((CORPUS / "manifest.json").read_text())
    return items


def _problem(item: dict[str, Any], answer: httpx.Response) -> str | None:
    """What is wrong with the answer to one corpus file, or None."""
    status = answer.status_code
    if status >= 500:
        return f"{status} {answer.text[:200]}"
    if status == 201:
        if item["expect"] == "refuse":
            return "accepted a file that is not a table"
        return None if answer.json()["row_count"] > 0 else "stored without rows"
    if item["expect"] == "table":
        return f"refused a table: {status} {answer.text[:200]}"
    detail = answer.json().get("detail")
    return None if 400 <= status < 500 and isinstance(detail, str) and detail else f"{status} without a detail"


def test_every_real_file_is_stored_or_refused_as_expected(large_upload_api: ApiServer) -> None:
    account: Account = register(large_upload_api, "corpus")
    items = _manifest()

    def send(item: dict[str, Any]) -> httpx.Response:
        with httpx.Client(base_url=large_upload_api.url, timeout=120) as client:
            return upload(client, account, item["file"], (CORPUS / "files" / item["file"]).read_bytes())

    with ThreadPoolExecutor(max_workers=2) as pool:  # as many as the server parses at once
        answers = list(pool.map(send, items))
    problems = {
        item["file"]: problem
        for item, answer in zip(items, answers, strict=True)
        if (problem := _problem(item, answer))
    }
    assert problems == {}
    with large_upload_api.client() as client:
        assert client.get("/health").status_code == 200
        assert len(client.get("/api/anomaly/datasets", params={"limit": 1000}, headers=account.headers).json()) == sum(
            answer.status_code == 201 for answer in answers
        )


@pytest.mark.parametrize(
    ("filename", "rows", "columns", "notes"),
    [
        ("messytables__complex.csv", 3, ["date", "another date", "temperature", "place"], []),
        ("messytables__211.csv", 2132, None, ["13 lines decoded as Windows-1252 (Latin-1): not UTF-8"]),
        ("messytables__weird_head_padding.csv", 76, None, ["skipped 6 title lines above the header"]),
    ],
    ids=["quoted field after a space", "UTF-8 and Latin-1 lines", "title lines and a rule above the header"],
)
def test_real_files_that_spreadsheet_tools_open_are_stored_with_what_was_skipped(
    large_upload_api: ApiServer, filename: str, rows: int, columns: list[str] | None, notes: list[str]
) -> None:
    account = register(large_upload_api, "messy")
    with large_upload_api.client() as client:
        answer = upload(client, account, filename, (CORPUS / "files" / filename).read_bytes())
        described = client.get(f"/api/anomaly/datasets/{answer.json().get('id')}", headers=account.headers).json()
    assert answer.status_code == 201, answer.text
    assert answer.json()["row_count"] == rows
    assert answer.json()["notes"] == described["notes"] == notes
    if columns is not None:
        assert answer.json()["columns"] == columns
