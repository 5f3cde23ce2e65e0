"""What an analysis gives back: explained anomalies, stable paging, downloads, sensitivity and deletion."""

from __future__ import annotations

import io
import json
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import openpyxl
import pandas as pd
import pytest
from bson import ObjectId
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from gridfs import GridFSBucket
from pymongo import MongoClient

from app.utils.sample_data import inject_anomalies, make_normal_transactions
from tests.api.support import (
    Account,
    ApiServer,
    analysis_events,
    csv_bytes,
    register,
    upload_ok,
    wait_for_status,
    xlsx_bytes,
)

ANOMALIES = "/api/anomaly/datasets/{}/anomalies"


@pytest.fixture(scope="module")
def mongo(database_url: str) -> Iterator[Any]:
    """The tests' database, read directly to see what a delete leaves behind."""
    client: MongoClient[dict[str, Any]] = MongoClient(database_url)
    yield client["api_tests"]
    client.close()


def _analyzed(
    client: httpx.Client, account: Account, filename: str, content: bytes, body: dict[str, object] | None = None
) -> tuple[str, dict[str, Any]]:
    dataset_id = upload_ok(client, account, filename, content)
    started = client.post(f"/api/anomaly/datasets/{dataset_id}/analyze", headers=account.headers, json=body)
    assert started.status_code == 202, started.text
    status = wait_for_status(client, account, dataset_id)
    assert status["status"] == "analyzed", status
    return dataset_id, status


