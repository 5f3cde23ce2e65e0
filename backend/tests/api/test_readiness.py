"""/ready with its database gone: 503 saying what to check, with no host, port or error text (those go to the
log), and ready again once the database is back."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.api.conftest import ServerFactory
from tests.api.support import JWT_SECRET, ApiServer
from tests.api.test_faults import RestartableDatabase


def test_ready_without_its_database_names_no_host_and_recovers(
    tmp_path: Path, server_logs: Path, model_dir: Path
) -> None:
    database = RestartableDatabase(tmp_path).start()
    server = ApiServer(
        "ready-api",
        {
            "MONGODB_URL": database.url,
            "JWT_SECRET": JWT_SECRET,
            "ENVIRONMENT": "production",
            "DATA_DIR": str(tmp_path / "data"),
            "AUTOENCODER_MODEL_PATH": str(model_dir),
            "DATABASE_TIMEOUT_SECONDS": "1",
            "TF_CPP_MIN_LOG_LEVEL": "3",
        },
        server_logs,
    ).start()
    try:
        server.wait_until_up()
        with server.client() as client:
            ready = _ready_with_a_worker(client)
            database.kill()
            gone = client.get("/ready")
            database.start()
            back = client.get("/ready")
    finally:
        server.stop()
        database.stop()
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "detail": "",
        "checks": {"database": "ok", "model": "ok", "workers": "ok"},
    }
    assert gone.status_code == 503
    body = gone.json()
    assert body["status"] == "not ready"
    assert body["checks"] == {"database": "unreachable", "model": "ok", "workers": "unknown"}
    assert "MONGODB_URL" in body["detail"]
    assert str(database.port) not in gone.text and "127.0.0.1" not in gone.text
    assert "Timeout" not in gone.text and "Error" not in gone.text
    assert str(model_dir) not in gone.text
    assert f"127.0.0.1:{database.port}" in server.log_text()  # the details went to the log
    assert back.status_code == 200


def _ready_with_a_worker(client: httpx.Client) -> httpx.Response:
    """/ready once the launcher's job worker has said it is alive (a second or two after the API answers)."""
    deadline = time.monotonic() + 60
    while (answer := client.get("/ready")).json()["checks"]["workers"] != "ok":
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.2)
    return answer


def test_ready_reports_when_no_worker_runs_the_queue(
    server_factory: ServerFactory, server_env: dict[str, str], model_dir: Path
) -> None:
    env = {**server_env, "MONGODB_DB": "no_workers", "AUTOENCODER_MODEL_PATH": str(model_dir), "JOB_WORKERS": "0"}
    server = server_factory("no-workers-api", env).wait_until_up()
    with server.client() as client:
        answer = client.get("/ready")
    assert answer.status_code == 200
    assert answer.json()["checks"] == {"database": "ok", "model": "ok", "workers": "none"}
    assert "python -m app.worker" in answer.json()["detail"]
