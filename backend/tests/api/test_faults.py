"""Faults, with real processes: the server and its database killed mid-analysis, the database stopped
mid-analysis, write errors while an upload is stored, and a server error's answer.

The fault-injection tests run on a database of their own (SecantusDB started here with ``--enable-test-commands``,
on a fixed port so it can be killed and started again), so the shared database is never harmed. Write errors
come from the database itself (``configureFailPoint`` ``failCommand``, as mongod's test harnesses use it): the
driver and the service run as in production.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from app.db.connection import API_APP_NAME
from app.utils.sample_data import make_normal_transactions
from tests.api.process_tree import descendants
from tests.api.support import (
    JWT_SECRET,
    MAX_UPLOAD_MB,
    ApiServer,
    csv_bytes,
    free_port,
    patient_records,
    register,
    train,
    upload,
    upload_ok,
    wait_for_status,
    wait_for_training,
)

# mongod's error code for a full disk, as the database would answer a write it cannot keep.
OUT_OF_DISK_SPACE = 14031
LEASE_SECONDS = "3"


class RestartableDatabase:
    """A SecantusDB process on a fixed port and folder, which a test can kill and start again."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.storage = root / "db"
        self.log_path = root / "secantusd.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def start(self) -> RestartableDatabase:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable, "-m", "secantus", "--host", "127.0.0.1", "--port", str(self.port),
                    "--storage-path", str(self.storage), "--sync-on-commit", "--enable-test-commands",
                    "--log-level", "WARNING",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        with MongoClient(self.url, serverSelectionTimeoutMS=250) as client:
            while time.monotonic() < deadline:
                try:
                    client.admin.command("ping")
                    return self
                except PyMongoError:
                    time.sleep(0.1)
        pytest.fail(f"the test database did not start: {self.log_path.read_text(errors='replace')[-2000:]}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)

    def client(self) -> MongoClient[dict[str, Any]]:
        return MongoClient(self.url, serverSelectionTimeoutMS=5000)


@pytest.fixture(scope="module")
def fault_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestartableDatabase]:
    database = RestartableDatabase(tmp_path_factory.mktemp("fault-db")).start()
    yield database
    database.stop()


@pytest.fixture(scope="module")
def fault_api(
    fault_database: RestartableDatabase,
    server_logs: Path,
    empty_model_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ApiServer]:
    """A server on the fault database that trains on each upload (an analysis lasts seconds), with a short
    lease and a short database timeout."""
    env = {
        "MONGODB_URL": fault_database.url,
        "MONGODB_DB": "faults",
        "JWT_SECRET": JWT_SECRET,
        "ENVIRONMENT": "production",
        "MAX_UPLOAD_MB": str(MAX_UPLOAD_MB),
        "DATA_DIR": str(tmp_path_factory.mktemp("fault-data")),
        "AUTOENCODER_MODEL_PATH": str(empty_model_path),
        "AUTOENCODER_FALLBACK_TRAIN": "true",
        "AUTOENCODER_FALLBACK_EPOCHS": "12",
        "ANALYSIS_LEASE_SECONDS": LEASE_SECONDS,
        "ANALYSIS_POLL_SECONDS": "0.5",
        "DATABASE_TIMEOUT_SECONDS": "2",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    server = ApiServer("fault-api", env, server_logs).start().wait_until_up()
    yield server
    server.stop()


def _stored(database: RestartableDatabase) -> tuple[int, int, int]:
    with database.client() as client:
        faults = client["faults"]
        return (
            faults["datasets"].count_documents({}),
            faults["uploads.files"].count_documents({}),
            faults["uploads.chunks"].count_documents({}),
        )


def _fail_inserts(database: RestartableDatabase, skip: int, code: int = OUT_OF_DISK_SPACE) -> None:
    """Make the database refuse the (skip+1)-th insert from now on, as a full disk would."""
    with database.client() as client:
        client.admin.command(
            {
                "configureFailPoint": "failCommand",
                "mode": {"skip": skip, "times": 1},
                "data": {"failCommands": ["insert"], "errorCode": code, "appName": API_APP_NAME},
            }
        )


def _fail_points_off(database: RestartableDatabase) -> None:
    with database.client() as client:
        client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})