def _all_anomalies(client: httpx.Client, account: Account, dataset_id: str, limit: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while True:
        page = client.get(
            ANOMALIES.format(dataset_id), params={"limit": limit, "offset": len(items)}, headers=account.headers
        )
        assert page.status_code == 200, page.text
        items += page.json()["items"]
        if len(items) >= page.json()["total"]:
            return items


def _strict_json(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in a JSON answer")

    return json.loads(text, parse_constant=refuse)


# --- anomalies ---------------------------------------------------------------------------------------------


def test_top_features_name_the_column_pushed_off_first_with_the_expected_value(
    api: ApiServer, account: Account
) -> None:
    frame = make_normal_transactions(400, seed=31)
    frame.loc[17, "value3"] = frame["value3"].max() * 50
    frame.loc[42, "value9"] = frame["value9"].min() - 40 * frame["value9"].std()
    frame.loc[42, "value1"] = np.nan
    with api.client() as client:
        dataset_id, _ = _analyzed(client, account, "test.xlsx", xlsx_bytes(frame))
        answer = client.get(ANOMALIES.format(dataset_id), params={"limit": 1000}, headers=account.headers)
    by_row = {item["row"]: item for item in _strict_json(answer.text)["items"]}
    first, second = by_row[17], by_row[42]
    assert first["top_features"][0]["column"] == "value3"
    assert second["top_features"][0]["column"] == "value9"
    top = first["top_features"][0]
    assert 0.5 < top["share"] <= 1
    assert isinstance(top["expected"], float)
    median = frame["value3"].median()
    assert abs(top["expected"] - median) < abs(frame.loc[17, "value3"] - median)
    assert len(first["top_features"]) == 3
    assert [feature["share"] for feature in first["top_features"]] == sorted(
        (feature["share"] for feature in first["top_features"]), reverse=True
    )
    assert first["values"]["value3"] == frame.loc[17, "value3"]
    assert first["values"]["timestamp"] == frame.loc[17, "timestamp"].isoformat()
    assert first["values"]["region"] == frame.loc[17, "region"]
    assert second["values"]["value1"] is None


def test_paging_is_stable_and_complete(api: ApiServer, account: Account) -> None:
    """About 1,500 anomalies over several stored pages, read 70 at a time: all of them, once, best first."""
    with api.client() as client:
        dataset_id, status = _analyzed(
            client,
            account,
            "test.csv",
            csv_bytes(make_normal_transactions(3000, seed=32)),
            {"threshold_percentile": 50},
        )
        paged = _all_anomalies(client, account, dataset_id, limit=70)
        again = _all_anomalies(client, account, dataset_id, limit=333)
        beyond = client.get(
            ANOMALIES.format(dataset_id), params={"limit": 10, "offset": len(paged)}, headers=account.headers
        ).json()
    assert status["anomaly_count"] > 1000
    assert len(paged) == status["anomaly_count"]
    rows = [item["row"] for item in paged]
    assert len(set(rows)) == len(rows)
    scores = [item["score"] for item in paged]
    assert scores == sorted(scores, reverse=True)
    assert min(scores) > status["threshold"]
    assert [(item["row"], item["score"]) for item in again] == [(item["row"], item["score"]) for item in paged]
    assert beyond["items"] == [] and beyond["total"] == len(paged)


# --- downloads ---------------------------------------------------------------------------------------------


def test_csv_and_xlsx_downloads_round_trip_with_every_row_in_upload_order(api: ApiServer, account: Account) -> None:
    frame, _ = inject_anomalies(make_normal_transactions(600, seed=33), fraction=0.03, seed=2)
    frame = frame.sample(frac=1, random_state=0).reset_index(drop=True)  # ids out of order: order must be kept
    frame.loc[5, "value2"] = np.nan
    with api.client() as client:
        dataset_id, status = _analyzed(client, account, "test.xlsx", xlsx_bytes(frame))
        anomalies = _all_anomalies(client, account, dataset_id, limit=1000)
        as_csv = client.get(f"/api/anomaly/datasets/{dataset_id}/results", headers=account.headers)
        as_xlsx = client.get(
            f"/api/anomaly/datasets/{dataset_id}/results", params={"format": "xlsx"}, headers=account.headers
        )
    for answer in (as_csv, as_xlsx):
        assert answer.status_code == 200, answer.text
        assert answer.headers.get("transfer-encoding") == "chunked"  # streamed, not sent as one body
        assert "attachment" in answer.headers["content-disposition"]
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert as_xlsx.headers["content-type"].startswith("application/vnd.openxmlformats")
    top = max(anomalies, key=lambda item: item["score"])
    for results in (
        pd.read_csv(io.BytesIO(as_csv.content)),
        pd.read_excel(io.BytesIO(as_xlsx.content), engine="calamine"),
    ):
        assert list(results.columns) == [*frame.columns, "anomaly_score", "is_anomaly", "top_feature", "label"]
        assert len(results) == len(frame)
        assert results["id"].tolist() == frame["id"].tolist()
        pd.testing.assert_series_equal(results["value2"], frame["value2"])
        assert results["is_anomaly"].sum() == status["anomaly_count"]
        assert results["anomaly_score"][top["row"]] == pytest.approx(top["score"], rel=1e-15)
        assert results["top_feature"][top["row"]] == top["top_features"][0]["column"]
        flagged = results.index[results["is_anomaly"]].tolist()
        assert sorted(flagged) == sorted(item["row"] for item in anomalies)


def test_downloads_escape_text_a_spreadsheet_would_run(api: ApiServer, account: Account) -> None:
    """Formula text, also behind control characters (which are removed first), in cells and in a column name:
    text in both formats, never a formula; numbers stay numbers."""
    frame = make_normal_transactions(150, seed=34)
    notes = ["=1+2", "+SUM(A1)", "-2+3", "@cmd", "-5", "plain", '\x01=HYPERLINK("http://evil.example","click")']
    frame["note"] = [notes[index % len(notes)] for index in range(len(frame))]
    frame["\x02=1+1"] = 1
    frame.loc[0, "value1"] = -frame.loc[0, "value1"]
    with api.client() as client:
        dataset_id, _ = _analyzed(client, account, "test.csv", csv_bytes(frame))
        as_csv = client.get(f"/api/anomaly/datasets/{dataset_id}/results?format=csv", headers=account.headers)
        as_xlsx = client.get(f"/api/anomaly/datasets/{dataset_id}/results?format=xlsx", headers=account.headers)
    escaped = ["'=1+2", "'+SUM(A1)", "'-2+3", "'@cmd", "-5", "plain", '\'=HYPERLINK("http://evil.example","click")']
    results = pd.read_csv(io.BytesIO(as_csv.content), dtype={"note": str})
    assert results["note"][:7].tolist() == escaped
    assert "'=1+1" in results.columns
    assert results["value1"][0] == frame.loc[0, "value1"] < 0
    header, *rows = openpyxl.load_workbook(io.BytesIO(as_xlsx.content)).active.iter_rows()
    names = [cell.value for cell in header]
    assert "'=1+1" in names
    formulas = [cell.coordinate for row in (header, *rows) for cell in row if cell.data_type == "f"]
    assert formulas == []
    note = names.index("note")
    assert [row[note].value for row in rows[:7]] == escaped
    assert all(row[note].data_type == "s" for row in rows)
    assert rows[0][names.index("value1")].value == frame.loc[0, "value1"]


def test_concurrent_xlsx_downloads_past_the_limit_answer_429_while_logins_keep_succeeding(
    api: ApiServer, account: Account
) -> None:
    """8 workbooks asked for at once while another user logs in again and again: each download completes or,
    past the server's MAX_CONCURRENT_EXPORTS (2), answers 429 with Retry-After; every login succeeds, quickly
    (the bound is generous: this machine is shared; benchmarks/attack.py measures the p99)."""
    rows = 10_000
    other = register(api, "logging-in")
    with api.client() as client:
        dataset_id, _ = _analyzed(client, account, "test.csv", csv_bytes(make_normal_transactions(rows, seed=40)))
    downloads_done = threading.Event()
    login_seconds: list[float] = []
    login_statuses: list[int] = []

    def log_in_until_downloads_are_done() -> None:
        credentials = {"username": other.username, "password": "a-long-password"}
        with api.client() as client:
            while not downloads_done.is_set() or not login_seconds:
                started = time.perf_counter()
                answer = client.post("/api/auth/token", data=credentials)
                login_seconds.append(time.perf_counter() - started)
                login_statuses.append(answer.status_code)

    def download(_: int) -> httpx.Response:
        with api.client() as client:
            return client.get(
                f"/api/anomaly/datasets/{dataset_id}/results", params={"format": "xlsx"}, headers=account.headers
            )

    logins = threading.Thread(target=log_in_until_downloads_are_done)
    logins.start()
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(download, range(8)))
    downloads_done.set()
    logins.join()
    statuses = [answer.status_code for answer in answers]
    assert set(statuses) <= {200, 429} and 200 in statuses and 429 in statuses, statuses
    for answer in answers:
        if answer.status_code == 200:
            assert len(pd.read_excel(io.BytesIO(answer.content), engine="calamine")) == rows
        else:
            assert int(answer.headers["retry-after"]) > 0
            assert "try again in" in answer.json()["detail"]
    assert set(login_statuses) == {200}
    assert max(login_seconds) < 10, f"slowest login {max(login_seconds):.2f} s"


def test_a_download_past_the_limit_answers_429_and_a_disconnected_one_stops_and_frees_its_slot(
    export_api: ApiServer,
) -> None:
    """One download at a time on this server: a second is refused while the first is being written; the first
    client hangs up, its export stops within a chunk (the log says after how many rows), and the slot is free
    again long before that workbook would have been finished."""
    rows = 100_000
    account = register(export_api)
    results_url = "/api/anomaly/datasets/{}/results"
    with export_api.client() as client:
        dataset_id, _ = _analyzed(client, account, "big.csv", csv_bytes(make_normal_transactions(rows, seed=41)))
        url, params = results_url.format(dataset_id), {"format": "xlsx"}
        with client.stream("GET", url, params=params, headers=account.headers) as first:
            assert first.status_code == 200
            refused = client.get(url, params=params, headers=account.headers)
        hung_up = time.monotonic()  # leaving the block closes the first download's connection mid-workbook
        while True:
            with client.stream("GET", url, params=params, headers=account.headers) as again:
                if again.status_code == 200:
                    freed_after = time.monotonic() - hung_up
                    break
            assert again.status_code == 429 and time.monotonic() - hung_up < 30, again.status_code
            time.sleep(0.1)
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) > 0
    assert "1 result downloads are already being prepared" in refused.json()["detail"]
    stops = re.findall(r"A results export stopped after (\d+) of (\d+) rows", export_api.log_text())
    assert stops, "the disconnected export never stopped"
    stopped_at, total = map(int, stops[0])
    assert total == rows and stopped_at < rows
    assert freed_after < 30


