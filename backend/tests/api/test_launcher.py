"""The launcher (``python -m app.serve``, what ``make run`` runs): the embedded database and the JWT secret."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.api.support import BACKEND_DIR, ApiServer, register


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
