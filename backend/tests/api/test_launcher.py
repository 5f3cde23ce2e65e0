"""The launcher (``python -m app.serve``, what ``make run`` runs): the embedded database and the JWT secret."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from app.utils.sample_data import make_normal_transactions
from tests.api.conftest import ServerFactory
from tests.api.support import BACKEND_DIR, ApiServer, csv_bytes, register, upload_ok


def _processes_using(path: Path) -> list[int]:
    """Ids of the processes whose command line names ``path``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command_line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(path) in command_line:
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="inspects processes through /proc")
def test_local_launch_starts_the_embedded_database_and_keeps_data_and_secret(
    tmp_path: Path, server_logs: Path, empty_model_path: Path
) -> None:
    data_dir = tmp_path / "data"
    env = {
        "MONGODB_URL": "",  # unset: the launcher starts the embedded database
        "JWT_SECRET": "",  # unset: generated for local use
        "ENVIRONMENT": "local",
        "DATA_DIR": str(data_dir),
        "AUTOENCODER_MODEL_PATH": str(empty_model_path),
    }
    server = ApiServer("local-launch", env, server_logs).start().wait_until_up()
    try:
        with server.client() as client:
            ready = client.get("/ready").json()
        account = register(server)
        assert ready["checks"]["database"] == "ok"
        secret_file = data_dir / "jwt_secret"
        assert secret_file.stat().st_mode & 0o777 == 0o600
        secret = secret_file.read_text()
        assert _processes_using(data_dir / "db"), "no embedded database process"
    finally:
        server.stop(signal.SIGTERM)
    assert not _processes_using(data_dir / "db"), "the embedded database outlived the launcher"

    server.start().wait_until_up()
    try:
        with server.client() as client:
            me = client.get("/api/auth/me", headers=account.headers)
    finally:
        server.stop(signal.SIGINT)
    assert me.status_code == 200, "the user or the secret did not survive the restart"
    assert me.json()["username"] == account.username
    assert secret_file.read_text() == secret


@pytest.mark.parametrize(
    ("jwt_secret", "message"),
    [("", "JWT_SECRET is not set"), ("changethis", "JWT_SECRET looks like a placeholder")],
)
def test_production_launch_refuses_a_missing_or_placeholder_secret(
    tmp_path: Path, jwt_secret: str, message: str
) -> None:
    env = {**os.environ, "ENVIRONMENT": "production", "JWT_SECRET": jwt_secret, "DATA_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "app.serve", "--port", "1"],
        cwd=BACKEND_DIR, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "db").exists(), "the database was started before the configuration was checked"


def test_an_api_process_without_jobs_never_loads_tensorflow(
    server_factory: ServerFactory, server_env: dict[str, str], model_dir: Path
) -> None:
    """API processes check columns from the models' metadata and queue the work: only job workers score."""
    env = {**server_env, "MONGODB_DB": "api_only", "AUTOENCODER_MODEL_PATH": str(model_dir), "JOB_WORKERS": "0"}
    server = server_factory("api-only", env).wait_until_up()
    account = register(server)
    with server.client() as client:
        models = client.get("/api/anomaly/models", headers=account.headers).json()
        dataset_id = upload_ok(client, account, "test.csv", csv_bytes(make_normal_transactions(200, seed=1)))
        analyze = client.post(f"/api/anomaly/datasets/{dataset_id}/analyze", headers=account.headers)
        mismatch_id = upload_ok(client, account, "other.csv", b"a,b\n1,2\n3,4\n")
        mismatch = client.post(f"/api/anomaly/datasets/{mismatch_id}/analyze", headers=account.headers)
    assert server.process is not None
    maps = Path(f"/proc/{server.process.pid}/maps").read_text()
    assert models[0]["name"] == "AutoEncoder" and models[0]["features"]
    assert analyze.status_code == 202 and analyze.json()["status"] == "queued"
    assert mismatch.status_code == 422 and "Dataset columns don't match model" in mismatch.json()["detail"]
    assert "tensorflow" not in maps, "the API process loaded TensorFlow"
    assert server.worker_pids() == []
