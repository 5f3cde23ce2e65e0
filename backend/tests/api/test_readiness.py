"""/ready with its database gone: 503 saying what to check, with no host, port or error text (those go to the
log), and ready again once the database is back."""

from __future__ import annotations

from pathlib import Path

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
            ready = client.get("/ready")
            database.kill()
            gone = client.get("/ready")
            database.start()
            back = client.get("/ready")
    finally:
        server.stop()
        database.stop()
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "detail": "", "checks": {"database": "ok", "model": "ok"}}
    assert gone.status_code == 503
    body = gone.json()
    assert body["status"] == "not ready"
    assert body["checks"] == {"database": "unreachable", "model": "ok"}
    assert "MONGODB_URL" in body["detail"]
    assert str(database.port) not in gone.text and "127.0.0.1" not in gone.text
    assert "Timeout" not in gone.text and "Error" not in gone.text
    assert str(model_dir) not in gone.text
    assert f"127.0.0.1:{database.port}" in server.log_text()  # the details went to the log
    assert back.status_code == 200
