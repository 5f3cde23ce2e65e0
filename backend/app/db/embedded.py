"""The embedded default database: a SecantusDB server run as a child process when ``MONGODB_URL`` is unset.

Started once per deployment by the launcher (``python -m app.serve``), never per uvicorn worker: the workers
receive its URL in ``MONGODB_URL``. It listens on a free loopback port, keeps its files under ``DATA_DIR``
(so data survives restarts) and fsyncs every commit, without which acknowledged writes are lost on a kill.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from app.core.child_processes import ends_with_parent

logger = logging.getLogger(__name__)

_START_ATTEMPTS = 3
_LOG_TAIL_LINES = 15


class EmbeddedDatabaseError(RuntimeError):
    """The embedded server did not start; the message carries the end of its log."""


class EmbeddedDatabase:
    """A SecantusDB server process on ``127.0.0.1``; use as a context manager or call ``start``/``stop``."""

    def __init__(self, storage_path: Path, log_path: Path, startup_timeout: float = 60.0) -> None:
        self.storage_path = storage_path
        self.log_path = log_path
        self.startup_timeout = startup_timeout
        self.host = "127.0.0.1"
        self.port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The connection string of the running server."""
        if self.port is None:
            raise RuntimeError("The embedded database is not running.")
        return f"mongodb://{self.host}:{self.port}/?directConnection=true"

    def start(self) -> str:
        """Start the server, wait until it answers ``ping`` and return its URL."""
        self.storage_path.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, _START_ATTEMPTS + 1):
            self.port = _free_port(self.host)
            self._process = self._spawn()
            if self._wait_until_ready():
                logger.info("Embedded database (SecantusDB) on %s, data in %s", self.url, self.storage_path)
                return self.url
            # Another process may have taken the free port between our probe and the server's bind: retry.
            logger.warning("Embedded database did not start (attempt %d of %d)", attempt, _START_ATTEMPTS)
        self.port = None
        raise EmbeddedDatabaseError(
            f"The embedded database (SecantusDB) did not start with its data in {self.storage_path}. "
            f"Is another instance using this DATA_DIR? Stop it, or set DATA_DIR or MONGODB_URL. "
            f"End of {self.log_path}:\n{self._log_tail()}"
        )

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server gracefully (it checkpoints on SIGTERM), killing it if it does not exit in time."""
        process, self._process, self.port = self._process, None, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning("Embedded database did not stop within %.0f s: killing it", timeout)
            process.kill()
            process.wait()

    def __enter__(self) -> EmbeddedDatabase:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def _spawn(self) -> subprocess.Popen[bytes]:
        command = [
            sys.executable, "-m", "secantus",
            "--host", self.host,
            "--port", str(self.port),
            "--storage-path", str(self.storage_path),
            "--sync-on-commit",
            "--log-level", "WARNING",
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            # A session of its own keeps a terminal's Ctrl-C away from the database, so the launcher can stop
            # it after the API has drained; the death signal stops it if the launcher itself is killed.
            return subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=ends_with_parent(),
            )

    def _wait_until_ready(self) -> bool:
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout
        client: MongoClient[dict[str, object]] = MongoClient(self.url, serverSelectionTimeoutMS=250)
        try:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    return False
                try:
                    client.admin.command("ping")
                    return True
                except PyMongoError:
                    time.sleep(0.05)
        finally:
            client.close()
        self.stop()
        return False

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-_LOG_TAIL_LINES:])


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port