@pytest.mark.parametrize(
    "skip",
    [0, 1, 2, 3, 4],
    ids=["file chunks", "file document", "parsed table chunks", "parsed table document", "dataset document"],
)
def test_a_write_error_while_storing_an_upload_answers_503_and_keeps_nothing(
    fault_api: ApiServer, fault_database: RestartableDatabase, skip: int
) -> None:
    """An upload is five inserts (file chunks and document, parsed table chunks and document, dataset):
    whichever one the database refuses, the answer says why, and nothing of the upload is left."""
    account = register(fault_api)
    content = csv_bytes(make_normal_transactions(3000, seed=61))
    before = _stored(fault_database)
    _fail_inserts(fault_database, skip)
    try:
        with fault_api.client() as client:
            answer = upload(client, account, "full-disk.csv", content)
    finally:
        _fail_points_off(fault_database)
    assert answer.status_code == 503, answer.text
    assert "disk is full" in answer.json()["detail"] and "Nothing of it was kept" in answer.json()["detail"]
    assert _stored(fault_database) == before
    with fault_api.client() as client:
        assert client.get("/api/anomaly/datasets", headers=account.headers).json() == []
        assert upload(client, account, "retry.csv", content).status_code == 201  # once the database takes writes


def test_an_unexpected_error_answers_500_with_a_request_id_and_no_trace(
    fault_api: ApiServer, fault_database: RestartableDatabase
) -> None:
    account = register(fault_api)
    with fault_database.client() as client:
        client.admin.command(
            {
                "configureFailPoint": "failCommand",
                "mode": {"times": 1},
                "data": {"failCommands": ["find"], "errorCode": 2, "appName": API_APP_NAME},
            }
        )
    try:
        with fault_api.client() as client:
            answer = client.get("/api/anomaly/datasets", headers=account.headers)
            after = client.get("/api/anomaly/datasets", headers=account.headers)
    finally:
        _fail_points_off(fault_database)
    request_id = answer.headers["x-request-id"]
    assert answer.status_code == 500
    assert answer.json() == {
        "detail": f"Internal server error (request id {request_id}): the service logged the cause. Try again, "
        "or report the request id if it persists."
    }
    assert after.status_code == 200
    log = fault_api.log_text()
    assert f"(request {request_id})" in log and "Traceback" in log
    logged = [event for event in fault_api.events("request") if event["request_id"] == request_id]
    assert logged and logged[0]["status"] == 500 and logged[0]["route"] == "/api/anomaly/datasets"


def test_database_stopped_mid_analysis_the_session_is_retried_not_stuck(
    fault_api: ApiServer, fault_database: RestartableDatabase
) -> None:
    account = register(fault_api)
    with fault_api.client() as client:
        dataset_id = upload_ok(client, account, "outage.csv", csv_bytes(make_normal_transactions(3000, seed=62)))
        assert client.post(f"/api/anomaly/datasets/{dataset_id}/analyze", headers=account.headers).status_code == 202
        wait_for_status(client, account, dataset_id, until=("analyzing",))
    fault_database.kill()
    try:
        with fault_api.client() as client:
            alive = client.get("/health")
            during = client.get(f"/api/anomaly/datasets/{dataset_id}/status", headers=account.headers)
        # The database stays down until the analysis has finished training and failed to store its results.
        deadline = time.monotonic() + 90
        while not _outcomes(fault_api, dataset_id) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        fault_database.start()
    with fault_api.client() as client:
        final = wait_for_status(client, account, dataset_id, timeout=60)
        anomalies = client.get(
            f"/api/anomaly/datasets/{dataset_id}/anomalies", params={"limit": 1000}, headers=account.headers
        )
    assert alive.status_code == 200
    assert during.status_code == 503, during.text
    assert "database is unreachable" in during.json()["detail"] and during.headers["retry-after"]
    assert final["status"] == "analyzed", final
    assert final["attempts"] >= 2, "the attempt cut off by the outage should have been retried"
    assert anomalies.json()["total"] == final["anomaly_count"] == len(anomalies.json()["items"])
    assert _outcomes(fault_api, dataset_id) == ["retried", "analyzed"]


