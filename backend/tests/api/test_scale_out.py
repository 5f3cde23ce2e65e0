"""Scale-out on one MongoDB, as separate hosts would run it: 2 API processes (no jobs) and 3 job workers.

10 users run 6 analyses each while one worker is killed mid-job and one API process is killed mid-request:
every analysis is done exactly once, its results equal the same model scoring the same rows in one process
(scores, anomaly count, the ranked pages), the killed worker's job is completed by another within its lease,
and nothing answered 2xx by the killed API process is lost.
"""

from __future__ import annotations

import io
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from bson import ObjectId
from pymongo import MongoClient

from app.services.scoring import rank_anomalies
from app.utils.anomaly_detector import TabularAnomalyDetector
from app.utils.sample_data import make_normal_transactions
from tests.api.conftest import ServerFactory
from tests.api.support import (
    Account,
    ApiServer,
    WorkerProcess,
    analysis_events,
    csv_bytes,
    register,
    wait_for_status,
)

DATABASE = "scale_out"
USERS = 10
ANALYSES_PER_USER = 6
LEASE_SECONDS = 3
BIG_ROWS = 60_000


@dataclass
class Submitted:
    """One user's upload and analysis request, with what the API answered."""

    account: Account
    frame: pd.DataFrame
    dataset_id: str | None = None
    session_id: str | None = None


@pytest.fixture(scope="module")
def cluster_env(server_env: dict[str, str], model_dir: Path) -> dict[str, str]:
    return {
        **server_env,
        "MONGODB_DB": DATABASE,
        "AUTOENCODER_MODEL_PATH": str(model_dir),
        "ANALYSIS_LEASE_SECONDS": str(LEASE_SECONDS),
        "MAX_UPLOAD_MB": "10",
        "JOB_WORKERS": "0",  # API processes only: the workers below are separate processes, as on other hosts
    }


@pytest.fixture(scope="module")
def apis(server_factory: ServerFactory, cluster_env: dict[str, str]) -> list[ApiServer]:
    servers = [server_factory(f"scale-api-{index}", cluster_env) for index in range(2)]
    return [server.wait_until_up() for server in servers]


@pytest.fixture(scope="module")
def workers(cluster_env: dict[str, str], server_logs: Path) -> Iterator[list[WorkerProcess]]:
    started = [WorkerProcess(f"scale-worker-{index}", cluster_env, server_logs).start() for index in range(3)]
    yield started
    for worker in started:
        worker.stop()


@pytest.fixture(scope="module")
def mongo(database_url: str) -> Iterator[Any]:
    client: MongoClient[dict[str, Any]] = MongoClient(database_url)
    yield client[DATABASE]
    client.close()


def _ready(workers: list[WorkerProcess], mongo: Any) -> None:
    deadline = time.monotonic() + 120
    while mongo["workers"].count_documents({}) < len(workers):
        assert time.monotonic() < deadline, "the workers did not start"
        time.sleep(0.2)


def _submit(servers: list[ApiServer], alive: list[bool], job: Submitted) -> None:
    """Upload and analyse on the first live server, moving to another when one stops answering."""
    for attempt in range(20):
        server = servers[attempt % len(servers)] if alive[attempt % len(servers)] else servers[0]
        try:
            with server.client() as client:
                if job.dataset_id is None:
                    answer = client.post(
                        "/api/anomaly/datasets/upload",
                        headers=job.account.headers,
                        files={"file": ("table.csv", csv_bytes(job.frame))},
                    )
                    assert answer.status_code == 201, answer.text
                    job.dataset_id = answer.json()["id"]
                answer = client.post(f"/api/anomaly/datasets/{job.dataset_id}/analyze", headers=job.account.headers)
                assert answer.status_code == 202, answer.text
                job.session_id = answer.json()["session_id"]
                return
        except httpx.TransportError:
            time.sleep(0.2)  # that process is gone: what it answered 2xx is kept, the rest is asked again
    raise AssertionError("no API process answered")


