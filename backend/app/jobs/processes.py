"""The job workers the launcher runs beside the API (``JOB_WORKERS``, ``--job-workers``), restarted if they die.

Each is a ``python -m app.worker`` process in a session of its own (a terminal's Ctrl-C reaches the launcher,
which stops the API first, then the workers, then the database), ending with the launcher however it ends.
A worker that dies (killed for memory, say) is started again; its job is taken up once its lease runs out.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from types import TracebackType

from app.core.child_processes import ends_with_parent

logger = logging.getLogger(__name__)

STOP_SECONDS = 30.0
SUPERVISE_SECONDS = 1.0
# More restarts than this within a minute means a worker cannot start: stop trying and say so.
MAX_RESTARTS_PER_MINUTE = 5


class WorkerProcesses:
    """``count`` job workers, kept running until ``stop``; use as a context manager."""

    def __init__(self, count: int, backend_dir: Path) -> None:
        self.count = count
        self.backend_dir = backend_dir
        self._processes: list[subprocess.Popen[bytes]] = []
        self._restarts: deque[float] = deque()
        self._gave_up = False
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

    def start(self) -> WorkerProcesses:
        """Start the workers and the thread that restarts them."""
        self._processes = [self._spawn() for _ in range(self.count)]
        if self.count:
            logger.info("Started %d job worker(s)", self.count)
            self._supervisor = threading.Thread(target=self._supervise, name="job-workers", daemon=True)
            self._supervisor.start()
        return self

    def stop(self) -> None:
        """Ask every worker to stop (its job goes back to the queue) and wait; kill those that do not stop."""
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join()
        for process in self._processes:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + STOP_SECONDS
        for process in self._processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("Job worker %d did not stop within %.0f s: killing it", process.pid, STOP_SECONDS)
                process.kill()
                process.wait()

    def __enter__(self) -> WorkerProcesses:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "app.worker"],
            cwd=self.backend_dir,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=ends_with_parent(),
        )

    def _supervise(self) -> None:
        while not self._stopping.wait(SUPERVISE_SECONDS):
            for index, process in enumerate(self._processes):
                if process.poll() is None or self._stopping.is_set() or self._gave_up:
                    continue
                now = time.monotonic()
                while self._restarts and now - self._restarts[0] > 60:
                    self._restarts.popleft()
                if len(self._restarts) >= MAX_RESTARTS_PER_MINUTE:
                    self._gave_up = True
                    logger.error(
                        "Job workers keep dying (%d restarts in a minute): not restarting them; see their log above",
                        len(self._restarts),
                    )
                    continue
                logger.warning("Job worker %d exited with %s: starting another", process.pid, process.returncode)
                self._restarts.append(now)
                self._processes[index] = self._spawn()