def test_database_stopped_mid_training_the_training_is_retried_and_no_half_version_shows(
    fault_api: ApiServer, fault_database: RestartableDatabase
) -> None:
    account = register(fault_api)
    with fault_api.client() as client:
        dataset_id = upload_ok(client, account, "patients.csv", csv_bytes(patient_records(5000, seed=65)))
        training_id = train(client, account, dataset_id, "outage", epochs=12, seed=1).json()["training_id"]
        wait_for_training(client, account, training_id, until=("running",))
    fault_database.kill()
    try:
        deadline = time.monotonic() + 120
        while "retried" not in _training_outcomes(fault_api, training_id) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        fault_database.start()
    with fault_api.client() as client:
        ended = wait_for_training(client, account, training_id)
        detail = client.get("/api/anomaly/models/outage", headers=account.headers).json()
    assert _training_outcomes(fault_api, training_id)[0] == "retried"
    assert ended["status"] == "trained" and ended["attempts"] >= 2, ended
    assert [version["version"] for version in detail["versions"]] == [ended["result"]["version"]]
    with fault_database.client() as mongo:
        files = mongo["faults"]["models.files"].count_documents({"metadata.training_id": training_id})
    assert files == 3, "the interrupted attempt left files behind, or the version lacks one"


def _training_outcomes(server: ApiServer, training_id: str) -> list[str]:
    return [event["outcome"] for event in server.events("training") if event["training_id"] == training_id]


def _outcomes(server: ApiServer, dataset_id: str) -> list[str]:
    return [event["outcome"] for event in server.events("analysis") if event["dataset_id"] == dataset_id]


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the server's children through /proc")
def test_server_and_database_killed_mid_analysis_lose_nothing(
    server_logs: Path, empty_model_path: Path, tmp_path: Path
) -> None:
    """SIGKILL to the launcher, its embedded database and everything else it started, while an analysis runs
    and right after an upload was answered 201; started again, the analysis is taken up and completes
    within a minute, and the upload is there, whole."""
    env = {
        "MONGODB_URL": "",  # the launcher starts the embedded database, as `make run` does
        "DATA_DIR": str(tmp_path / "data"),
        "JWT_SECRET": JWT_SECRET,
        "ENVIRONMENT": "production",
        "AUTOENCODER_MODEL_PATH": str(empty_model_path),
        "AUTOENCODER_FALLBACK_TRAIN": "true",
        "AUTOENCODER_FALLBACK_EPOCHS": "12",
        "ANALYSIS_LEASE_SECONDS": LEASE_SECONDS,
        "ANALYSIS_POLL_SECONDS": "0.5",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    server = ApiServer("killed-api", env, server_logs).start().wait_until_up()
    analysed = make_normal_transactions(3000, seed=63)
    late = csv_bytes(make_normal_transactions(400, seed=64))
    account = register(server)
    with server.client() as client:
        dataset_id = upload_ok(client, account, "analysed.csv", csv_bytes(analysed))
        assert client.post(f"/api/anomaly/datasets/{dataset_id}/analyze", headers=account.headers).status_code == 202
        wait_for_status(client, account, dataset_id, until=("analyzing",))
        late_answer = upload(client, account, "late.csv", late)
    assert late_answer.status_code == 201
    assert server.process is not None
    victims = descendants(server.process.pid)
    assert victims, "the launcher started no database"
    for pid in [*victims, server.process.pid]:
        os.kill(pid, signal.SIGKILL)
    server.stop()

    restarted = time.monotonic()
    server.start().wait_until_up()
    try:
        with server.client() as client:
            final = wait_for_status(client, account, dataset_id, timeout=60)
            taken_up_in = time.monotonic() - restarted
            results = client.get(f"/api/anomaly/datasets/{dataset_id}/results", headers=account.headers)
            late_now = client.get(f"/api/anomaly/datasets/{late_answer.json()['id']}", headers=account.headers)
            late_analysis = client.post(
                f"/api/anomaly/datasets/{late_answer.json()['id']}/analyze", headers=account.headers
            )
            late_final = wait_for_status(client, account, late_answer.json()["id"], timeout=60)
    finally:
        server.stop()
    assert final["status"] == "analyzed", final
    assert final["attempts"] == 2
    assert taken_up_in < 60
    table = pd.read_csv(io.BytesIO(results.content))
    assert len(table) == len(analysed) and table["id"].tolist() == analysed["id"].tolist()
    assert int(table["is_anomaly"].sum()) == final["anomaly_count"]
    assert late_now.status_code == 200 and late_now.json()["sha256"] == late_answer.json()["sha256"]
    assert late_analysis.status_code == 202 and late_final["status"] == "analyzed"
    assert late_final["row_count"] == 400