def test_two_apis_and_three_workers_run_every_analysis_once_through_kills(
    apis: list[ApiServer], workers: list[WorkerProcess], mongo: Any, model_dir: Path
) -> None:
    _ready(workers, mongo)
    accounts = [register(apis[index % 2]) for index in range(USERS)]
    jobs = [
        Submitted(accounts[user], make_normal_transactions(300 + 7 * index, seed=1000 + index))
        for index in range(ANALYSES_PER_USER)
        for user in range(USERS)
    ]
    big = Submitted(accounts[0], make_normal_transactions(BIG_ROWS, seed=7, n_columns=20))
    alive = [True, True]

    # The big analysis runs long enough to kill its worker mid-job.
    _submit(apis, alive, big)
    with apis[0].client() as client:
        wait_for_status(client, big.account, big.dataset_id or "", until=("analyzing",), timeout=120)
    owner = mongo["analysis_sessions"].find_one({"_id": ObjectId(big.session_id)})["lease_owner"]
    killed_worker = int(owner.split(":")[1])
    os.kill(killed_worker, signal.SIGKILL)
    killed_at = time.monotonic()

    def kill_an_api_mid_requests() -> None:
        time.sleep(1.5)  # the users' requests are under way on both API processes
        alive[1] = False
        assert apis[1].process is not None
        apis[1].process.send_signal(signal.SIGKILL)

    killer = threading.Thread(target=kill_an_api_mid_requests)
    killer.start()
    with ThreadPoolExecutor(max_workers=USERS) as pool:
        list(pool.map(lambda job: _submit(apis, alive, job), jobs))
    killer.join()

    with apis[0].client() as client:
        big_status = wait_for_status(client, big.account, big.dataset_id or "", timeout=120)
        taken_over_in = time.monotonic() - killed_at
        statuses = [wait_for_status(client, job.account, job.dataset_id or "", timeout=180) for job in jobs]
        owned = {account.username: _dataset_ids(client, account) for account in accounts}

    # Nothing answered 2xx is lost: every upload is listed and every analysis asked for was done.
    answered_by_killed = [event for event in apis[1].events("request") if event["status"] in (201, 202)]
    assert answered_by_killed, "the killed API process had answered nothing: it was not under load"
    for job in jobs:
        assert job.dataset_id in owned[job.account.username]
    assert [status["status"] for status in statuses] == ["analyzed"] * len(jobs)
    assert [status["session_id"] for status in statuses] == [job.session_id for job in jobs]
    assert big_status["status"] == "analyzed" and big_status["attempts"] == 2, big_status
    assert taken_over_in < LEASE_SECONDS + 60

    # Exactly once: the workers' logs name every analysis as analysed once, all three workers did some.
    session_ids = {job.session_id or "" for job in jobs} | {big.session_id or ""}
    events = analysis_events(workers, session_ids, timeout=30)
    analysed = Counter(event["session_id"] for event in events if event["outcome"] == "analyzed")
    assert analysed == Counter(session_ids)
    assert all(status["attempts"] == 1 for status in statuses)
    assert len({event["worker"] for event in events if event["outcome"] == "analyzed"}) >= 2

    # The same results as one process scoring the same rows with the same model.
    detector = TabularAnomalyDetector.load(model_dir)
    with apis[0].client() as client:
        for job, status in [*zip(jobs[::7], statuses[::7], strict=True), (big, big_status)]:
            expected = detector.decision_function(job.frame)
            ranking = rank_anomalies(expected, detector.threshold)
            results = client.get(f"/api/anomaly/datasets/{job.dataset_id}/results", headers=job.account.headers)
            scores = pd.read_csv(io.BytesIO(results.content))["anomaly_score"].to_numpy()
            pages = _ranked_rows(client, job.account, job.dataset_id or "")
            assert status["anomaly_count"] == len(ranking)
            np.testing.assert_allclose(scores, expected, rtol=1e-9)
            assert pages == ranking.tolist()


def _dataset_ids(client: httpx.Client, account: Account) -> set[str]:
    answer = client.get("/api/anomaly/datasets", params={"limit": 1000}, headers=account.headers)
    return {dataset["id"] for dataset in answer.json()}


def _ranked_rows(client: httpx.Client, account: Account, dataset_id: str) -> list[int]:
    rows: list[int] = []
    while True:
        page = client.get(
            f"/api/anomaly/datasets/{dataset_id}/anomalies",
            params={"limit": 1000, "offset": len(rows)},
            headers=account.headers,
        ).json()
        rows += [item["row"] for item in page["items"]]
        if len(rows) >= page["total"] or not page["items"]:
            return rows