# --- sensitivity -------------------------------------------------------------------------------------------


def test_raising_the_percentile_never_raises_the_anomaly_count(api: ApiServer, account: Account) -> None:
    frame, _ = inject_anomalies(make_normal_transactions(1000, seed=35), fraction=0.02, seed=3)
    percentiles = [50, 80, 95, 99, 99.9]
    with api.client() as client:
        dataset_id = upload_ok(client, account, "test.csv", csv_bytes(frame))
        statuses, sessions = [], []
        for percentile in percentiles:
            started = client.post(
                f"/api/anomaly/datasets/{dataset_id}/analyze",
                headers=account.headers,
                json={"threshold_percentile": percentile},
            ).json()
            sessions.append(started)
            statuses.append(wait_for_status(client, account, dataset_id))
        # Each newer analysis replaced the one before, whose results were deleted: 80 again is a new analysis.
        repeated = client.post(
            f"/api/anomaly/datasets/{dataset_id}/analyze", headers=account.headers, json={"threshold_percentile": 80}
        ).json()
        repeated_status = wait_for_status(client, account, dataset_id)
        models = client.get("/api/anomaly/models", headers=account.headers).json()
    counts = [status["anomaly_count"] for status in statuses]
    thresholds = [status["threshold"] for status in statuses]
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]
    assert thresholds == sorted(thresholds) and len(set(thresholds)) == len(thresholds)
    assert [status["threshold_percentile"] for status in statuses] == percentiles
    assert all(not started["reused"] for started in sessions)
    assert len({started["session_id"] for started in sessions}) == len(percentiles)
    assert repeated["reused"] is False and repeated["session_id"] not in {started["session_id"] for started in sessions}
    assert repeated_status["anomaly_count"] == statuses[1]["anomaly_count"]
    default = models[0]
    assert all(status["model"] == default["name"] for status in statuses)
    assert all(status["model_version"] == default["version"] for status in statuses)
    # The model's own percentile gives the model's own threshold: re-thresholding is not retraining.
    assert statuses[2]["threshold"] == pytest.approx(default["threshold"])


