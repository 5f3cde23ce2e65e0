"""Helpers for the end-to-end tests: a real server process, accounts, uploads and status polling."""

from __future__ import annotations

import io
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.api.process_tree import command_line, descendants

BACKEND_DIR = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 120
# Shared by every test server: tests sign their own (expired, forged) tokens with it.
JWT_SECRET = secrets.token_urlsafe(32)
MAX_UPLOAD_MB = 2
# The export server's upload limit: a 100,000-row table, whose workbook takes seconds to write.
EXPORT_MAX_UPLOAD_MB = 40
MAX_LOGIN_FAILURES_PER_USERNAME = 5
MAX_LOGIN_FAILURES_PER_ADDRESS = 12


class ApiServer:
    """A real ``python -m app.serve`` process on a free port, with its log in a file."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._stopping = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ApiServer:
        """Start the process (without waiting for it to answer)."""
        self.port = free_port()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app.serve", "--port", str(self.port)],
                cwd=BACKEND_DIR,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def wait_until_up(self) -> ApiServer:
        """Wait until ``/health`` answers; fail with the log if the process exits or takes too long."""
        assert self.process is not None
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"{self.name} exited with {self.process.returncode}:\n{self.log_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        pytest.fail(f"{self.name} did not start within {STARTUP_SECONDS} s:\n{self.log_text()[-3000:]}")

    def begin_stop(self, sig: int = signal.SIGTERM) -> None:
        """Send ``sig`` once, without waiting: several servers can then drain at the same time."""
        if self.process is not None and self.process.poll() is None and not self._stopping:
            self.process.send_signal(sig)
            self._stopping = True

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Stop the process with ``sig`` (unless already asked to) and return its exit status."""
        if self.process is None:
            return None
        self.begin_stop(sig)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        status, self.process, self._stopping = self.process.returncode, None, False
        return status

    def worker_pids(self) -> list[int]:
        """The job workers this launcher started (``python -m app.worker`` processes)."""
        assert self.process is not None
        return [pid for pid in descendants(self.process.pid) if "-m app.worker" in command_line(pid)]

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def events(self, kind: str) -> list[dict[str, Any]]:
        """The structured log lines (one JSON object a line) of this kind: ``request``, ``analysis``, ``training``."""
        return [event for event in _events(self.log_text()) if event.get("event") == kind]


FINAL_OUTCOMES = ("analyzed", "failed", "discarded")


class WorkerProcess:
    """A standalone ``python -m app.worker`` (as on a worker-only host), its output in a log file."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app.worker"],
                cwd=BACKEND_DIR,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [event for event in _events(self.log_text()) if event.get("event") == kind]


def _events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def analysis_events(
    servers: list[ApiServer] | list[WorkerProcess], session_ids: set[str], timeout: float = 15
) -> list[dict[str, Any]]:
    """The analysis log lines naming ``session_ids`` in the logs of ``servers`` (whose job workers log there),
    waiting until every session has a final line (a worker writes it just after the status changes)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [
            event for server in servers for event in server.events("analysis") if event["session_id"] in session_ids
        ]
        if {event["session_id"] for event in found if event["outcome"] in FINAL_OUTCOMES} >= session_ids:
            return found
        assert time.monotonic() < deadline, f"no final log line after {timeout} s for some of {session_ids}"
        time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class Account:
    """A registered user and the headers that authenticate as them."""

    username: str
    headers: dict[str, str]


def register(server: ApiServer, prefix: str = "user") -> Account:
    """Register a fresh user on ``server`` and log in."""
    username = f"{prefix}-{uuid.uuid4().hex[:10]}"
    password = "a-long-password"
    with server.client() as client:
        assert client.post("/api/auth/register", json={"username": username, "password": password}).status_code == 201
        answer = client.post("/api/auth/token", data={"username": username, "password": password})
    assert answer.status_code == 200, answer.text
    return Account(username, {"Authorization": f"Bearer {answer.json()['access_token']}"})


def csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode("utf-8")


def xlsx_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_excel(buffer, index=False, engine="openpyxl")
    return buffer.getvalue()


def upload(client: httpx.Client, account: Account, filename: str, content: bytes) -> httpx.Response:
    return client.post("/api/anomaly/datasets/upload", headers=account.headers, files={"file": (filename, content)})


def upload_ok(client: httpx.Client, account: Account, filename: str, content: bytes) -> str:
    answer = upload(client, account, filename, content)
    assert answer.status_code == 201, answer.text
    dataset_id: str = answer.json()["id"]
    return dataset_id


def wait_for_status(
    client: httpx.Client,
    account: Account,
    dataset_id: str,
    until: tuple[str, ...] = ("analyzed", "failed"),
    timeout: float = 90,
    at_least: int | None = None,
) -> dict[str, Any]:
    """Poll the status until it is one of ``until`` (or, with ``at_least``, until an analysis running has come
    that far); return the last answer."""
    deadline = time.monotonic() + timeout
    while True:
        answer = client.get(f"/api/anomaly/datasets/{dataset_id}/status", headers=account.headers)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        if body["status"] in until:
            return body
        if at_least is not None and body["status"] == "analyzing" and body["progress"] >= at_least:
            return body
        assert time.monotonic() < deadline, f"still {body['status']} after {timeout} s: {body}"
        time.sleep(0.05)


TRAINING_SECONDS = 180


def patient_records(n_rows: int, seed: int) -> pd.DataFrame:
    """A schema no deployment model knows (like a clinic's export): the kind of table a new user brings."""
    rng = np.random.default_rng(seed)
    age = rng.integers(21, 80, n_rows)
    glucose = rng.normal(110, 25, n_rows) + 0.3 * (age - 50)
    return pd.DataFrame(
        {
            "pregnancies": rng.poisson(3, n_rows),
            "glucose": glucose.round(1),
            "blood_pressure": rng.normal(72, 10, n_rows).round(1),
            "skin_thickness": rng.normal(25, 7, n_rows).round(1),
            "insulin": (glucose * 0.9 + rng.normal(0, 15, n_rows)).round(1),
            "bmi": rng.normal(31, 6, n_rows).round(1),
            "age": age,
            "clinic": rng.choice(["north", "south", "east"], n_rows),
        }
    )


def train(client: httpx.Client, account: Account, dataset_id: str, name: str, **options: Any) -> httpx.Response:
    """Ask for a training of ``name`` from a dataset."""
    return client.post(
        "/api/anomaly/models", headers=account.headers, json={"dataset_id": dataset_id, "name": name, **options}
    )


def wait_for_training(
    client: httpx.Client,
    account: Account,
    training_id: str,
    until: tuple[str, ...] = ("trained", "failed", "cancelled"),
    seen: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Poll a training until its status is one of ``until`` (every answer is added to ``seen``); the last answer."""
    deadline = time.monotonic() + TRAINING_SECONDS
    while True:
        answer = client.get(f"/api/anomaly/trainings/{training_id}", headers=account.headers)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        if seen is not None:
            seen.append(body)
        if body["status"] in until:
            return body
        assert time.monotonic() < deadline, f"training still {body['status']} after {TRAINING_SECONDS} s: {body}"
        time.sleep(0.1)
