"""The analysis queue no single user can take over: bounded per user, fair across users, superseded work
cancelled and its results deleted, nothing queued forever, no result written by a worker that lost its lease,
and no stored file left belonging to nothing.

The server here has a database of its own, so only its job workers take these analyses.
"""

from __future__ import annotations

import io
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gridfs
import httpx
import pandas as pd
import pytest
from bson import ObjectId
from pymongo import MongoClient

from app.utils.sample_data import make_normal_transactions
from tests.api.conftest import ServerFactory
from tests.api.support import (
    Account,
    ApiServer,
    WorkerProcess,
    analysis_events,
    csv_bytes,
    register,
    upload_ok,
    wait_for_status,
)

DATABASE = "job_queue"
LIMIT = 10


def _table(n_rows: int, seed: int) -> pd.DataFrame:
    return make_normal_transactions(n_rows, seed=seed, n_columns=5)


def _train_into(folder: Path, seed: int) -> str:
    from app.utils.anomaly_detector import TabularAnomalyDetector

    detector = TabularAnomalyDetector(encoding_dim=3, random_state=seed)
    detector.train(_table(600, seed=seed), epochs=2, verbose=0)
    detector.save(folder, training_report=False)
    return str(detector.model_info["version"])


@pytest.fixture(scope="module")
def queue_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("queue-models") / "AutoEncoder"
    _train_into(folder, seed=1)
    return folder


@pytest.fixture(scope="module")
def queue_env(server_env: dict[str, str], queue_model: Path) -> dict[str, str]:
    return {
        **server_env,
        "MONGODB_DB": DATABASE,
        "AUTOENCODER_MODEL_PATH": str(queue_model),
        "MODEL_CHECK_SECONDS": "0.5",
        "UNSERVED_GRACE_SECONDS": "2",
        "ANALYSIS_LEASE_SECONDS": "3",
        "ORPHAN_FILE_AGE_SECONDS": "5",
        "ORPHAN_SWEEP_SECONDS": "1",
        "MAX_UPLOAD_MB": "8",
    }


@pytest.fixture(scope="module")
def queue_api(server_factory: ServerFactory, queue_env: dict[str, str]) -> ApiServer:
    return server_factory("queue-api", queue_env).wait_until_up()


@pytest.fixture(scope="module")
def mongo(database_url: str) -> Iterator[Any]:
    client: MongoClient[dict[str, Any]] = MongoClient(database_url)
    yield client[DATABASE]
    client.close()


class Paused:
    """The server's job workers stopped (SIGSTOP) while the block queues work, then resumed."""

    def __init__(self, server: ApiServer) -> None:
        self.pids = server.worker_pids()
        assert self.pids, "the server has no job worker"

    def __enter__(self) -> Paused:
        for pid in self.pids:
            os.kill(pid, signal.SIGSTOP)
        return self

    def __exit__(self, *exc: object) -> None:
        for pid in self.pids:
            os.kill(pid, signal.SIGCONT)


def _analyze(client: httpx.Client, account: Account, dataset_id: str, **body: Any) -> httpx.Response:
    return client.post(f"/api/anomaly/datasets/{dataset_id}/analyze", headers=account.headers, json=body or None)


def test_forcing_hundreds_of_analyses_keeps_one_queued_and_deletes_what_they_supersede(
    queue_api: ApiServer, mongo: Any
) -> None:
    account = register(queue_api)
    with queue_api.client() as client:
        dataset_id = upload_ok(client, account, "forced.csv", csv_bytes(_table(300, seed=2)))
        answers = [_analyze(client, account, dataset_id, force=True, threshold_percentile=95 + index / 10_000)
                   for index in range(300)]  # fmt: skip
        final = wait_for_status(client, account, dataset_id)
        time.sleep(1)  # the worker removes what the finished analysis supersedes right after reporting it
    assert [answer.status_code for answer in answers] == [202] * 300
    assert final["status"] == "analyzed" and final["session_id"] == answers[-1].json()["session_id"]
    assert final["threshold_percentile"] == pytest.approx(95 + 299 / 10_000)
    left = list(mongo["analysis_sessions"].find({"dataset_id": ObjectId(dataset_id)}, {"status": 1}))
    assert len(left) <= 2, f"superseded analyses were kept: {[entry['status'] for entry in left]}"
    pages = mongo["anomaly_pages"].distinct("session_id", {"session_id": {"$in": [entry["_id"] for entry in left]}})
    assert len(pages) <= 1


def test_a_users_analyses_in_progress_are_bounded(queue_api: ApiServer) -> None:
    account = register(queue_api)
    with queue_api.client() as client:
        dataset_ids = [
            upload_ok(client, account, f"many-{n}.csv", csv_bytes(_table(150, seed=n))) for n in range(LIMIT + 2)
        ]
        with Paused(queue_api):
            answers = [_analyze(client, account, dataset_id) for dataset_id in dataset_ids]
    assert [answer.status_code for answer in answers] == [202] * LIMIT + [429, 429]
    refused = answers[-1]
    assert refused.headers["retry-after"] and f"{LIMIT} analyses queued or running" in refused.json()["detail"]