@pytest.mark.parametrize("percentile", [0, 100, 120, -5, "high"])
def test_a_percentile_outside_0_to_100_answers_422_naming_it(
    api: ApiServer, account: Account, percentile: object
) -> None:
    with api.client() as client:
        dataset_id = upload_ok(client, account, "test.csv", csv_bytes(make_normal_transactions(120, seed=36)))
        answer = client.post(
            f"/api/anomaly/datasets/{dataset_id}/analyze",
            headers=account.headers,
            json={"threshold_percentile": percentile},
        )
    assert answer.status_code == 422
    assert "threshold_percentile" in answer.text


# --- deletion ----------------------------------------------------------------------------------------------


def _traces(mongo: Any, ids: list[str]) -> list[str]:
    """Every stored document, in any collection or GridFS bucket, that mentions one of ``ids``.

    Documents are searched as raw BSON for each id both as an ObjectId and as hex text; GridFS chunks (large
    binary data) are looked up by their file id instead.
    """
    needles = [ObjectId(value).binary for value in ids] + [value.encode() for value in ids]
    raw = mongo.with_options(codec_options=CodecOptions(document_class=RawBSONDocument))
    found = []
    for name in mongo.list_collection_names():
        if name.endswith(".chunks"):
            count = mongo[name].count_documents({"files_id": {"$in": [ObjectId(value) for value in ids]}})
            found += [f"{name}: {count} chunks"] if count else []
            continue
        for document in raw[name].find():
            if any(needle in document.raw for needle in needles):
                found.append(f"{name}: {document['_id']}")
    return found