def test_one_users_queue_never_holds_back_another_users_analysis(queue_api: ApiServer, mongo: Any) -> None:
    busy, other = register(queue_api, "busy"), register(queue_api, "other")
    with queue_api.client() as client:
        busy_ids = [upload_ok(client, busy, f"busy-{n}.csv", csv_bytes(_table(2000, seed=n))) for n in range(LIMIT)]
        other_id = upload_ok(client, other, "other.csv", csv_bytes(_table(2000, seed=99)))
        with Paused(queue_api):
            busy_sessions = [_analyze(client, busy, dataset_id).json()["session_id"] for dataset_id in busy_ids]
            other_session = _analyze(client, other, other_id).json()["session_id"]
        for account, dataset_id in [*((busy, dataset_id) for dataset_id in busy_ids), (other, other_id)]:
            assert wait_for_status(client, account, dataset_id)["status"] == "analyzed"
    started = {
        str(entry["_id"]): entry["started_at"]
        for entry in mongo["analysis_sessions"].find(
            {"_id": {"$in": [ObjectId(s) for s in [*busy_sessions, other_session]]}}
        )
    }
    busy_order = sorted(started[session] for session in busy_sessions)
    assert started[other_session] < busy_order[1], "the other user's analysis waited behind the busy user's second"


def test_an_analysis_queued_for_a_replaced_model_version_fails_with_the_reason(
    queue_api: ApiServer, queue_model: Path
) -> None:
    account = register(queue_api)
    with queue_api.client() as client:
        dataset_id = upload_ok(client, account, "stale.csv", csv_bytes(_table(200, seed=3)))
        with Paused(queue_api):
            queued = _analyze(client, account, dataset_id).json()
            new_version = _train_into(queue_model, seed=7)  # retrained in place: the queued version is gone
        deadline = time.monotonic() + 60
        status = wait_for_status(client, account, dataset_id, timeout=60)
        assert time.monotonic() < deadline
        models = client.get("/api/anomaly/models", headers=account.headers).json()
    assert queued["status"] == "queued"
    assert status["status"] == "failed", status
    assert "No worker serves the model version" in status["error"] and "analyze again" in status["error"]
    assert models[0]["version"] == new_version


def test_a_worker_that_lost_its_lease_while_storing_changes_nothing(
    queue_api: ApiServer, queue_env: dict[str, str], server_logs: Path, mongo: Any
) -> None:
    """A worker stalls (SIGSTOP) while it writes an analysis's anomaly pages; another takes the analysis over and
    completes it; the first then wakes up, finds its lease gone and removes what it wrote."""
    second = WorkerProcess("queue-second-worker", queue_env, server_logs).start()
    account = register(queue_api)
    try:
        time.sleep(8)  # the second worker loads TensorFlow and the model
        with queue_api.client() as client:
            dataset_id = upload_ok(client, account, "many-anomalies.csv", csv_bytes(_table(40_000, seed=4)))
            session_id = _analyze(client, account, dataset_id, threshold_percentile=1).json()["session_id"]
            storing = wait_for_status(client, account, dataset_id, until=("analyzed",), timeout=120, at_least=91)
            owner = mongo["analysis_sessions"].find_one({"_id": ObjectId(session_id)})["lease_owner"]
            stalled = int(owner.split(":")[1])
            os.kill(stalled, signal.SIGSTOP)
            try:
                final = wait_for_status(client, account, dataset_id, timeout=120)
            finally:
                os.kill(stalled, signal.SIGCONT)
            outcomes = {event["outcome"] for event in analysis_events([queue_api, second], {session_id}, timeout=60)}
            deadline = time.monotonic() + 60
            while "discarded" not in outcomes and time.monotonic() < deadline:
                time.sleep(0.2)
                outcomes = {event["outcome"] for event in analysis_events([queue_api, second], {session_id})}
            items = _all_anomalies(client, account, dataset_id)
    finally:
        second.stop()
    assert storing["status"] == "analyzing", "the analysis finished before the worker could be stalled mid-store"
    assert final["status"] == "analyzed" and final["attempts"] == 2, final
    assert {"analyzed", "discarded"} <= outcomes
    attempts = mongo["anomaly_pages"].distinct("attempt", {"session_id": ObjectId(session_id)})
    assert attempts == [2], f"pages of the stalled attempt are left: {attempts}"
    assert len(items) == final["anomaly_count"] and len({item["row"] for item in items}) == len(items)
    scores = [item["score"] for item in items]
    assert scores == sorted(scores, reverse=True)


def _all_anomalies(client: httpx.Client, account: Account, dataset_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while True:
        page = client.get(
            f"/api/anomaly/datasets/{dataset_id}/anomalies",
            params={"limit": 1000, "offset": len(items)},
            headers=account.headers,
        ).json()
        items += page["items"]
        if len(items) >= page["total"] or not page["items"]:
            return items


def test_stored_files_that_belong_to_nothing_are_swept(queue_api: ApiServer, database_url: str) -> None:
    """A process killed between storing an upload's file and recording its dataset leaves a file behind: once it
    is older than ORPHAN_FILE_AGE_SECONDS, the workers' sweep removes it, and nothing that belongs anywhere."""
    account = register(queue_api)
    with queue_api.client() as client:
        kept_id = upload_ok(client, account, "kept.csv", csv_bytes(_table(150, seed=5)))
    with MongoClient(database_url) as direct:
        database = direct[DATABASE]
        orphan = gridfs.GridFSBucket(database, bucket_name="uploads").upload_from_stream(
            "orphan.csv", io.BytesIO(b"a,b\n1,2\n"), metadata={"kind": "upload"}
        )
        kept = database["datasets"].find_one({"_id": ObjectId(kept_id)})
        deadline = time.monotonic() + 60
        while database["uploads.files"].count_documents({"_id": orphan}) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert database["uploads.files"].count_documents({"_id": orphan}) == 0, "the orphan was not swept"
        assert (
            database["uploads.files"].count_documents({"_id": {"$in": [kept["file_id"], kept["table_file_id"]]}}) == 2
        )