def _stored_ids(mongo: Any, dataset_id: str) -> list[str]:
    """The dataset's id, its sessions' ids and every file id they point to."""
    dataset = mongo["datasets"].find_one({"_id": ObjectId(dataset_id)})
    ids = [dataset_id, str(dataset["file_id"]), str(dataset["table_file_id"])]
    for session in mongo["analysis_sessions"].find({"dataset_id": ObjectId(dataset_id)}):
        ids.append(str(session["_id"]))
        ids += [str(session[key]) for key in ("scores_file_id", "top_columns_file_id") if session.get(key)]
    return ids


def test_deleting_a_dataset_leaves_no_trace(api: ApiServer, account: Account, mongo: Any) -> None:
    with api.client() as client:
        dataset_id, _ = _analyzed(client, account, "test.csv", csv_bytes(make_normal_transactions(300, seed=37)))
        assert client.get(f"/api/anomaly/datasets/{dataset_id}/results", headers=account.headers).status_code == 200
        ids = _stored_ids(mongo, dataset_id)
        assert len(ids) == 6  # dataset, upload, parsed table, session, scores, top columns
        assert _traces(mongo, ids)
        deleted = client.delete(f"/api/anomaly/datasets/{dataset_id}", headers=account.headers)
        after = client.get(f"/api/anomaly/datasets/{dataset_id}", headers=account.headers)
        again = client.delete(f"/api/anomaly/datasets/{dataset_id}", headers=account.headers)
    assert deleted.status_code == 204
    assert after.status_code == 404 and again.status_code == 404
    assert _traces(mongo, ids) == []


def test_a_delete_interrupted_part_way_can_be_repeated_and_finishes(
    api: ApiServer, account: Account, mongo: Any
) -> None:
    """Children go before the dataset: after a delete that stopped part-way, the dataset is still there and
    repeating the request removes everything, including a result file a runner wrote late (found by its
    ``metadata.session_id`` though no session points to it)."""
    with api.client() as client:
        dataset_id, _ = _analyzed(client, account, "test.csv", csv_bytes(make_normal_transactions(300, seed=39)))
        ids = _stored_ids(mongo, dataset_id)
        session = mongo["analysis_sessions"].find_one({"dataset_id": ObjectId(dataset_id)})
        # What a delete that failed after its first steps leaves: the session's pages and files gone...
        mongo["anomaly_pages"].delete_many({"session_id": session["_id"]})
        for key in ("scores_file_id", "top_columns_file_id"):
            GridFSBucket(mongo, bucket_name="results").delete(session[key])
        # ...and a result file a runner stored meanwhile, referenced by no session.
        late = GridFSBucket(mongo, bucket_name="results").upload_from_stream(
            f"{session['_id']}.scores", b"late", metadata={"session_id": str(session["_id"])}
        )
        still_there = client.get(f"/api/anomaly/datasets/{dataset_id}", headers=account.headers)
        deleted = client.delete(f"/api/anomaly/datasets/{dataset_id}", headers=account.headers)
        after = client.get(f"/api/anomaly/datasets/{dataset_id}", headers=account.headers)
    assert still_there.status_code == 200
    assert deleted.status_code == 204 and after.status_code == 404
    assert _traces(mongo, [*ids, str(late)]) == []


def test_deleting_a_dataset_during_its_analysis_leaves_no_trace(
    api: ApiServer, second_api: ApiServer, account: Account, mongo: Any
) -> None:
    """The runner notices the deletion (lost lease, or no dataset when it stores) and writes nothing that stays."""
    frame = make_normal_transactions(8000, seed=38)
    with api.client() as client:
        dataset_id = upload_ok(client, account, "test.csv", csv_bytes(frame))
        session_id = client.post(
            f"/api/anomaly/datasets/{dataset_id}/analyze", headers=account.headers, json={"threshold_percentile": 50}
        ).json()["session_id"]
        ids = _stored_ids(mongo, dataset_id)
        wait_for_status(client, account, dataset_id, until=("analyzing", "analyzed"))
        assert client.delete(f"/api/anomaly/datasets/{dataset_id}", headers=account.headers).status_code == 204
    # The analysis was claimed: wait until the worker that ran it logs how it ended (after any clean-up).
    outcomes = {event["outcome"] for event in analysis_events([api, second_api], {session_id}, timeout=60)}
    assert outcomes & {"discarded", "analyzed"}
    assert _traces(mongo, ids) == []
